"""Views over several chosen result sets; each page calls one of these, which draws nothing for one set."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import formatting, resultsets
from core.specs import MODEL_IDS
from pages import common

DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def _sets() -> dict:
    return common.chosen_sets().sets


def _diff_text(row) -> str:
    return f"{formatting.signed_points(row.difference)} [{100 * row.low:+.1f} to {100 * row.high:+.1f}]".replace(
        "-", "−"
    )


def overview() -> None:
    """Pivot models x result sets, the study's figures as a column, differences, the leak headline on top."""
    sets = _sets()
    if len(sets) < 2:
        return
    st.header(f"{len(sets)} result sets side by side")
    leak = resultsets.leak_headline(sets)
    if leak is not None and not leak.empty:
        st.subheader("How much the study's split flatters each model")
        st.markdown(
            f"Accuracy on the study's split (**{leak.a.iloc[0]}**) minus accuracy on the clean split "
            f"(**{leak.b.iloc[0]}**), per model: "
            + "; ".join(f"**{common.title(r.model)}** {_diff_text(r)}" for r in leak.itertuples())
            + f". {'Paired' if leak.paired.all() else 'Unpaired'} comparison: {leak.method.iloc[0]}."
        )
    table = resultsets.accuracy_table(sets)
    wide = resultsets.pivot(table)
    cells = table.set_index(["model", "result_set"])
    shown = wide.copy().astype(object)
    for model_id in wide.index:
        shown.loc[model_id, "study (published)"] = formatting.percent(wide.loc[model_id, "study (published)"])
        for name in sets:
            row = cells.loc[(model_id, name)] if (model_id, name) in cells.index else None
            shown.loc[model_id, name] = (
                formatting.MISSING if row is None else formatting.percent_interval(row.accuracy, row.low, row.high)
            )
    shown.index = [common.title(m) for m in shown.index]
    st.dataframe(shown, width="stretch")
    classes = {name: sorted(set(table[table.result_set == name].test_classes)) for name in sets}
    st.caption(
        "Accuracy on each set's own test photos, with its 95 % Wilson interval. Test classes: "
        + "; ".join(f"{name}: {'/'.join(map(str, c))}" for name, c in classes.items())
        + ". The study's figures were measured on its own split."
    )
    diffs = resultsets.differences(sets)
    if not diffs.empty:
        st.markdown(f"**Differences against {next(iter(sets))}** (percentage points, 95 % interval)")
        frame = diffs.assign(
            Model=[common.title(m) for m in diffs.model],
            Set=diffs.a,
            Difference=[_diff_text(r) for r in diffs.itertuples()],
            Comparison=["paired (same test photos)" if p else "unpaired (different test photos)" for p in diffs.paired],
        )[["Model", "Set", "Difference", "Comparison"]]
        st.dataframe(frame, hide_index=True, width="stretch")


def curves(metric: str) -> None:
    """One model from several sets: the colour stays the model's, the dash tells the set."""
    sets = _sets()
    if len(sets) < 2:
        return
    st.header("One model across result sets")
    models = [m for m in MODEL_IDS if any(m in rs.models for rs in sets.values())]
    model_id = st.selectbox("Model to overlay", models, format_func=common.title, key="multiset_curve_model")
    figure = go.Figure()
    for (name, rs), dash in zip(sets.items(), DASHES):
        if model_id not in rs.models:
            continue
        history = rs.history(model_id)
        for column, width in ((f"val_{metric}", 2.5), (metric, 1)):
            if column in history:
                figure.add_scatter(
                    x=history["epoch"], y=history[column], mode="lines", name=f"{name} · {column}",
                    line=dict(color=common.MODEL_COLOURS[model_id], dash=dash, width=width),
                )
    figure.update_layout(xaxis_title="epoch", yaxis_title=metric, legend=dict(orientation="h", y=-0.2), height=460)
    st.plotly_chart(figure, width="stretch")
    st.caption("Line style: the result set. Thick: validation, thin: training.")


def confusion() -> None:
    """Difference of one model's row-normalised confusion matrices across two sets, over shared classes."""
    sets = _sets()
    if len(sets) < 2:
        return
    st.header("Confusion difference between two result sets")
    names = list(sets)
    left, middle, right = st.columns(3)
    a = left.selectbox("Set A", names, index=0, key="multiset_conf_a")
    b = middle.selectbox("Set B", names, index=1, key="multiset_conf_b")
    models = [m for m in MODEL_IDS if m in sets[a].models and m in sets[b].models]
    if a == b or not models:
        st.info("Choose two different sets that share a model.")
        return
    model_id = right.selectbox("Model", models, format_func=common.title, key="multiset_conf_model")
    classes, diff = resultsets.confusion_difference(sets[a], sets[b], model_id)
    figure = go.Figure(
        go.Heatmap(z=100 * diff, x=classes, y=classes, colorscale="RdBu", zmid=0, colorbar=dict(title="pp"))
    )
    figure.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed", height=640)
    st.plotly_chart(figure, width="stretch")
    st.caption(
        f"Share of each true class predicted as each class, A minus B, in percentage points, over the "
        f"{len(classes)} classes both sets hold. Red: more often in A; blue: more often in B. Empty rows: "
        "a class with no test photo in one of the sets."
    )


def statistics() -> None:
    """Per model, each set against the first: paired where the test photos match, unpaired otherwise."""
    sets = _sets()
    if len(sets) < 2:
        return
    st.header("Result sets compared")
    diffs = resultsets.differences(sets)
    if diffs.empty:
        st.info("The chosen sets share no model.")
        return
    for name, part in diffs.groupby("a", sort=False):
        paired = bool(part.paired.iloc[0])
        st.markdown(
            f"**{name}** against **{next(iter(sets))}**: "
            + ("**paired** — both were tested on the same photos, so an exact McNemar test applies."
               if paired else "**unpaired** — the test photos differ, so only intervals for independent samples apply.")
        )
        frame = part.assign(
            Model=[common.title(m) for m in part.model],
            Difference=[_diff_text(r) for r in part.itertuples()],
        )
        columns = ["Model", "Difference"]
        if paired:
            frame["McNemar"] = [formatting.number(p, 3) for p in part.p_value]
            columns.append("McNemar")
        st.dataframe(frame[columns], hide_index=True, width="stretch")
    st.caption(diffs.method.iloc[0] if diffs.paired.all() else "; ".join(sorted(set(diffs.method))))
