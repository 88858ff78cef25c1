"""What every page shares: the result-set chooser, cached loading, model colours and names."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core import artifacts, comparison, resultsets
from core.specs import MODEL_IDS, MODEL_SPECS

DEFAULT_ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# One colour per model, the same on every page (Plotly's qualitative "D3" palette).
MODEL_COLOURS = dict(zip(MODEL_IDS, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")))
MAKE_ONE = """python scripts/train.py --data-dir PATH/TO/fruitveg --weights-dir PATH/TO/weights --out artifacts
streamlit run app.py"""


def title(model_id: str) -> str:
    return MODEL_SPECS[model_id].title


CHOSEN = "result_sets"  # the one source of truth: chosen folders, in order; survives page changes
PICKED, TYPED = "picked_result_sets", "typed_result_set"  # widget keys, refilled from CHOSEN every run


def open_cached(folder) -> artifacts.ResultSet:
    return cached_result_set(str(folder), _stamp(Path(folder)))


def shipped_sets() -> dict[str, str]:
    """Name -> folder of every result set shipped with the project (artifacts/ and results/*)."""
    catalogue = resultsets.open_sets(resultsets.discover(), opener=open_cached)
    return {name: str(rs.root) for name, rs in catalogue.sets.items()}


def _initial_choice() -> list[str]:
    """FRUITVEG_ARTIFACTS may name several folders, separated like PATH (":" here), to compare at start."""
    chosen = st.session_state.get("artifacts") or os.environ.get("FRUITVEG_ARTIFACTS") or str(DEFAULT_ARTIFACTS)
    return [folder for folder in chosen.split(os.pathsep) if folder]


def _choose() -> None:
    """Widget change -> CHOSEN: a typed folder first (the one single-set pages show), then the picked ones."""
    shipped = shipped_sets()
    typed = (st.session_state.get(TYPED) or "").strip()
    picked = [shipped[name] for name in st.session_state.get(PICKED, []) if name in shipped]
    st.session_state[CHOSEN] = ([typed] if typed else []) + [p for p in picked if p != typed]


def sidebar() -> None:
    """The result-set chooser. Widgets forget their state when the page changes, so the choice is kept
    under CHOSEN and the widgets are refilled from it on every run of every page."""
    if CHOSEN not in st.session_state:
        st.session_state[CHOSEN] = _initial_choice()
    shipped = shipped_sets()
    by_folder = {os.path.realpath(folder): name for name, folder in shipped.items()}
    chosen = st.session_state[CHOSEN]
    st.session_state[PICKED] = [by_folder[os.path.realpath(f)] for f in chosen if os.path.realpath(f) in by_folder]
    st.session_state[TYPED] = next((f for f in chosen if os.path.realpath(f) not in by_folder), "")
    with st.sidebar:
        st.multiselect(
            "Result sets",
            list(shipped),
            key=PICKED,
            on_change=_choose,
            help="Shipped result sets, named by split, recipe, image size and seeds. Pages that show one "
            "set show the first chosen; Overview, Training curves, Confusion and Statistics compare several.",
        )
        st.text_input(
            "Add a result-set folder",
            key=TYPED,
            on_change=_choose,
            help="A folder written by scripts/train.py; it comes first and is the one single-set pages show.",
        )


def chosen_sets() -> resultsets.Catalogue:
    """The chosen folders opened and named; folders that are not result sets are reported and left out."""
    catalogue = resultsets.open_sets(st.session_state.get(CHOSEN) or _initial_choice(), opener=open_cached)
    for folder, why in catalogue.rejected.items():
        st.sidebar.warning(f"Not added: {folder or '(blank)'}: {why}")
    return catalogue


def _stamp(path: Path) -> str:
    """Changes whenever the result set is rewritten, so cached tables never outlive it."""
    try:
        stat = (path / artifacts.MANIFEST).stat()
        return f"{stat.st_mtime_ns}:{stat.st_size}"
    except OSError:
        return "absent"


@st.cache_resource(show_spinner="Checking the result set…", max_entries=12)
def cached_result_set(path: str, stamp: str) -> artifacts.ResultSet:
    """Opened and verified once per process and version of the result set."""
    return artifacts.open_result_set(path)


def result_set() -> artifacts.ResultSet:
    """The chosen, verified result set; otherwise explains how to make one and stops the page.

    It also draws the chooser: every page calls this once, also when Streamlit runs a page file on its
    own (the first request of a fresh server to a page's address, before app.py has run).
    """
    st.set_page_config(page_title="Fruit & Vegetable Model Lab", page_icon="🥕", layout="wide")
    sidebar()
    catalogue = chosen_sets()
    first = next(iter(catalogue.sets.values()), None)
    path = first.root if first else Path(next(iter(catalogue.rejected), "") or DEFAULT_ARTIFACTS).expanduser()
    if len(catalogue.sets) > 1:
        st.sidebar.caption(f"Pages that show one set show: {next(iter(catalogue.sets))}")
    try:
        rs = cached_result_set(str(path), _stamp(path))
    except artifacts.ResultSetError as err:
        st.error(f"No usable result set: {err}")
        st.markdown("Make one by training the models, then enter its folder in the sidebar (no restart needed):")
        st.code(MAKE_ONE, language="bash")
        st.stop()
    if not rs.models:
        st.error("This result set holds no usable model.")
        _problems(rs)
        st.code(MAKE_ONE, language="bash")
        st.stop()
    _problems(rs)
    return rs


def _problems(rs: artifacts.ResultSet) -> None:
    if rs.problems:
        listed = "\n".join(f"- **{title(m)}** (`{m}`): {reason}" for m, reason in rs.problems.items())
        st.warning(f"Not shown, {len(rs.problems)} of 6 models:\n{listed}")


def key(rs: artifacts.ResultSet) -> tuple[str, str]:
    """Cache key for data derived from a result set."""
    return str(rs.root), _stamp(rs.root)


@st.cache_data(show_spinner=False, max_entries=8)
def overview_table(path: str, stamp: str):
    return comparison.overview_table(cached_result_set(path, stamp))


def model_picker(rs: artifacts.ResultSet, label: str, default=None, multi=False, key_name=None):
    ids = list(rs.models)
    if multi:
        return st.multiselect(label, ids, default=default or ids, format_func=title, key=key_name)
    index = ids.index(default) if default in ids else 0
    return st.selectbox(label, ids, index=index, format_func=title, key=key_name)
