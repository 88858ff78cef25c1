"""How every table of the dashboard writes its numbers: one place, so neighbouring columns agree.

Plain strings, so a table never shows ``None``, a raw float or a Streamlit format error; a missing value
is an en dash.
"""

from __future__ import annotations

import math

import pandas as pd

MISSING = "–"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def percent(value, decimals: int = 1) -> str:
    """0.793 -> '79.3 %'."""
    return MISSING if _missing(value) else f"{100 * value:.{decimals}f} %"


def signed_points(value, decimals: int = 1) -> str:
    """A difference of two proportions in percentage points: -0.1215 -> '−12.2 pp'."""
    if _missing(value):
        return MISSING
    text = f"{100 * value:+.{decimals}f} pp"
    return text.replace("-", "−")


def percent_interval(value, low, high, decimals: int = 1) -> str:
    """'79.3 % [75.1–83.0]': the estimate and its 95 % interval, in one column."""
    if _missing(value):
        return MISSING
    if _missing(low) or _missing(high):
        return percent(value, decimals)
    return f"{percent(value, decimals)} [{100 * low:.{decimals}f}–{100 * high:.{decimals}f}]"


def interval(low, high, decimals: int = 0) -> str:
    """A 95 % interval alone, for a column beside its estimate: '31–83 %'."""
    if _missing(low) or _missing(high):
        return MISSING
    return f"{100 * low:.{decimals}f}–{100 * high:.{decimals}f} %"


def mean_spread(mean, sd, runs: int, decimals: int = 1) -> str:
    """'80.4 % ± 0.8 (3)': mean, sd and number of runs, short enough for its column; the en dash for a single
    run (one run says nothing about spread)."""
    if runs < 2 or _missing(mean) or _missing(sd):
        return MISSING
    return f"{100 * mean:.{decimals}f} % ± {100 * sd:.{decimals}f} ({runs})"


def p_value(p: float) -> str:
    """A test's p-value as a reader expects it: "p = 0.11", "p = 1.0", "p < 0.001"."""
    if p < 0.001:
        return "p < 0.001"
    text = f"{p:.2g}"
    if "." not in text and "e" not in text:
        # ".2g" renders 1.0 as "1", which reads like a count rather than a p.
        text += ".0"
    return f"p = {text}"


def openset_figures(measured: dict, hardest: int) -> str:
    """One detector's held-out-protocol figures (``openset.held_out_protocol``) in a line."""
    classes = ", ".join(f"{c} {a:.2f}" for c, a in list(measured["class_auroc"].items())[:hardest])
    return (f"AUROC {measured['auroc']:.3f} · known test photos kept {measured['known_test_kept']:.1%} · unknown photos "
            f"accepted {measured['unknown_accepted']:.1%} · hardest held-out classes (AUROC): {classes}")


def number(value, decimals: int = 3) -> str:
    return MISSING if _missing(value) else f"{value:.{decimals}f}"


def compact(value) -> str:
    """23587712 -> '23.6 M'."""
    if _missing(value):
        return MISSING
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f}"


