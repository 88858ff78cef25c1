"""Classify: one photo, all six models side by side, with where each of them looked."""

import os

import streamlit as st

from core import augmentation, explain, features, formatting, groups, headline, images, inference, openset, reports
from views import common

st.title("Classify a photo")
rs = common.result_set(with_weights=True)
path, stamp = common.key(rs)

with st.sidebar.expander("ImageNet weights"):
    weights_dir = st.text_input(
        "Weights folder", value=os.environ.get("FRUITVEG_WEIGHTS_DIR", ""),
        help="Folder with vgg16_notop.weights.h5 and resnet50_notop.weights.h5. Empty: Keras downloads them.",
    ) or None


@st.cache_resource(show_spinner="Loading the models (once per process)…", max_entries=2)
def classifier_for(path: str, stamp: str, weights_dir: str | None):
    return inference.load_classifier(common.cached_result_set(path, stamp), weights_dir)


@st.cache_data(show_spinner=False, max_entries=64)
def classify(path: str, stamp: str, weights_dir: str | None, digest: str, _image, with_views: bool):
    """All models on one photo; cached by the photo's hash, so moving a slider never reruns a model."""
    classifier, _ = classifier_for(path, stamp, weights_dir)
    result = classifier.classify_image(_image, with_views)
    return result, reports.summarise(result, common.cached_result_set(path, stamp), top=5)


@st.cache_resource(show_spinner=False, max_entries=2)
def openset_for(path: str, stamp: str, weights_dir: str | None):
    """The open-set verdict with frozen backbones of its own, for a set whose loaded models cannot judge it
    (their backbones usually serve it: ``inference.OpenSetJudge``); None where the set has none."""
    return features.load_verdict(common.cached_result_set(path, stamp), weights_dir)


@st.cache_data(show_spinner=False, max_entries=64)
def unknown_flags(path: str, stamp: str, weights_dir: str | None, digest: str, _image, _result, model_ids: tuple):
    """``{model id or "ensemble": unknown?}``, None where the result set has no verdict."""
    if _result.unknown is not None:
        return openset.first_photo(_result.unknown)
    verdict = openset_for(path, stamp, weights_dir)
    return None if verdict is None else verdict.for_image(_image, model_ids)


def sample_label(file, class_name: str) -> str:
    """Unique (Streamlit keeps a selectbox's choice by its label) and clear about where the photo came from."""
    return f"{class_name} · {formatting.test_photo(file.stem.replace('__', '/'))}"


with_weights = [common.title(m) for m in rs.models if rs.has_weights(m)]
if len(with_weights) < len(rs.models):
    st.info(f"Models with weights in this result set: {', '.join(with_weights) or 'none'}. Only these classify; "
            "the others are kept for comparison (every other page shows them).")
classifier, unavailable = classifier_for(path, stamp, weights_dir)
for model_id, reason in unavailable.items():
    if model_id in rs.models:
        st.warning(f"**{common.title(model_id)}** cannot run here: {reason}")
if classifier is None:
    st.error("No model of this result set can run here.")
    st.stop()

upload_tab, camera_tab, sample_tab = st.tabs(["Upload", "Camera", "Sample photos"])
with upload_tab:
    uploaded = st.file_uploader(
        "A photo of a fruit or vegetable", type=[suffix[1:] for suffix in images.PHOTO_SUFFIXES],
        help=f"Up to {images.MAX_FILE_BYTES // 2**20} MB.",
    )
with camera_tab:
    photo = st.camera_input("Take a photo")
with sample_tab:
    samples = rs.samples()
    choice = st.selectbox(
        "Sample from the test split", [None, *range(len(samples))],
        # The whole path: Streamlit keeps a selectbox's choice by its label, so labels must be unique.
        format_func=lambda i: "(none)" if i is None else sample_label(samples[i][0], samples[i][1]),
        help="Test photos of the result set: the models never saw them in training. The folder in brackets is "
        "where the photo lies in the downloaded dataset; the result set's own split put it in its test split.",
    )
# Off by default: the page shows what the models answer for the photo itself, as every other page does.
with_views = bool(classifier.views) and st.toggle(
    f"Test-time views ({len(classifier.views)} of {len(classifier.model_ids)} models)",
    help="Each model for which the validation photos took more views than the photo alone (Overview: Test-time "
         "views) answers with the average of their probabilities: its mirror image and crops of "
         f"{augmentation.TEST_CROP_SIDE:.0%} of the side, up to seven passes instead of one. Heatmaps and the "
         "open-set verdict stay those of the photo.")
source = uploaded or photo or (samples[choice][0] if choice is not None else None)
# One slot for the hint and the progress note, so the note replaces the hint instead of drawing over it.
status = st.empty()
if source is None:
    status.info("Upload a photo, take one, or pick a sample to see what each model says.")
    st.stop()
# The result shows below the tabs whichever tab is open: name the photo it is about.
described = ("the uploaded file " + uploaded.name if uploaded else "the camera photo" if photo
             else "the sample " + sample_label(samples[choice][0], samples[choice][1]))

data = source.getvalue() if hasattr(source, "getvalue") else source.read_bytes()
try:
    image = images.read_image(data)
