"""What every page shares: the result-set chooser, cached loading, model colours and names."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core import artifacts, comparison
from core.specs import MODEL_IDS, MODEL_SPECS

DEFAULT_ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# One colour per model, the same on every page (Plotly's qualitative "D3" palette).
MODEL_COLOURS = dict(zip(MODEL_IDS, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")))
MAKE_ONE = """python scripts/train.py --data-dir PATH/TO/fruitveg --weights-dir PATH/TO/weights --out artifacts
streamlit run app.py"""


def title(model_id: str) -> str:
    return MODEL_SPECS[model_id].title


def sidebar() -> None:
    """The result-set chooser; the choice lives in the session, so every page reads the same set."""
    if "artifacts" not in st.session_state:
        st.session_state["artifacts"] = os.environ.get("FRUITVEG_ARTIFACTS") or str(DEFAULT_ARTIFACTS)
    with st.sidebar:
        st.text_input(
            "Result set folder",
            key="artifacts",
            help="A folder written by scripts/train.py. The shipped one is artifacts/.",
        )


def _stamp(path: Path) -> str:
    """Changes whenever the result set is rewritten, so cached tables never outlive it."""
    try:
        stat = (path / artifacts.MANIFEST).stat()
        return f"{stat.st_mtime_ns}:{stat.st_size}"
    except OSError:
        return "absent"


@st.cache_resource(show_spinner="Checking the result set…", max_entries=4)
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
    path = Path(st.session_state.get("artifacts") or DEFAULT_ARTIFACTS).expanduser()
    try:
        rs = cached_result_set(str(path), _stamp(path))
    except artifacts.ResultSetError as err:
        st.error(f"No usable result set: {err}")
        st.markdown("Make one by training the models, then start the app again:")
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