def percent_points(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """Shares (0..1) as percentages (0..100), for a table column that keeps numbers (to sort or draw a bar)
    and shows them with ``PERCENT_FORMAT``: the same one decimal as every ``percent`` string."""
    return frame.assign(**{column: 100 * frame[column] for column in columns})


def by_option(accuracies: dict[str, float]) -> str:
    """{"224": 0.833, "288": 0.843} -> "224: 83.3 · 288: 84.3" (test-time options, in their order; % said by the
    header)."""
    return " · ".join(f"{option}: {100 * accuracy:.1f}" for option, accuracy in accuracies.items())


def test_time_display(options: pd.DataFrame, unit: str = "") -> pd.DataFrame:
    """The rows of ``comparison.test_time_table`` as the Overview shows them: one column per option (validation
    and test accuracy, "83.3 · 88.0", with a tick at the one validation chose; MISSING where a model was not
    measured with it; ``unit`` after its name), then the test figures of the option taken against the baseline
    ("none" where validation kept the baseline)."""
    columns = list(dict.fromkeys(option for row in options.itertuples() for option in row.validation_accuracy))
    shown = {"Model": list(options["model"])}
    for option in columns:
        shown[f"{option}{unit}"] = [
            f"{100 * row.validation_accuracy[option]:.1f} · {100 * row.test_accuracy[option]:.1f}"
            + (" ✓" if option == row.chosen else "") if option in row.validation_accuracy else MISSING
            for row in options.itertuples()]
    taken = [row.chosen != row.baseline for row in options.itertuples()]
    shown["Taken: test [95 %]"] = [percent_interval(row.test_chosen, row.test_low, row.test_high) if was else "none"
                                   for row, was in zip(options.itertuples(), taken)]
    shown["Fixed / broken"] = [f"{row.fixed} / {row.broken} ({p_value(row.p_value)})" if was else MISSING
                               for row, was in zip(options.itertuples(), taken)]
    return pd.DataFrame(shown)


PERCENT_FORMAT = "%.1f %%"

# The Overview as shown: two tables, each fitting a 1400 px screen without sideways scrolling; every cell a
# string. Per table: shown name -> (builder from one overview_table row, numeric column that decides "best",
# higher is better).
OVERVIEW_COLUMNS = {
    "accuracy": {
        "Model": (lambda r: r["model"], None, None),
        "Accuracy [95 % interval]": (lambda r: percent_interval(r["accuracy"], r["accuracy_low"], r["accuracy_high"]),
                                     "accuracy", True),
        "Clean acc.": (lambda r: percent(r["clean_accuracy"]), "clean_accuracy", True),
        "Top-5": (lambda r: percent(r["top5_accuracy"]), "top5_accuracy", True),
        "Fruit/veg acc.": (lambda r: percent(r["group_accuracy"]), "group_accuracy", True),
        "Loss": (lambda r: number(r["loss"]), "loss", False),
        "ECE": (lambda r: number(r["ece"]), "ece", False),
        "Seeds: mean ± sd (runs)": (lambda r: mean_spread(r["seed_mean_accuracy"], r["seed_sd_accuracy"],
                                                   int(r["seed_runs"])), None, None),
        "Study acc. (Δ)": (lambda r: f"{percent(r['reference_accuracy'])} ({signed_points(r['accuracy_vs_reference'])})",
                           None, None),
    },
    "cost": {
        "Model": (lambda r: r["model"], None, None),
        "Epochs (best)": (lambda r: f"{int(r['epochs_run'])} ({int(r['best_epoch'])})", None, None),
        "Parameters": (lambda r: compact(r["parameters"]), None, None),
        "ms / image": (lambda r: number(r["inference_ms"], 0), "inference_ms", False),
        # No "best": the first model on a backbone may also pay for the frozen trunk pass a later one reuses.
        "Train min": (lambda r: number(r["train_minutes"], 1), None, None),
    },
}


def overview_display(table, part: str = "accuracy"):
    """The rows of ``comparison.overview_table`` as the strings of one Overview table (``part``: a key of
    ``OVERVIEW_COLUMNS``), plus a same-shaped boolean frame marking the best value of each column where
    "best" has a direction."""
    columns = OVERVIEW_COLUMNS[part]
    shown = pd.DataFrame({name: [build(row) for _, row in table.iterrows()]
                          for name, (build, _, _) in columns.items()}, index=table.index)
    best = pd.DataFrame(False, index=table.index, columns=shown.columns)
    for name, (_, source, higher) in columns.items():
        if source is not None and table[source].notna().any():
            best[name] = table[source] == (table[source].max() if higher else table[source].min())
    return shown, best


def _photo_path(file: str) -> tuple[str, str | None]:
    """'train/apple/Image_10.jpg' -> ('Image_10.jpg', 'train'); no split folder -> (name, None)."""
    *folders, name = file.replace("\\", "/").split("/")
    return name, (folders[0] if len(folders) >= 2 else None)


def test_photo(file: str) -> str:
    """A test photo named by file and origin, not by its dataset path ('train/apple/Image_10.jpg' next to
    "test split" reads as a training photo): "Image_10.jpg (dataset folder train/)"."""
    name, folder = _photo_path(file)
    return name if folder is None else f"{name} (dataset folder {folder}/)"


def test_photo_origin(file: str) -> str:
    """The same, in a sentence that also says where the photo is now: "Image_10.jpg, from the dataset's
    train/ folder; in this result set's test split"."""
    name, folder = _photo_path(file)
    where = f", from the dataset's {folder}/ folder;" if folder else ","
    return f"{name}{where} in this result set's test split"


def accuracy_columns(table: pd.DataFrame) -> dict[str, list[str]]:
    """A reference table's accuracy with its interval and its count of photos right, as displayed."""
    return {
        "Accuracy [95 % interval]": [
            percent_interval(r.accuracy, r.accuracy_low, r.accuracy_high) for r in table.itertuples()
        ],
        "Correct": [f"{r.correct} of {r.n}" for r in table.itertuples()],
    }
