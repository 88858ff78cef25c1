"""Views over several chosen result sets; each page calls one of these, which draws nothing for one set.

Sets are shown in the order the comparison reads (resultsets.ordered): the study's split, the clean split,
other recipes. Wherever a set's test figures appear, what its test split covers is said with them: the
study's own split tests only some of its classes.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import formatting, resultsets
from core.specs import MODEL_IDS, MODEL_SPECS
from views import common

DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def _sets() -> dict:
    return resultsets.ordered(common.catalogue().sets)


def _diff_text(row) -> str:
    return f"{formatting.signed_points(row.difference)} [{100 * row.low:+.1f} to {100 * row.high:+.1f}]".replace(
        "-", "−"
    )


def _covers(name: str, rs) -> str:
    return f"**{name}**: {resultsets.coverage(rs)}" + ("" if rs.models else " (no model has finished yet)")


def _unfinished(sets: dict) -> str:
    waiting = [name for name, rs in sets.items() if not rs.models]
    return f" Not compared yet, no model has finished: {', '.join(waiting)}." if waiting else ""


def _span(values) -> str:
    low, high = min(values), max(values)
    return formatting.percent(low) if low == high else f"{100 * low:.1f}–{formatting.percent(high)}"


def _leak(sets: dict, table: pd.DataFrame) -> pd.DataFrame | None:
    """The headline: how much the study's split flatters each model; returns its rows (None: not shown)."""
    leak = resultsets.leak_headline(sets)
    if leak is None or leak.empty:
        return None
    study, clean = leak.a.iloc[0], leak.b.iloc[0]
    accuracy = table.set_index(["result_set", "model"])
    models = list(leak.model)
    published = [MODEL_SPECS[m].reference_accuracy for m in models]
    st.header("How much the study's split flatters each model")
    which = "the six models" if len(models) == len(MODEL_IDS) else (
        f"{', '.join(map(common.title, models))}, the only model{'s' * (len(models) > 1)} on both so far")
    st.markdown(
        f"On the study's own split — **{study}**, {resultsets.coverage(sets[study])} — this project scores "
        f"{_span([accuracy.loc[(study, m), 'accuracy'] for m in models])} with {which}; the study reported "
        f"{_span(published)}. On the clean split — **{clean}**, {resultsets.coverage(sets[clean])} — "
        + ("the same models score " if len(models) > 1 else "the same model scores ")
        + f"{_span([accuracy.loc[(clean, m), 'accuracy'] for m in models])}. Study's split minus clean split: "
        + (f"**{formatting.signed_points(leak.difference.min())} to "
           f"{formatting.signed_points(leak.difference.max())}**, depending on the model." if len(models) > 1
           else f"**{formatting.signed_points(leak.difference.iloc[0])}**.")
    )

    def cell(name, model_id):
        row = accuracy.loc[(name, model_id)]
        return formatting.percent_interval(row.accuracy, row.low, row.high)

    st.dataframe(
        pd.DataFrame({
            "Model": [common.title(m) for m in models],
            "Study (published)": [formatting.percent(p) for p in published],
            "This project, study's split": [cell(study, m) for m in models],
            "This project, clean split": [cell(clean, m) for m in models],
            "Study's split minus clean split": [_diff_text(r) for r in leak.itertuples()],
        }),
        hide_index=True,
        width="stretch",
    )
    tested = resultsets.coverage(sets[study])
    st.caption(
        f"95 % intervals: Wilson for each accuracy; for the difference, {leak.method.iloc[0]}. "
        + (f"The study's split tests only {tested.classes_tested} of its {tested.classes} classes, so its "
           "figures and this difference speak for those classes. " if tested.classes_tested < tested.classes
           else "")
        + "The study's published figures were measured on its own split."
    )
    return leak


def overview() -> None:
    """The leak headline on top, then models x result sets with the study's figures, then differences."""
    sets = _sets()
    if len(sets) < 2:
        return
    table = resultsets.accuracy_table(sets)
    leak = _leak(sets, table)
    shown_in_leak = [] if leak is None else [leak.a.iloc[0], leak.b.iloc[0]]
    if set(sets) != set(shown_in_leak) or set(table.model) != set(leak.model):
        _side_by_side(sets, table, shown_in_leak)  # unless the leak's table already holds every figure
    first = next((name for name, rs in common.catalogue().sets.items() if rs.models), None)
    if first:
        st.divider()
        st.header(f"{first} in detail")


def _side_by_side(sets: dict, table: pd.DataFrame, shown_in_leak: list[str]) -> None:
    """Models x result sets with the study's figures, then each set's difference from the reference."""
    st.header(f"{len(sets)} result sets side by side")
    cells = table.set_index(["model", "result_set"])
    wide = resultsets.pivot(table, order=sets)
    shown = pd.DataFrame(index=[common.title(m) for m in wide.index])
    shown[resultsets.STUDY_COLUMN] = [formatting.percent(v) for v in wide[resultsets.STUDY_COLUMN]]
    for name in sets:
        shown[name] = [
            formatting.percent_interval(*cells.loc[(m, name), ["accuracy", "low", "high"]])
            if (m, name) in cells.index else formatting.MISSING
            for m in wide.index
        ]
    st.table(shown)
    st.caption(
        "Accuracy on each set's own test photos, with its 95 % Wilson interval, of each model's stored run (its "
        "first seed; a set's mean over seeds is in its own table below); – : the model is not in that set (yet). "
        "The study's figures were measured on its own split."
    )
    st.markdown("\n".join(f"- {_covers(name, rs)}" for name, rs in sets.items()))
    diffs = resultsets.differences(sets)
    diffs = diffs[~diffs.a.isin(shown_in_leak)]
    if not diffs.empty:
        st.markdown(f"**Differences from {diffs.b.iloc[0]}** (percentage points, 95 % interval)")
        st.dataframe(
            pd.DataFrame({
                "Model": [common.title(m) for m in diffs.model],
                "Set": diffs.a,
                "Difference": [_diff_text(r) for r in diffs.itertuples()],
                "Comparison": ["paired (same test photos)" if p else "unpaired (different test photos)"
                               for p in diffs.paired],
            }),
            hide_index=True,
            width="stretch",
        )


