"""Attention maps: where each model looked on one test image, as stored in the result set."""

import numpy as np
import streamlit as st
from PIL import Image

from core import comparison, explain, formatting
from views import common

ALL_CLASSES = "all classes"
OUTCOMES = {"right or wrong": None, "right": True, "wrong": False}  # that model's prediction
PHOTO_SIDE = 320
MAP_PX = 138  # six maps, with the gaps between them, fit a 1400 px screen
PLACEHOLDER_GREY = "#9e9e9e"
FLAT_RANGE = 0.05  # maps are scaled to 0..1 per image; less spread than this shows as one flat colour


@st.cache_data(show_spinner=False, max_entries=12)
def stored_maps(path: str, stamp: str, model_id: str, _rs) -> dict[str, np.ndarray]:
    """One model's maps for every test image; ``_rs`` is left out of the cache key, path and stamp name it."""
    return _rs.maps(model_id)


def prediction_caption(row, model_id: str, of_class: str | None = None) -> str:
    """The model's answer; with ``of_class``, also which class the map is of, when that is not the answer."""
    mark = "✓" if row[f"{model_id}:correct"] else "✗"
    answer = f"{row[f'{model_id}:pred']} ({row[f'{model_id}:conf']:.0%})"
    if of_class is None or of_class == row[f"{model_id}:pred"]:
        return f"{mark} {common.title(model_id)}: {answer}"
    return f"{mark} {common.title(model_id)}: map of {of_class}; it predicts {answer}"


def flat(heatmap: np.ndarray) -> bool:
    """A map without any region standing out: nothing in the photo raises the class against the others."""
    return float(np.ptp(heatmap)) < FLAT_RANGE


def sanity_summary(sanity) -> str:
    """One line: how many models' Grad-CAM maps pass the randomisation check, whose fail, where it was not run."""
    checked = sanity[sanity["checked"]]
    failing = ", ".join(common.title(m) for m in checked.loc[~checked["passes"], "id"])
    parts = [f"{int(checked['passes'].sum())} of {len(checked)} models checked pass"
             + (f"; fail: {failing}" if failing else "")]
    if not sanity["checked"].all():
        parts.append("not run: " + ", ".join(common.title(m) for m in sanity.loc[~sanity["checked"], "id"]))
    return ("**Sanity check of the Grad-CAM maps** (each model's maps computed again after its trained layers are "
            "re-drawn at random; they pass when the two agree little): " + "; ".join(parts)
            + ". The attention maps are not checked.")


def sanity_rows(sanity) -> list[dict]:
    """The checked models' figures, one row each, as the table below the summary shows them."""
    return [{
        "Model": common.title(row.id),
        "Verdict": "pass" if row.passes else "fail",  # next to the name: a narrow screen scrolls the rest
        "Rank correlation": f"{row.gradcam_rank_correlation:.2f}",
        # Checks stored before the signed maps have no such figure.
        "Of absolute values": f"{row.absolute_rank_correlation:.2f}" if np.isfinite(row.absolute_rank_correlation) else "–",
        "Randomised maps flat": f"{int(row.flat_randomised)} of {int(row.images)}" if np.isfinite(row.flat_randomised) else "–",
        "Maps compared": "before the ReLU" if row.signed_maps else "as shown",
    } for row in sanity[sanity["checked"]].itertuples()]


rs = common.result_set()
st.title("Attention maps")
# Sets stored before the maps took the log-probability keep their logit maps (no weights to redo them).
metrics = {m: rs.metrics(m) for m in rs.models}
logit_maps = [common.title(m) for m in rs.models if metrics[m].get("gradcam_target") != explain.GRADCAM_TARGET]
st.markdown(
    "- **Grad-CAM**: the regions of the last convolutional feature map that raise one class's probability "
    "against the other classes, found from the gradients of its log-probability after the prediction: of the "
    "predicted class, or of the true class."
    + (f" This set's maps of {', '.join(logit_maps)} were stored with the class's logit as the score (the Grad-CAM "
       "paper's), which is flat wherever the class wins with a negative logit." if logit_maps else "") + "\n"
    "- **Attention map**: the weights that the attention models' own attention layer gives each position before "
    "pooling: part of how the prediction is made, the same whatever the class."
)
sanity = comparison.sanity_table(metrics)
if sanity["checked"].any():
    st.markdown(sanity_summary(sanity))
    with st.expander("Sanity check per model"):
        st.dataframe(sanity_rows(sanity), hide_index=True)
        threshold = sanity.loc[sanity["checked"], "threshold"].max()
        st.caption(
            "Rank correlation: mean Spearman correlation between each test photo's map (of the class the model "
            "predicts) and the same map after the re-draw, over the test photos that 'Randomised maps flat' counts"
            + (f"; below {threshold:.2f} passes" if np.isfinite(threshold) else "") + ". Compared before "
            "Grad-CAM's ReLU, where no map is flat (after it, a re-drawn model's map is often zero everywhere, and "
            "checks stored comparing the maps as shown count such a map as no agreement). Of absolute values: "
            "whether the maps are strong in the same places whatever their sign; shown, not part of the rule."
        )
