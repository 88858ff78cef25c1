"""Training curves: loss or accuracy per epoch (or elapsed time), smoothed, best epoch marked."""

import plotly.graph_objects as go
import streamlit as st

from core import comparison, recipes
from views import common, multiset

st.title("Training curves")
rs = common.result_set()

# The models on a row of their own: six names in a third of a narrow screen are cut to two.
chosen = st.multiselect("Models", list(rs.models), default=list(rs.models), format_func=common.title)
left, right = st.columns(2)
metric = left.radio("Metric", ["loss", "accuracy"], horizontal=True)
x_axis = right.radio("X axis", ["epoch", "elapsed time"], horizontal=True)
smoothing = st.slider(
    "Smoothing", 0.0, 0.95, 0.0, 0.05,
    help="Exponential moving average with start-up bias correction, as in TensorBoard; 0 shows the raw values.",
)
splits = st.multiselect("Curves", ["validation", "train"], default=["validation", "train"])

figure = go.Figure()
for model_id in chosen:
    history = rs.history(model_id)
    info = rs.models[model_id]
    x = history["epoch"] if x_axis == "epoch" else history["elapsed_seconds"] / 60
    colour = common.MODEL_COLOURS[model_id]
    for split in splits:
        column = metric if split == "train" else f"val_{metric}"
        if column not in history:
            continue
        y = comparison.ema(history[column], smoothing) if smoothing else history[column]
        figure.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=f"{common.title(model_id)} · {split}",
            line=dict(color=colour, dash="solid" if split == "validation" else "dot"),
            marker=dict(size=4), legendgroup=model_id,
        ))
    band = comparison.seed_band(rs, model_id, f"val_{metric}") if x_axis == "epoch" else None
    if band is not None and "validation" in splits:
        figure.add_trace(go.Scatter(
            x=list(band["epoch"]) + list(band["epoch"][::-1]), y=list(band["high"]) + list(band["low"][::-1]),
            fill="toself", fillcolor=colour, opacity=0.15, line=dict(width=0), legendgroup=model_id,
            name=f"{common.title(model_id)} · {int(band['runs'].max())} seeds (range)", hoverinfo="skip",
        ))
    is_best = history["epoch"] == info["best_epoch"]
    if is_best.any() and "validation" in splits and f"val_{metric}" in history:
        best = history[is_best]
        bx = best["epoch"] if x_axis == "epoch" else best["elapsed_seconds"] / 60
        # On the line as drawn: the smoothed value when smoothing is on.
        shown = comparison.ema(history[f"val_{metric}"], smoothing) if smoothing else history[f"val_{metric}"]
        figure.add_trace(go.Scatter(
            x=bx, y=shown[is_best], mode="markers", legendgroup=model_id, showlegend=False,
            marker=dict(symbol="star", size=14, color=colour, line=dict(color="black", width=1)),
            hovertemplate=f"{common.title(model_id)}: best epoch {info['best_epoch']}<extra></extra>",
        ))
figure.update_layout(
    height=520, margin=dict(l=10, r=10, t=30, b=10),
    xaxis_title="epoch" if x_axis == "epoch" else "elapsed training minutes (excluding the shared trunk pass)",
    yaxis_title=metric, yaxis_tickformat=".0%" if metric == "accuracy" else None,
    legend=dict(orientation="h", yanchor="bottom", y=1.02),
)
if not chosen or not splits:
    # An empty figure would show meaningless default axes.
    st.info("Choose at least one model and one curve to draw.")
else:
    st.plotly_chart(figure, width="stretch")
st.caption(
    "Solid: validation; dotted: training. ★ marks the epoch whose weights were kept (lowest validation loss); "
    "training stopped after the validation loss had not improved for "
    f"{rs.config['patience']} epochs"
    + ("; a model with a cosine schedule ran to its end" if any(
        not recipes.as_trained(rs.models[m]).stops_early for m in chosen) else "")
    + ". Training figures are averaged over an epoch, with dropout on. "
    "Shaded: the range of the validation curve over runs with other seeds, where the result set has them "
    "(by epoch only)."
)

multiset.curves(metric)
