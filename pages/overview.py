"""Overview: one row per model, with intervals, cost and the study's reference figures."""

import plotly.graph_objects as go
import streamlit as st

from core import comparison
from pages import common

st.title("Overview")
rs = common.result_set()
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
columns = {
    "model": st.column_config.TextColumn("Model", pinned=True),
    "accuracy": st.column_config.NumberColumn("Accuracy", format="percent", help="Top-1 accuracy on the test split"),
    "accuracy_low": st.column_config.NumberColumn("95% low", format="percent", help="Wilson interval, lower end"),
    "accuracy_high": st.column_config.NumberColumn("95% high", format="percent", help="Wilson interval, upper end"),
    "clean_accuracy": st.column_config.NumberColumn(
        "Clean acc.", format="percent", help="Accuracy on the test images without an (near) duplicate in training"
    ),
    "loss": st.column_config.NumberColumn("Loss", format="%.3f", help="Cross-entropy = negative log-likelihood"),
    "top5_accuracy": st.column_config.NumberColumn("Top-5", format="percent"),
    "group_accuracy": st.column_config.NumberColumn(
        "Fruit/veg acc.", format="percent", help="Binary fruit-vs-vegetable accuracy: class probabilities summed per group"
    ),
    "ece": st.column_config.NumberColumn("ECE", format="%.3f", help="Expected calibration error, 10 bins"),
    "seed_runs": st.column_config.NumberColumn("Seeds", help="Training runs with different seeds (train.py --seeds)"),
    "seed_mean_accuracy": st.column_config.NumberColumn("Acc. mean over seeds", format="percent"),
    "seed_sd_accuracy": st.column_config.NumberColumn("± sd over seeds", format="%.1%",
                                                      help="Spread that the random seed alone causes"),
    "best_epoch": st.column_config.NumberColumn("Best epoch"),
    "epochs_run": st.column_config.NumberColumn("Epochs run"),
    "parameters": st.column_config.NumberColumn("Parameters", format="compact"),
    "stored_mb": st.column_config.NumberColumn("Stored MB", format="%.1f", help="What the result set stores of it"),
    "inference_ms": st.column_config.NumberColumn("ms / image", format="%.0f", help="Whole model, one image, CPU"),
    "train_minutes": st.column_config.NumberColumn("Train min", format="%.1f"),
    "learning_rate": st.column_config.NumberColumn("LR", format="%.0e"),
    "reference_accuracy": st.column_config.NumberColumn("Study acc.", format="percent"),
    "accuracy_vs_reference": st.column_config.NumberColumn("Δ vs study", format="%+.1%"),
    "reference_loss": st.column_config.NumberColumn("Study loss", format="%.4f"),
}
higher_better = ["accuracy", "clean_accuracy", "top5_accuracy", "group_accuracy"]
lower_better = ["loss", "ece", "inference_ms", "stored_mb", "train_minutes"]
styled = (
    show[list(columns)]
    .style.highlight_max(subset=higher_better, color="#c7e9c0")
    .highlight_min(subset=lower_better, color="#c7e9c0")
)
st.dataframe(styled, column_config=columns, hide_index=True, width="stretch")
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
    xaxis_title="test accuracy (dot, with 95% Wilson interval) · study's figure (grey tick)",
)
st.plotly_chart(figure, width="stretch")

with st.expander("What was trained, and on what"):
    counts = summary.get("counts", {})
    st.markdown(
        f"- Dataset fingerprint `{config['dataset'][:12]}…`; images per split: "
        + ", ".join(f"{split} {sum(c.values())}" for split, c in counts.items())
        + f"; {summary.get('dropped_copies', 0)} byte-identical copies dropped; "
        f"{summary.get('skipped', 0)} unreadable files skipped."
        f"\n- Test images with a duplicate in training: {summary.get('leaked', {}).get('test', 0)}."
        f"\n- Shared settings: Adam, batch {config['batch_size']}, dropout {config['dropout']}, {config['views']} "
        f"augmented views per photo, early stopping on validation loss (patience {config['patience']}), "
        f"resize {config['resize']}. Only the learning rate differs, as in the study."
        f"\n- Frozen backbone trunk over the training views computed in "
        f"{config.get('trunk_precision_train_views', 'float32')}; validation and test images in float32, as on the Classify page."
        f"\n- Libraries: " + ", ".join(f"{k} {v}" for k, v in rs.manifest.get("versions", {}).items())
    )
