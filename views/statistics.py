"""Statistics: is a difference between two models real? Paired tests and calibration."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import calibration, comparison, formatting
from views import common, multiset, probe

st.title("Statistics")
rs = common.result_set()
table = common.overview_table(*common.key(rs))
n = int(table["n"].iloc[0])

st.subheader("Paired comparison (exact McNemar test)")
st.markdown(
    f"All models answer the same {n} test images, so two models are compared on the images where exactly one of "
    "them is right. The exact McNemar test asks whether that split could be a coin toss. "
    "Cell (row, column): the p-value, and how many images the row model gets right and the column model wrong."
)
with_views = any(rs.has_view_predictions(m) for m in rs.models) and st.toggle(
    "With test-time views", help="Each model with the views its validation photos took (Overview: Test-time "
    "views; only the stored run of each model has them). Off: the photo alone, as every other table.")
pvalues, only_row, verdicts = comparison.mcnemar_tables(rs, with_views)
text = np.array([
    [("" if r == c else f"p = {pvalues.loc[r, c]:.2g}<br>{only_row.loc[r, c]} vs {only_row.loc[c, r]}")
     for c in pvalues.columns] for r in pvalues.index
])
figure = go.Figure(go.Heatmap(
    z=pvalues.values, x=list(pvalues.columns), y=list(pvalues.index), text=text, texttemplate="%{text}",
    zmin=0, zmax=0.2, colorscale=[[0, "#08519c"], [0.25, "#6baed6"], [1, "#f7fbff"]],
    colorbar=dict(title="p-value"), hovertemplate="%{y} vs %{x}<br>%{text}<extra></extra>",
))
figure.update_layout(height=460, margin=dict(l=10, r=10, t=10, b=10), yaxis_autorange="reversed")
st.plotly_chart(figure, width="stretch")
st.markdown("\n".join(f"- {v}" for v in verdicts))
st.caption(f"Dark cells (p < 0.05) are differences unlikely to be chance; with {len(verdicts)} pairs, about one in "
           "twenty such cells can still be chance alone.")

st.subheader("Across seeds")
pairs = comparison.seed_pairs(rs)
if pairs.empty:
    st.caption("Fewer than two models of this result set have runs with several seeds: how much the seed alone "
               "moves their accuracy is not known here (`scripts/train.py --seeds 3` trains replicates).")
else:
    st.markdown(
        "Training again with another seed changes a model's test accuracy by itself. A difference between two models "
        "counts as beyond seed noise when every run of the better one beats every run of the other."
    )
    st.dataframe(
        pd.DataFrame({
            "Better (mean)": [f"{r.better} ({formatting.percent(r.better_mean)})" for r in pairs.itertuples()],
            "Worse (mean)": [f"{r.worse} ({formatting.percent(r.worse_mean)})" for r in pairs.itertuples()],
            "Difference": [f"{100 * r.difference:.1f} points" for r in pairs.itertuples()],
            "Ranges over seeds": [
                f"{formatting.percent(r.better_range[0])}–{formatting.percent(r.better_range[1])} vs "
                f"{formatting.percent(r.worse_range[0])}–{formatting.percent(r.worse_range[1])}" for r in pairs.itertuples()
            ],
            "Runs": [f"{r.runs[0]} vs {r.runs[1]}" for r in pairs.itertuples()],
            "Beyond seed noise": ["yes" if r.beyond_seeds else "no: the ranges overlap" for r in pairs.itertuples()],
        }),
        hide_index=True,
    )
    st.caption("With 3 runs each, ranges that do not overlap arise by seed noise alone 1 time in 10. Models with a "
               "single run are left out.")

st.subheader("Calibration")
st.markdown(
    "A calibrated model that says 80% is right 80% of the time. Each model's line joins its accuracy per "
    "confidence bin; the dashed diagonal is perfect calibration. ECE is the bin-weighted gap; negative "
    "log-likelihood is the test loss. **Temperature scaling** divides each model's logits by one number "
    "fitted on the validation photos (Guo et al. 2017): it changes no answer, only how sure each one sounds. "
    "The Classify page shows the scaled probabilities."
)
chosen = st.multiselect("Models", list(rs.models), default=list(rs.models), format_func=common.title)
fitted = table[table["id"].isin(chosen)]["temperature"].notna()
scaled = st.radio("Probabilities", ["temperature-scaled", "as the models output them"], horizontal=True,
                  index=0 if fitted.any() else 1, disabled=not fitted.any(),
                  help=None if fitted.any() else "No model of this result set has a fitted temperature "
                  "(python scripts/evaluate.py --calibrate adds one).") == "temperature-scaled"
st.caption("Line: accuracy per confidence bin; a dot's size grows with the number of test images in its bin "
           "(empty bins are left out)." + (" Models without a fitted temperature are drawn as they output." if
                                          scaled and not fitted.all() else ""))
figure = go.Figure()
figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="grey", dash="dash"),
                            name="perfect calibration"))
for model_id in chosen:
    bins = calibration.reliability(rs.metrics(model_id), scaled)
    keep = [i for i, c in enumerate(bins["count"]) if c]
    figure.add_trace(go.Scatter(
        x=[bins["confidence"][i] for i in keep], y=[bins["accuracy"][i] for i in keep], mode="lines+markers",
        name=common.title(model_id), line=dict(color=common.MODEL_COLOURS[model_id]),
        marker=dict(size=[6 + 14 * np.sqrt(bins["count"][i] / n) for i in keep]),
        customdata=[bins["count"][i] for i in keep],
        hovertemplate="confidence %{x:.2f} → accuracy %{y:.2f}<br>%{customdata} images<extra></extra>",
    ))
figure.update_layout(height=460, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="mean confidence in bin",
                     yaxis_title="accuracy in bin", xaxis_range=[0, 1], yaxis_range=[0, 1.02],
                     # Below the chart: beside it, six model names squeeze the plot on a narrow screen.
                     legend=dict(orientation="h", y=-0.18))
if not chosen:
    # An empty figure and an "empty" table would say nothing.
    st.info("Choose at least one model to see its calibration.")
else:
    st.plotly_chart(figure, width="stretch")
    columns = ["model", "temperature", "ece", "ece_scaled", "loss", "loss_low", "loss_high", "loss_scaled"]
    st.dataframe(
        table[table["id"].isin(chosen)][columns], hide_index=True,
        column_config={
            "model": "Model",
            "temperature": st.column_config.NumberColumn(
                "Temperature", format="%.2f", help="fitted on validation; below 1 sharpens an under-confident model"),
            "ece": st.column_config.NumberColumn("ECE as output", format="%.3f"),
            "ece_scaled": st.column_config.NumberColumn("ECE scaled", format="%.3f"),
            "loss": st.column_config.NumberColumn("NLL as output", format="%.3f", help="= the test loss"),
            "loss_low": st.column_config.NumberColumn("NLL 95% low", format="%.3f", help="bootstrap over test images"),
            "loss_high": st.column_config.NumberColumn("NLL 95% high", format="%.3f"),
            "loss_scaled": st.column_config.NumberColumn("NLL scaled", format="%.3f"),
        },
    )

probe.statistics(rs)
multiset.statistics()
