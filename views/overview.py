"""Overview: one row per model, with intervals, cost and the study's reference figures."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import artifacts, augmentation, comparison, formatting, openset, recipes, resultsets
from views import common, multiset, probe

st.title("Overview")
rs = common.result_set()
multiset.overview()
table = common.overview_table(*common.key(rs))
config = rs.config
summary = rs.manifest.get("dataset_summary", {})
test_n = int(table["n"].iloc[0])
st.caption(
    f"Result set `{rs.root}` · {len(rs.class_names)} classes · split **{config['split']}** (seed {config['seed']}) · "
    f"{test_n} test images · {config['image_size']} px · up to {config['epochs']} epochs · batch {config['batch_size']}"
)

for line in comparison.reading(table):
    st.markdown(f"- {line}")

show = table.sort_values("accuracy", ascending=False)


# The model's name stays in view while a narrow screen scrolls a wide table sideways.
MODEL_PINNED = {"Model": st.column_config.TextColumn(pinned=True)}


def formatted_table(part: str) -> None:
    """Every cell a string from core.formatting: no None, no raw float, one number style in every column."""
    shown, best = formatting.overview_display(show, part)
    styled = shown.style.apply(lambda _: best.map(lambda b: "background-color: #c7e9c0" if b else ""), axis=None)
    st.dataframe(styled, hide_index=True, width="stretch", column_config=MODEL_PINNED)


formatted_table("accuracy")
st.caption("Green: the best value of its column. Interval: 95 % Wilson. Clean acc.: on the test images without a "
           "copy in training. Δ: accuracy minus the study's, in percentage points. Seeds: accuracy over training "
           "runs that differ only in the random seed (– for a single run). Loss and ECE: the probabilities as the "
           "models output them, as the study measured them; Statistics has them after temperature scaling, as the "
           "Classify page shows them. The CSV holds every figure unrounded.")
st.markdown("**Cost**")
formatted_table("cost")
st.caption("Epochs: run (best by validation loss: the weights kept). ms / image: one photo through the whole "
           "model, batch of one, on the training machine. Train min: wall-clock training time as the run recorded "
           "it, on whatever else that machine was doing (`scripts/benchmark.py train` times the models side by "
           "side); the first model on a backbone may also compute the frozen backbone's features that a later "
           "one reuses.")
st.download_button(
    "Download table (CSV)", table.to_csv(index=False).encode(), file_name="model_comparison.csv", mime="text/csv"
)

st.subheader("Accuracy with 95% intervals")
figure = go.Figure()
for _, row in show.iloc[::-1].iterrows():
    colour = common.MODEL_COLOURS[row["id"]]
    figure.add_trace(go.Scatter(
        x=[row["accuracy"]], y=[row["model"]], mode="markers", marker=dict(size=12, color=colour),
        error_x=dict(type="data", symmetric=False, array=[row["accuracy_high"] - row["accuracy"]],
                     arrayminus=[row["accuracy"] - row["accuracy_low"]], color=colour, thickness=2),
        name=row["model"], showlegend=False,
        hovertemplate=f"{row['model']}: %{{x:.1%}} ({row['correct']} of {row['n']})<extra></extra>",
    ))
    figure.add_trace(go.Scatter(
        x=[row["reference_accuracy"]], y=[row["model"]], mode="markers", showlegend=False,
        marker=dict(symbol="line-ns-open", size=16, color="#555"),
        hovertemplate="study: %{x:.2%}<extra></extra>",
    ))
figure.update_layout(
    height=70 + 45 * len(show), margin=dict(l=10, r=10, t=10, b=40), xaxis_tickformat=".0%",
    xaxis_title="test accuracy",
)
st.plotly_chart(figure, width="stretch")
# The key below the chart rather than in the axis title, which a narrow screen would cut.
st.caption("Dot: test accuracy with its 95 % Wilson interval · grey tick: the study's figure.")
probe.overview(rs)

ensembles = comparison.ensemble_table(rs)
if not ensembles.empty:
    st.subheader("Reference: soft-voting ensembles")
    st.dataframe(
        pd.DataFrame({
            "Ensemble of": ensembles["ensemble"],
            **formatting.accuracy_columns(ensembles),
            "Best member": [f"{r.best_member} ({formatting.percent(r.best_member_accuracy)})"
                            for r in ensembles.itertuples()],
        }),
        hide_index=True,
    )
    st.caption("The mean of the models' probabilities on each test photo (the stored run of each model), as the "
               "Classify page's ensemble. What the models get right together, not a model of its own. With "
               "views: each model with the test-time views its validation photos took (Test-time views below), as "
               "the Classify page's average with its switch on.")


def test_time_section(key: str, title: str, unit: str, options: str, baseline: str, shown: str) -> None:
    """A test-time option's table (``comparison.test_time_table``), in an expander, where any model has it."""
    table = comparison.test_time_table(rs, key)
    if table.empty:
        return
    with st.expander(title):
        st.dataframe(formatting.test_time_display(table, unit), hide_index=True, column_config=MODEL_PINNED)
        st.caption(f"Each column: validation · test accuracy (%) with {options}; probabilities scaled by a temperature "
                   "fitted on the validation photos with that option. Taken (✓): the option with the most validation "
                   f"photos right (at a lower NLL on a tie), {baseline} unless another does better, with its test "
                   "accuracy and 95 % Wilson interval. Fixed / broken: test photos the taken option turns right / "
                   f"wrong against {baseline}, with the exact McNemar test. {shown}")