def curves(metric: str) -> None:
    """One model from several sets: the colour stays the model's, the dash tells the set."""
    sets = _sets()
    if len(sets) < 2:
        return
    st.header("One model across result sets")
    models = [m for m in MODEL_IDS if any(m in rs.models for rs in sets.values())]
    if not models:
        st.info("No chosen result set holds a finished model yet.")
        return
    model_id = st.selectbox("Model to overlay", models, format_func=common.title, key="multiset_curve_model")
    figure = go.Figure()
    for (name, rs), dash in zip(sets.items(), DASHES):
        if model_id not in rs.models:
            continue
        history = rs.history(model_id)
        for column, label, width in ((f"val_{metric}", "validation", 2.5), (metric, "training", 1)):
            if column in history:
                figure.add_scatter(
                    x=history["epoch"], y=history[column], mode="lines", name=f"{name} · {label}",
                    line=dict(color=common.MODEL_COLOURS[model_id], dash=dash, width=width),
                )
    figure.update_layout(xaxis_title="epoch", yaxis_title=metric, legend=dict(orientation="h", y=-0.2), height=460,
                         margin=dict(t=30))
    st.plotly_chart(figure, width="stretch")
    missing = [name for name, rs in sets.items() if model_id not in rs.models]
    st.caption(
        "Line style: the result set. Thick: validation, thin: training; each set on its own photos."
        + (f" Not in {', '.join(missing)}." if missing else "")
    )


def confusion() -> None:
    """Difference of one model's row-normalised confusion matrices across two sets."""
    sets = _sets()
    if len(sets) < 2:
        return
    st.header("Confusion difference between two result sets")
    names = [name for name, rs in sets.items() if rs.models]
    if len(names) < 2:
        st.info("Needs two chosen sets with a finished model." + _unfinished(sets))
        return
    left, middle, right = st.columns(3)
    a = left.selectbox("Set A", names, index=0, key="multiset_conf_a")
    b = middle.selectbox("Set B", names, index=1, key="multiset_conf_b")
    models = [m for m in MODEL_IDS if m in sets[a].models and m in sets[b].models]
    if a == b or not models:
        st.info("Choose two different sets that share a finished model.")
        return
    model_id = right.selectbox("Model", models, format_func=common.title, key="multiset_conf_model")
    rows, columns, diff = resultsets.confusion_difference(sets[a], sets[b], model_id)
    figure = go.Figure(
        go.Heatmap(z=100 * diff, x=columns, y=rows, colorscale="RdBu_r", zmid=0, colorbar=dict(title="pp"),
                   hovertemplate="true %{y}, predicted %{x}: %{z:+.1f} pp<extra></extra>")
    )
    figure.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                         height=max(360, 22 * len(rows) + 160), margin=dict(t=30))
    st.plotly_chart(figure, width="stretch")
    st.caption(
        "Share of each true class predicted as each class, A minus B, in percentage points. Red: more often "
        f"in A; blue: more often in B. Rows: the {len(rows)} classes both sets test; columns: the "
        f"{len(columns)} classes both hold. {_covers(a, sets[a])}; {_covers(b, sets[b])}."
    )


def statistics() -> None:
    """Per model, each set against the reference: paired where the test photos match, unpaired otherwise."""
    sets = _sets()
    if len(sets) < 2:
        return
    st.header("Result sets compared")
    diffs = resultsets.differences(sets)
    if diffs.empty:
        st.info("The chosen sets share no finished model." + _unfinished(sets))
        return
    against = diffs.b.iloc[0]
    for name, part in diffs.groupby("a", sort=False):
        paired = bool(part.paired.iloc[0])
        st.markdown(
            f"**{name}** minus **{against}**: "
            + ("**paired** — both were tested on the same photos, so an exact McNemar test applies."
               if paired else "**unpaired** — the test photos differ, so only intervals for independent "
               "samples apply.")
            + f" {_covers(name, sets[name])}; {_covers(against, sets[against])}."
        )
        frame = pd.DataFrame({
            "Model": [common.title(m) for m in part.model],
            "Difference (pp, 95 % interval)": [_diff_text(r) for r in part.itertuples()],
        })
        if paired:
            frame["Exact McNemar"] = [formatting.p_value(p) for p in part.p_value]
        st.dataframe(frame, hide_index=True, width="stretch")
    methods = "; ".join(sorted(set(diffs.method)))
    # str.capitalize would lower-case the rest, names included ("mcnemar").
    st.caption(methods[:1].upper() + methods[1:] + "." + _unfinished(sets))
