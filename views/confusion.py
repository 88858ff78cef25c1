"""Confusion: which classes each model takes for which, per-class figures, and where two models part ways."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core import comparison, formatting, stats
from views import common, multiset

PAIR = "confusion_pair"  # (true, predicted) whose test images are shown; set by the list or a chart click
CHART = "confusion_chart"
PAIR_MODEL = "confusion_pair_model"  # the model the chosen pair was chosen for
TILE_PX = 220  # four tiles fill a 1400 px screen; each model's prediction fits on one line
MOST_TILES = 12  # per grid, the rest only counted: every photo is read from disk on first view
THUMBNAIL_SIDE = 200
PLACEHOLDER_GREY = "#d9d9d9"
TABLE_ROW_PX = 35  # Streamlit's row height: a table this tall shows every class without scrolling
CELL_PX = 22  # height of one heatmap row: tick labels at 11 px stay readable with 36 classes


@st.cache_data(show_spinner=False, max_entries=8)
def image_table(path: str, stamp: str, _rs) -> pd.DataFrame:
    """Every model's prediction per test image; ``_rs`` is left out of the cache key, path and stamp name it."""
    return comparison.image_table(_rs, list(_rs.models))


@st.cache_data(show_spinner=False, max_entries=300)
def thumbnail(path: str, stamp: str, file: str, label: str, _rs) -> Image.Image | None:
    # Cached: the dataset's photos are up to several megabytes, and every rerun would decode them again.
    return comparison.read_test_photo(_rs, file, label, THUMBNAIL_SIDE)


def pair_label(pair: tuple[str, str]) -> str:
    true, predicted = pair
    return f"{true} → {predicted}" + (" (right)" if true == predicted else "")


def take_clicked_cell() -> None:
    """A click on a heatmap cell chooses that pair, as if picked from the list."""
    points = st.session_state[CHART].selection.points
    if points:
        st.session_state[PAIR] = (points[0]["y"], points[0]["x"])


def confusion_figure(counts, normalised: bool, breaks: list[int]) -> go.Figure:
    classes = list(counts.index)
    cells = comparison.confusion_cells(counts)
    shown = comparison.row_shares(counts) if normalised else counts
    # Any non-zero cell gets at least a light blue: a single confusion must not vanish next to the diagonal.
    scale = [[0, "#ffffff"], [1e-9, "#dbe9f6"], [1, "#08306b"]]
    figure = go.Figure(go.Heatmap(
        z=shown.values, x=classes, y=classes, colorscale=scale, zmin=0, zmax=1 if normalised else None,
        text=counts.where(counts > 0, "").values, texttemplate="%{text}", textfont_size=9, hoverinfo="skip",
        colorbar=dict(title=dict(text="share of the true class" if normalised else "test images", side="right"),
                      tickformat=".0%" if normalised else "d", thickness=12),
    ))
    # Plotly cannot select heatmap cells, so invisible markers on the cells carry the hover and the click.
    figure.add_trace(go.Scatter(
        x=cells["predicted"], y=cells["true"], mode="markers", showlegend=False,
        customdata=cells[["count", "share"]].fillna(0).values,
        marker=dict(symbol="square-open", size=CELL_PX - 4, color="#e6550d", line_width=3, opacity=0),
        selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=0)),
        hovertemplate="true: %{y}<br>predicted: %{x}<br>%{customdata[0]} images, "
                      "%{customdata[1]:.0%} of the true class<extra></extra>",
    ))
    for at in breaks:
        figure.add_vline(x=at - 0.5, line=dict(color="#333", width=2))
        figure.add_hline(y=at - 0.5, line=dict(color="#333", width=2))
    ticks = dict(tickmode="array", tickvals=classes, ticktext=classes, tickfont=dict(size=11, color="#262730"),
                 showgrid=False)
    figure.update_layout(
        height=CELL_PX * len(classes) + 190, margin=dict(l=10, r=10, t=30, b=10), plot_bgcolor="white",
        # Fixed ranges: the markers would otherwise pad the axes beyond the outer cells.
        xaxis=dict(title="predicted class", tickangle=-60, range=[-0.5, len(classes) - 0.5], **ticks),
        yaxis=dict(title="true class", range=[len(classes) - 0.5, -0.5], **ticks),
        clickmode="event+select", dragmode=False,
    )
    return figure


