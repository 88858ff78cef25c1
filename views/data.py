"""Data: what the dataset folder holds, which images are copies of one another, and the recorded split."""

import math
from pathlib import Path

import plotly.express as px
import streamlit as st

from core import audit, dataset, images
from views import common

THUMBNAIL_PX = 240
THUMBNAIL_TILE_PX = 140  # six sample photos fill a 1400 px screen
PAIRS_PER_PAGE = 12
SAMPLES_PER_CLASS = 6
SPLIT_COLOURS = {"train": "#4c78a8", "validation": "#f58518", "test": "#54a24b", audit.ALL: "#4c78a8"}


@st.cache_data(show_spinner=False, max_entries=4)
def fingerprints(root: str) -> dataset.Fingerprints:
    return dataset.fingerprint(root, dataset.scan(root), progress=False)


@st.cache_data(show_spinner=False, max_entries=16)
def run_audit(root: str, bits: int) -> audit.Audit:
    """Keyed by folder and threshold; the slow fingerprints are cached apart, so the slider stays quick."""
    return audit.from_fingerprints(root, fingerprints(root), bits)


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(path: str):
    """Small, upright (EXIF-rotated) copy: datasets may hold photos of many megabytes."""
    image = images.read_image(path)
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    return image


def show_counts(table) -> None:
    total = table.copy()
    total["total"] = total.sum(axis=1)
    # Tabs, not side-by-side columns: each gets the page's full width, which a narrow screen needs for both.
    chart, numbers = st.tabs(["Chart", "Table"])
    numbers.dataframe(total, width="content", height=min(38 + 35 * len(total), 560))
    long = table.reset_index().melt(id_vars="class", var_name="split", value_name="images")
    figure = px.bar(long, x="class", y="images", color="split", color_discrete_map=SPLIT_COLOURS,
                    category_orders={"split": list(table.columns)})
    figure.update_layout(barmode="stack", height=560, margin=dict(l=0, r=0, t=70, b=0), xaxis_title=None,
                         # Above the plot but below the mode bar, which takes the top 30-odd pixels.
                         legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom", title=None))
    figure.update_xaxes(tickangle=-60, tickvals=list(table.index))  # every class, not every other one
    chart.plotly_chart(figure, width="stretch")


def metric_row():
    """A wrapping row for metrics, each as wide as its label and value: equal columns cut both on a narrow screen."""
    return st.container(horizontal=True, gap="large")


def show_picture(root: Path, file: dataset.ImageFile, caption: str) -> None:
    try:
        st.image(thumbnail(str(root / file.path)), caption=caption, width="stretch")
    except images.ImageError as err:
        st.warning(f"{file.path}: {err}")


def show_recorded(rs) -> None:
    """What the result set itself records of its split: all there is without the dataset folder."""
    plan = dataset.SplitPlan.from_json(rs.dataset())
    st.caption(
        f"Split policy **{plan.policy}** · seed {plan.seed} · near-duplicate threshold "
        f"{plan.near_duplicate_bits} bits · dataset fingerprint `{plan.fingerprint[:12]}`"
    )
    with metric_row():
        st.metric("Images in the split", sum(len(files) for files in plan.files.values()), width="content")
        st.metric("Unreadable files skipped", len(plan.skipped), width="content")
        st.metric("Copies dropped", len(plan.dropped_copies), width="content",
                  help="Byte-identical copies of an image within one class: kept once, so no photo counts twice")
        st.metric("Leaked into validation / test", f"{len(plan.leaked['validation'])} / {len(plan.leaked['test'])}",
                  width="content", help="Images with an exact or near duplicate in train")
    st.subheader("Images per split and class")
    show_counts(audit.counts_table(plan.counts()))
    with st.expander(f"Skipped files ({len(plan.skipped)}) and dropped copies ({len(plan.dropped_copies)})"):
        st.dataframe([{"file": p, "reason": r} for p, r in plan.skipped], width="stretch")
        st.dataframe([{"dropped": d, "copy of": k} for d, k in plan.dropped_copies], width="stretch")
    st.subheader("Sample photos")
    by_class = {}
    for path, label in rs.samples():
        by_class.setdefault(label, []).append(path)
    labels = sorted(by_class)
    for row in range(0, len(labels), 3):
        for column, label in zip(st.columns(3), labels[row : row + 3]):
            with column.container(border=True):
                st.markdown(f"**{label}**")
                for cell, path in zip(st.columns(3), by_class[label]):
                    cell.image(str(path), width="stretch")


def show_pairs(result: audit.Audit) -> None:
    st.subheader("Duplicate pairs")
    # A wrapping row, each control as wide as its label: fixed columns cut the labels on a narrow screen.
    with st.container(horizontal=True, vertical_alignment="bottom", gap="large"):
        kind = st.segmented_control("Kind", ["Exact", "Near", "Both"], default="Both", required=True)
        cross_split = st.checkbox("Across splits only", width="content")
        cross_class = st.checkbox("Across classes only", width="content")
    pairs = {"Exact": result.exact_pairs, "Near": result.near_pairs, "Both": result.pairs}[kind]
    pairs = [p for p in pairs if (p.cross_split or not cross_split) and (p.cross_class or not cross_class)]
    if not pairs:
        st.info("No duplicate pair matches these filters.")
        return
    pages = math.ceil(len(pairs) / PAIRS_PER_PAGE)
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    page = left.number_input(f"Page (of {pages})", 1, pages, 1) if pages > 1 else 1
    first = (page - 1) * PAIRS_PER_PAGE
    shown = pairs[first : first + PAIRS_PER_PAGE]
    right.caption(f"Pairs {first + 1}-{first + len(shown)} of {len(pairs)}; copies across classes and splits first.")
    for row in range(0, len(shown), 2):
        for column, pair in zip(st.columns(2), shown[row : row + 2]):
            with column.container(border=True):
                how = "Exact copy (same bytes)" if pair.exact else f"Near duplicate, {pair.distance} bits apart"
                tags = [t for t, on in (("across splits", pair.cross_split), ("across classes", pair.cross_class))
                        if on]
                st.markdown(f"**{how}**" + (f" · :red[{', '.join(tags)}]" if tags else ""))
                for side, file in zip(st.columns(2), (pair.a, pair.b)):
                    with side:
                        split = audit.split_name(file.folder_split)
                        # The file name, class and split say what the path does, in words that wrap whole.
                        show_picture(result.root, file, f"{Path(file.path).name}  \n{file.label} · {split}")


def show_audit(folder: Path, rs) -> None:
    bits = st.slider(
        "Near-duplicate threshold (bits)", 0, 16, dataset.NEAR_DUPLICATE_BITS,
        help=f"Default {dataset.NEAR_DUPLICATE_BITS}: the value the split uses.",
    )
    st.caption(
        "Two files with different bytes are near duplicates when their 64-bit perceptual hashes differ in at most "
        "this many bits under the best rotation/flip: 0-4 catches re-encoded or resized copies, higher values "
        "start to pair unrelated photos on similar backgrounds."
    )
    with st.spinner(f"Auditing {folder} (fingerprinting every image the first time)…"):
        try:
            result = run_audit(str(folder), bits)
        except FileNotFoundError as err:
            st.error(str(err))
            return
    reason = result.not_a_dataset()
    if reason:
        st.error(f"`{folder}` does not look like a dataset: {reason}. A dataset is a folder of class folders of "
                 "photos, optionally inside train/, validation/ and test/ folders.")
        return
    summary = result.to_json()
    with metric_row():
        st.metric("Images", result.images, help=f"{len(result.skipped)} unreadable file(s) skipped", width="content")
        st.metric("Exact pairs", len(result.exact_pairs), width="content",
                  help=f"{summary['exact_breakdown']['cross_split']} across splits, "
                  f"{summary['exact_breakdown']['cross_class']} across classes")
        st.metric("Near pairs", len(result.near_pairs), width="content",
                  help=f"Different bytes, same photo. {summary['near_breakdown']['cross_split']} across splits, "
                  f"{summary['near_breakdown']['cross_class']} across classes")
        st.metric("Test seen in train", f"{result.test_with_train_duplicate}/{result.split_size('test')}",
                  width="content", help="Test images with an exact or near duplicate in the train folder")
        st.metric("Validation seen in train",
                  f"{result.validation_with_train_duplicate}/{result.split_size('validation')}", width="content",
                  help="Validation images with an exact or near duplicate in the train folder")
    leaked = rs.manifest["dataset_summary"]["leaked"]["test"]
    if rs.config["split"] == "clean":
        st.caption(
            "These are the folder's own splits. The result set was trained on the **clean** split, which keeps "
            f"every group of copies in one split: {leaked} test images with a copy in train there."
        )
    else:
        st.caption(f"The result set was trained on these folders as they are; it records {leaked} leaked test images.")
    if result.skipped:
        st.warning(f"{len(result.skipped)} unreadable file(s) skipped.")
        with st.expander("Unreadable files"):
            st.dataframe([{"file": p, "reason": r} for p, r in result.skipped], width="stretch")

    st.subheader("Images per split and class")
    show_counts(result.counts)

    st.subheader("Sample photos")
    label = st.selectbox("Class", list(result.counts.index))
    with st.container(horizontal=True):
        for file in result.examples(label, SAMPLES_PER_CLASS):
            with st.container(width=THUMBNAIL_TILE_PX):
                show_picture(result.root, file, f"{Path(file.path).name}  \n{audit.split_name(file.folder_split)}")

    show_pairs(result)


st.title("Data")
rs = common.result_set()
folder = st.text_input(
    "Dataset folder", value=rs.data_root() or "", key=f"data-dir:{rs.root}",
    help="The folder the result set was trained on, as recorded; relative paths are from where the app runs.",
).strip()
if folder and Path(folder).expanduser().is_dir():
    show_audit(Path(folder).expanduser(), rs)
else:
    st.info(
        f"The dataset folder `{folder}` is not on this machine, so the live audit (duplicates, "
        "sample grid of the whole folder) cannot run. Below is what the result set records of its split; enter the "
        "folder above to audit it."
    )
    show_recorded(rs)
