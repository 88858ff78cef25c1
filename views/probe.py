"""The linear-probe reference on the Overview and Statistics pages: beside the six models, never one of them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import formatting, probe
from core.artifacts import ResultSet

HEADING = "Reference: linear probe (frozen VGG16/ResNet50 + logistic regression)"
ABSENT = "This result set has no linear probe; `scripts/evaluate.py --linear-probe` adds one."


def _flags(tests: pd.DataFrame) -> None:
    lines = probe.flags(tests)
    if lines:
        st.markdown("\n".join(f"- {line}" for line in lines))


def overview(rs: ResultSet) -> None:
    """The probe's own small table, and a flag for each fine-tuned model that does not beat its backbone's."""
    st.subheader(HEADING)
    table = probe.reference_table(rs)
    if table.empty:
        st.caption(ABSENT)
        return
    st.dataframe(
        pd.DataFrame({
            "Reference": table["model"],
            **formatting.accuracy_columns(table),
            "NLL": table["loss"].map(formatting.number),
            "Fruit/veg": table["group_accuracy"].map(formatting.percent),
            "C": table["C"].map(lambda c: f"{c:.3g}"),
            "Validation acc.": table["validation_accuracy"].map(formatting.percent),
        }),
        hide_index=True,
    )
    _flags(probe.paired_tests(rs))
    st.caption(
        "Not a seventh model: the untouched ImageNet backbone's pooled features read by a logistic regression "
        "fitted on the same training photos, C chosen on the validation photos, tested on the same test photos. "
        "A fine-tuned model is flagged ⚠ unless it is right on significantly more test photos than its own "
        "backbone's probe (exact McNemar, p < 0.05; Statistics has every pair) and, where it has several seeds, "
        "its mean margin over the probe is larger than their SD."
    )


def statistics(rs: ResultSet) -> None:
    """Every model against each probe in the paired test, own-backbone pairs flagged where not beaten."""
    st.subheader("Against the linear probe (exact McNemar)")
    tests = probe.paired_tests(rs)
    if tests.empty:
        st.caption(ABSENT)
        return
    tests["cell"] = [
        f"{'⚠ ' if r.own_backbone and not r.beats_probe else ''}{r.only_model} vs {r.only_probe}, "
        f"{formatting.p_value(r.p_value)}" for r in tests.itertuples()
    ]
    grid = tests.pivot(index="model", columns="probe", values="cell").reindex(tests["model"].unique())
    st.dataframe(grid.rename_axis("Model").reset_index(), hide_index=True)
    _flags(tests)
    st.caption(
        "Cell: test photos the model alone gets right vs the probe alone, and the exact McNemar p-value. "
        "⚠: a fine-tuned model that does not beat its own frozen backbone's probe."
    )