def image_grid(rs, table: pd.DataFrame) -> None:
    """Thumbnails of test images, each with what every model predicted for it, right or wrong."""
    if table.empty:
        st.caption("No test images.")
        return
    if len(table) > MOST_TILES:
        st.caption(f"The first {MOST_TILES} of {len(table)} test images.")
    # Fixed-width tiles in a wrapping row: four side by side on a wide screen, fewer (never squeezed) on a narrow one.
    with st.container(horizontal=True):
        for row in table.head(MOST_TILES).to_dict("records"):
            with st.container(width=TILE_PX):
                image_tile(rs, row)


def image_tile(rs, row: dict) -> None:
    name = row["file"].rsplit("/", 1)[-1]
    photo = thumbnail(*common.key(rs), row["file"], row["true"], _rs=rs)
    if photo is None:
        photo, name = Image.new("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE), PLACEHOLDER_GREY), f"{name} (photo not here)"
    st.image(photo, caption=f"{row['true']} · {name}", width="stretch")
    st.caption("  \n".join(
        f":green[✓ {common.title(m)}: {row[f'{m}:pred']}]" if row[f"{m}:correct"]
        else f":red[✗ {common.title(m)}: {row[f'{m}:pred']}]"
        for m in rs.models
    ))


rs = common.result_set()
st.title("Confusion")
images = image_table(*common.key(rs), _rs=rs)
order = comparison.ordered_classes(rs)
breaks = comparison.group_breaks(order, rs.groups)

# Equal halves: a narrow screen still has room for the toggle's whole label.
left, right = st.columns(2, vertical_alignment="bottom")
with left:
    model_id = common.model_picker(rs, "Model", key_name="confusion_model")
# A pair clicked for one model says nothing about another: a new model starts without a chosen pair.
if st.session_state.get(PAIR_MODEL, model_id) != model_id:
    st.session_state.pop(PAIR, None)
st.session_state[PAIR_MODEL] = model_id
with right:
    normalised = st.toggle("Row-normalised", value=True, key="confusion_normalised",
                           help="Colour by the share of the true class; off: by the raw count of test images. "
                                "The numbers in the cells are always counts.")
counts = comparison.confusion_frame(rs.metrics(model_id)["confusion"], rs.class_names, order)
st.caption(
    "Rows are the true class, columns what the model predicted; fruits first, then vegetables (the dark lines "
    "separate them). Click a cell to see its test images below."
)
st.plotly_chart(confusion_figure(counts, normalised, breaks), key=CHART, on_select=take_clicked_cell,
                selection_mode="points", width="stretch")

pairs = comparison.most_confused(counts.values, list(counts.index), top=counts.size)
left, right = st.columns([1, 1])
with left:
    st.subheader("Most-confused pairs")
    if pairs.empty:
        st.success(f"{common.title(model_id)} classifies every test image correctly.")
    else:
        st.dataframe(formatting.percent_points(pairs.head(10), ["share of true class"]), hide_index=True,
                     width="stretch", column_config={
            "share of true class": st.column_config.NumberColumn(format=formatting.PERCENT_FORMAT),
        })
with right:
    st.subheader("Test images of a pair")
    options = list(zip(pairs["true"], pairs["predicted"]))
    chosen = st.session_state.get(PAIR)
    if chosen is not None and tuple(chosen) not in options:
        options.insert(0, tuple(chosen))  # a clicked cell that is not among the confusions (e.g. the diagonal)
    pair = st.selectbox("True → predicted", options, format_func=pair_label, key=PAIR,
                        placeholder="no confusions", help="Or click a cell of the heatmap.")
if pair is not None:
    true, predicted = pair
    st.markdown(f"**{common.title(model_id)}**: test images of **{true}** predicted as **{predicted}**")
    image_grid(rs, comparison.cell_images(images, model_id, true, predicted))

st.subheader("Per class: precision, recall, F1")
per_class = formatting.percent_points(comparison.per_class_table(rs, model_id), ["precision", "recall", "f1"])
per_class.insert(per_class.columns.get_loc("recall") + 1, "recall_interval",
                 [formatting.interval(low, high) for low, high in zip(per_class.pop("recall_low"), per_class.pop("recall_high"))])


def share_bar(name: str, help_text: str):
    return st.column_config.ProgressColumn(name, format=formatting.PERCENT_FORMAT, min_value=0, max_value=100,
                                           help=help_text)


st.dataframe(per_class, hide_index=True, width="stretch", height=TABLE_ROW_PX * (len(per_class) + 1) + 3, column_config={
    "class": st.column_config.TextColumn(pinned=True),  # stays in view when a narrow screen scrolls the figures
    "precision": share_bar("Precision", "Of the images predicted as this class, the share that are of it"),
    "recall": share_bar("Recall", "Of the images of this class, the share found: per-class accuracy"),
    "recall_interval": st.column_config.TextColumn(
        "Recall 95 %", help="Wilson interval of the recall: with about 10 test images a class, one image is 10 points"),
    "f1": share_bar("F1", "Harmonic mean of precision and recall"),
    "support": st.column_config.NumberColumn("Test images"),
})

multiset.confusion()

st.subheader("Two models compared")
others = [m for m in rs.models if m != model_id]
if not others:
    st.info("Only one model is available; there is nothing to compare it with.")
    st.stop()
other_id = common.model_picker(rs, f"Compare {common.title(model_id)} with", default=others[0],
                               key_name="confusion_other")
if other_id == model_id:
    st.info("Choose a different model to compare with.")
    st.stop()
difference = comparison.recall_difference(comparison.per_class_table(rs, model_id),
                                          comparison.per_class_table(rs, other_id))
figure = go.Figure(go.Bar(
    x=difference["class"], y=difference["difference"],
    marker_color=[common.MODEL_COLOURS[model_id if d >= 0 else other_id] for d in difference["difference"]],
    customdata=difference[["recall_first", "recall_second", "support"]].values,
    hovertemplate=f"%{{x}}: {common.title(model_id)} %{{customdata[0]:.0%}}, {common.title(other_id)} "
                  "%{customdata[1]:.0%} of %{customdata[2]} images<extra></extra>",
))
for at in comparison.group_breaks(list(difference["class"]), rs.groups):
    figure.add_vline(x=at - 0.5, line=dict(color="#333", width=2))
figure.update_layout(
    height=380, margin=dict(l=10, r=10, t=30, b=10), yaxis_tickformat="+.0%", bargap=0.25,
    xaxis=dict(tickmode="array", tickvals=list(difference["class"]), tickangle=-60, tickfont_size=11),
    yaxis_title=f"recall, {common.title(model_id)} − {common.title(other_id)}",
    title=dict(text=f"Above zero: {common.title(model_id)} finds more of the class; below: "
                    f"{common.title(other_id)} does", font_size=13),
)
st.plotly_chart(figure, width="stretch")

one_only = comparison.right_only(images, model_id, other_id)
other_only = comparison.right_only(images, other_id, model_id)
paired = stats.mcnemar_exact(images[f"{model_id}:correct"].to_numpy(), images[f"{other_id}:correct"].to_numpy())
st.markdown(
    f"Of {len(images)} test images, **{len(one_only)}** are right by {common.title(model_id)} only and "
    f"**{len(other_only)}** by {common.title(other_id)} only (exact McNemar test: {formatting.p_value(paired.p_value)}). "
    f"A class's bar rests on its own few test images (see the recall intervals above): read the bars for where "
    f"the models differ, this test for whether they do."
)
first_tab, second_tab = st.tabs([
    f"{common.title(model_id)} right, {common.title(other_id)} wrong ({len(one_only)})",
    f"{common.title(other_id)} right, {common.title(model_id)} wrong ({len(other_only)})",
])
with first_tab:
    image_grid(rs, one_only)
with second_tab:
    image_grid(rs, other_only)