else:
    st.info("The Grad-CAM sanity check (model randomisation) has not been run for this result set.")

images = comparison.image_table(rs, list(rs.models))
# Two rows of two: four filters side by side truncate their values on a narrow screen.
columns = [*st.columns(2, vertical_alignment="bottom"), *st.columns(2, vertical_alignment="bottom")]
with columns[0]:
    true_class = st.selectbox("True class", [ALL_CLASSES, *comparison.ordered_classes(rs)], key="attention_class")
with columns[1]:
    judge = common.model_picker(rs, "Judged by", key_name="attention_judge")
with columns[2]:
    outcome = st.selectbox("Its prediction", list(OUTCOMES), key="attention_outcome")
with columns[3]:
    disagree = st.checkbox("Models disagree", key="attention_disagree",
                           help="Only the test images on which the models do not all predict the same class")
chosen = comparison.choose_images(
    images, None if true_class == ALL_CLASSES else true_class, judge, OUTCOMES[outcome], disagree
)
if chosen.empty:
    st.warning("No test image matches these filters.")
    st.stop()
right_counts = comparison.models_right(chosen)
# The image table's index is the position in the predictions, which the stored maps share.
labels = {
    position: f"{row.true} · {formatting.test_photo(row.file)} · {right_counts[position]} of {len(rs.models)} models right"
    for position, row in zip(chosen.index, chosen.itertuples())
}
position = st.selectbox(f"Test image ({len(chosen)} match)", list(labels), format_func=labels.get, key="attention_image")
row = images.loc[position]

photo_column, controls = st.columns([1, 2])
with controls:
    opacity = st.slider("Map opacity", 0.0, 1.0, 0.5, 0.05, key="attention_opacity")
    # A short label: a longer one is cut on a narrow screen; the alternative is in the help.
    of_true = st.toggle("Grad-CAM of the true class", key="attention_true",
                        help="Off: of each model's predicted class. For a model that is right the two are the same map.")
    st.markdown(f"True class **{row['true']}**; {right_counts[position]} of {len(rs.models)} models are right.")
photo = comparison.read_test_photo(rs, row["file"], row["true"], PHOTO_SIDE)
with photo_column:
    if photo is None:
        photo = Image.new("RGB", (PHOTO_SIDE, PHOTO_SIDE), PLACEHOLDER_GREY)
        st.image(photo, caption=f"{formatting.test_photo(row['file'])}: photo not here (no dataset, no sample); "
                 "maps drawn on grey")
    else:
        st.image(photo, caption=f"{row['true']} · {formatting.test_photo_origin(row['file'])}")

gradcam = "gradcam_true" if of_true else "gradcam_pred"
maps = {m: stored_maps(*common.key(rs), m, _rs=rs) for m in rs.models}
failing = set(sanity.loc[sanity["checked"] & ~sanity["passes"], "id"])
map_rows = [
    (f"Grad-CAM of the {'true' if of_true else 'predicted'} class", gradcam),
    ("Attention map (attention models only)", "attention"),
]
for heading, kind in map_rows:
    st.markdown(f"**{heading}**")
    # Fixed-width tiles in a wrapping row: six side by side on a wide screen, three per row on a narrow one,
    # where six columns would squeeze each caption to a word per line.
    with st.container(horizontal=True):
        for model_id in rs.models:
            with st.container(width=MAP_PX):
                if kind not in maps[model_id]:
                    st.caption(f"{common.title(model_id)}: no attention layer")
                    continue
                heatmap = maps[model_id][kind][position]
                caption = prediction_caption(row, model_id, row["true"] if kind == "gradcam_true" else None)
                if kind != "attention" and model_id in failing:
                    caption += " · map fails the sanity check"
                if kind != "attention" and flat(heatmap):
                    # A flat map drawn in colour is one even blue that reads as "looked everywhere": show the
                    # photo itself and say so.
                    st.image(photo, caption=caption + " · flat map: no region raises this class", width="stretch")
                else:
                    st.image(explain.overlay(photo, heatmap, opacity), caption=caption, width="stretch")