except images.ImageError as err:
    st.error(f"This file cannot be classified: {err}")
    st.stop()
status.info(f"Running the models on {described}…")
result, summary = classify(path, stamp, weights_dir, images.image_digest(data), image, with_views)
unknown = unknown_flags(path, stamp, weights_dir, images.image_digest(data), image, result, tuple(result.results))
status.empty()
class_names = rs.class_names
# The dataset card's classes this result set has no photo of: the models cannot name them.
missing = sorted((groups.FRUITS | groups.VEGETABLES) - set(class_names))

ensemble = summary["ensemble"]
agree, of = headline.agreeing(summary)
st.subheader(f"Result for {described}")
head = st.columns([1, 2])
head[0].image(image, caption=f"{image.width}×{image.height} px", width="stretch")
with head[1]:
    st.metric("Models agreeing with the average", f"{agree} of {of}",
              help="How many models name the average's top class as their own top class")
    st.markdown(headline.headline(summary))
    st.markdown(
        f"Fruit or vegetable: {headline.group_phrase(ensemble['group'], ensemble['group_probability'])} in the "
        "average. This sums the probabilities of every class of a group, so it can name the other group than "
        "the single likeliest class when many classes of that group each get a little."
    )
    st.caption("Ensemble top 5: " + ", ".join(f"{c} {p:.0%}" for c, p in ensemble["top"]))
    scaled = [m for m in result.results if classifier.temperatures.get(m, 1.0) != 1]
    if scaled:
        whose = "Every model's" if len(scaled) == len(result.results) else f"{len(scaled)} of {len(result.results)} models'"
        st.caption(f"{whose} probabilities are temperature-scaled on the validation photos, so that a model's 80% "
                   "is right about 80% of the time (Statistics, Calibration).")
    if result.views:
        st.caption(f"Test-time views: {len(result.views)} of {len(result.results)} models answer with the average of "
                   "the views their validation photos took (named on each card; Overview, Test-time views); the "
                   "heatmaps and the open-set verdict are the photo's own.")
    if unknown is None:
        st.caption("This result set has no open-set verdict (scripts/evaluate.py --openset adds one).")
    elif unknown["ensemble"]:
        st.warning(f"**None of the {len(class_names)} classes this result set knows**, most likely: in the "
                   "ImageNet backbones' features this photo lies far from every known class, and a classifier of "
                   "those features is unsure of it, so the class names above are guesses among classes it does "
                   "not belong to.")
    else:
        st.caption(f"Open-set verdict: not flagged as unlike the {len(class_names)} known classes. The check is "
                   "rough: it catches only some photos of other produce, fewer still of look-alikes (figures on "
                   "the Overview).")
with st.expander(f"Classes this result set knows ({len(class_names)})"):
    st.markdown(", ".join(class_names))
    if missing:
        st.markdown(f"Classes of the dataset's card with no photo in this result set, which no model can name: "
                    f"**{', '.join(missing)}**.")


def top5_bars(top) -> None:
    """Each class with its probability written out: a label that wraps, never clipped on a narrow card, and a
    value even where the bar is too short to hold one."""
    for name, probability in top:
        st.progress(float(probability), text=f"{name} {probability:.0%}")


@st.fragment
def model_cards():
    controls = st.columns([2, 2, 3])
    kind = controls[0].radio("Heatmap", ["Grad-CAM", "Attention"], horizontal=True,
                             help="Attention: the map the attention models use to pool features (only those two). "
                             "Grad-CAM: which regions raise the target class's probability against the "
                             "other classes, for all six.")
    opacity = controls[1].slider("Opacity", 0.0, 1.0, 0.45, 0.05)
    ranked = [name for name, _ in reports.top_classes(result.ensemble()[0], class_names, len(class_names))]
    target = controls[2].selectbox("Grad-CAM target class", ["each model's top class", *ranked],
                                   disabled=kind == "Attention", help="Only Grad-CAM has a target class.")
    ids = list(result.results)
    for row in range(0, len(ids), 3):
        for column, model_id in zip(st.columns(3), ids[row : row + 3]):
            explanation = result.results[model_id]
            answer = summary["models"][model_id]
            with column.container(border=True):
                top_class, top_prob = answer["top"][0]
                st.markdown(f"**{common.title(model_id)}**  \n{top_class} {top_prob:.0%} · "
                            f"{headline.group_phrase(answer['group'], answer['group_probability'])}")
                if "views" in answer:
                    st.caption(f"views averaged: {answer['views']}")
                if unknown is not None and unknown.get(model_id):
                    st.markdown(f":orange[none of the {len(class_names)} known classes (open-set verdict)]")
                if kind == "Attention" and explanation.attention is None:
                    st.image(image, caption="no attention map: this model has no attention layer", width="stretch")
                else:
                    if kind == "Attention":
                        heatmap, caption = explanation.attention[0], "attention map"
                    else:
                        index = class_names.index(top_class if target.startswith("each") else target)
                        heatmap, caption = explanation.gradcam[0, index], f"Grad-CAM for {class_names[index]}"
                    st.image(explain.overlay(image, heatmap, opacity), caption=caption, width="stretch")
                top5_bars(answer["top"])


model_cards()