test_time_section(
    artifacts.TEST_TIME_VIEWS, "Test-time views: each photo's mirror image and crops averaged with it", "",
    f"the probabilities of those views of each photo averaged (the five crops: {augmentation.TEST_CROP_SIDE:.0%} of "
    "the side from the centre and the four corners, resized to the image size)", "the photo alone",
    "The tables above and the other pages show the photo alone (one pass, not up to seven); Classify and "
    "Statistics can use the taken views (a switch).")
test_time_section(
    artifacts.TEST_TIME_SIZES, "Test-time resolution: the photos at other sizes", " px",
    "each photo resized to the size instead of the image size the model trained at", "the image size",
    "The tables above and every other page show the photos at the image size.")

stored_openset = rs.openset()
with st.expander("Open-set verdict: photos of none of the known classes"):
    if stored_openset is None:
        st.markdown("This result set has no open-set verdict; `scripts/evaluate.py --openset` adds one.")
    else:
        info = stored_openset[0]
        st.markdown(
            f"Method: {info['method']}; each threshold keeps {info['keep']:.0%} of the validation photos. "
            "Measured with some classes held out (5 folds of about 6 classes): the held-out classes' photos "
            "should be flagged, the other classes' test photos kept. Each detector below reads one backbone's "
            "features, or both side by side, and gives the verdict of the models named beside it."
            + (" Held out together, as one produce under two names (each pair shares a byte-identical photo): "
               + "; ".join(" and ".join(group) for group in info["held_out_together"]) + "."
               if info.get("held_out_together") else "")
        )
        detectors = info["held_out_protocol"]
        for name, f in detectors.items():
            users = [common.title(m) for m in rs.models if openset.model_detector(m, detectors) == name]
            users += ["the average"] if name == openset.ENSEMBLE else []
            st.markdown(f"- **{openset.detector_title(name)}** ({', '.join(users)}): "
                        + formatting.openset_figures(f, hardest=4))
        st.caption("Class AUROC: that held-out class's photos against the known test photos of its fold. The "
                   "hardest classes are those with a look-alike among the known ones (for the shipped copy: bell "
                   "pepper / capsicum / paprika, garlic / onion, lemon / orange, cabbage / lettuce).")

with st.expander("What was trained, and on what"):
    counts = summary.get("counts", {})
    st.markdown(
        f"- Dataset fingerprint `{config['dataset'][:12]}…`; images per split: "
        + ", ".join(f"{split} {sum(c.values())}" for split, c in counts.items())
        + f"; {summary.get('dropped_copies', 0)} byte-identical copies dropped; "
        f"{summary.get('skipped', 0)} unreadable files skipped."
        f"\n- Test images with a duplicate in training: {summary.get('leaked', {}).get('test', 0)}."
        f"\n- Recipe **{resultsets.recipe(rs)}**. Shared settings: batch {config['batch_size']}, dropout "
        f"{config['dropout']}, {config['views']} cached views per photo, early stopping on validation loss (patience "
        f"{config['patience']}), resize {config['resize']}."
        f"\n- Frozen backbone trunk over the training views computed in "
        f"{config.get('trunk_precision_train_views', 'float32')}; validation and test images in float32, as on the Classify page."
        f" Trained parts computed in {config.get('train_precision', 'float32')} (weights kept in float32)."
        f"\n- Libraries: " + ", ".join(f"{k} {v}" for k, v in rs.manifest.get("versions", {}).items())
    )
    st.markdown("Each model's training:\n" + "\n".join(
        f"- **{common.title(m)}**: "
        + recipes.as_trained(info).describe()
        for m, info in rs.models.items()
    ))
