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


def catalogue() -> resultsets.Catalogue:
    """The chosen folders opened, named among themselves and the shipped sets (the same name everywhere)."""
    return resultsets.open_sets(st.session_state[CHOSEN], opener=open_cached, offered=resultsets.discover())


def _initial_choice() -> list[str]:
    """FRUITVEG_ARTIFACTS may name several folders, separated like PATH (":" here), to compare at start;
    without it, every shipped set is chosen, so the Overview opens with the comparison (artifacts/ first)."""
    chosen = st.session_state.get("artifacts") or os.environ.get("FRUITVEG_ARTIFACTS")
    if not chosen:
        return [str(folder) for folder in resultsets.discover()] or [str(DEFAULT_ARTIFACTS)]
    return [folder for folder in chosen.split(os.pathsep) if folder]


def _pick() -> None:
    """Multiselect change -> CHOSEN, keeping a typed folder that did not open (it stays in the text box)."""
    before = catalogue()
    picked = [str(before.offered[name].root) for name in st.session_state[PICKED] if name in before.offered]
    st.session_state[CHOSEN] = picked + list(before.rejected)


def _type() -> None:
    """A typed folder comes first (single-set pages show it); it replaces one typed before that did not open."""
    typed = st.session_state[TYPED].strip()
    rest = [f for f in st.session_state[CHOSEN] if f not in catalogue().rejected and f != typed]
    st.session_state[CHOSEN] = ([typed] if typed else []) + rest


def sidebar() -> resultsets.Catalogue:
    """The result-set chooser. Widgets forget their state when the page changes, so the choice is kept
    under CHOSEN and the widgets are refilled from it on every run of every page: the multiselect holds the
    sets that opened, the text box a chosen folder that did not (with the reason below it)."""
    if CHOSEN not in st.session_state:
        st.session_state[CHOSEN] = _initial_choice()
    chosen = catalogue()
    st.session_state[PICKED] = list(chosen.sets)
    st.session_state[TYPED] = next(iter(chosen.rejected), "")
    with st.sidebar:
        st.multiselect(
            "Result sets",
            list(chosen.offered),
            key=PICKED,
            on_change=_pick,
            placeholder="Choose a result set",
            help="Shipped result sets and any folder added below, named by what sets them apart: split, "
            "recipe, and image size, seeds or weights where those differ. Pages that show one set show the "
            "first chosen that holds a model (Classify: one with weights), marked below; Overview, Training "
            "curves, Confusion and Statistics compare several.",
        )
        st.text_input(
            "Add a result-set folder",
            key=TYPED,
            on_change=_type,
            placeholder="/path/to/result-set",
            help="A folder written by scripts/train.py; it is added first, so single-set pages show it.",
        )
        for folder, why in chosen.rejected.items():
            st.warning(f"Not added: {folder or '(blank)'}: {why}")
    return chosen


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


def result_set(with_weights: bool = False) -> artifacts.ResultSet:
    """The first chosen result set that holds a model (``with_weights``: preferably one that can classify);
    otherwise explains how to make one and stops the page.

    It also draws the chooser: every page calls this once, also when Streamlit runs a page file on its
    own (the first request of a fresh server to a page's address, before app.py has run).
    """
    st.set_page_config(page_title="Fruit & Vegetable Model Lab", page_icon="🥕", layout="wide")
    chosen = sidebar()
    usable = [rs for rs in chosen.sets.values() if rs.models]
    if with_weights:
        usable.sort(key=lambda rs: not any(rs.has_weights(m) for m in rs.models))  # stable: chosen order kept
    if len(chosen.sets) > 1:  # the chips above cut long names short
        st.sidebar.markdown("\n".join(
            f"{i}. {name}" + (" — *shown here*" if usable and rs is usable[0] else "")
            + ("" if rs.models else " — *no model finished yet*")
            for i, (name, rs) in enumerate(chosen.sets.items(), 1)
        ))
    if not chosen.sets:
        if chosen.rejected:
            st.error("No usable result set: " + "; ".join(chosen.rejected.values()))
        else:
            st.info("Choose a result set in the sidebar.")
        st.markdown("Make one by training the models, then enter its folder in the sidebar (no restart needed):")
        st.code(MAKE_ONE, language="bash")
        st.stop()
    if not usable:
        st.error("No chosen result set holds a usable model yet.")
        _problems(next(iter(chosen.sets.values())))
        st.code(MAKE_ONE, language="bash")
        st.stop()
    _problems(usable[0])
    return usable[0]


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


def model_picker(rs: artifacts.ResultSet, label: str, default=None, key_name=None):
    ids = list(rs.models)
    index = ids.index(default) if default in ids else 0
    return st.selectbox(label, ids, index=index, format_func=title, key=key_name)
