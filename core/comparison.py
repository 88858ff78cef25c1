"""Tables that compare the models of a result set, computed from what the result set stores.

Pure pandas/numpy: the dashboard lays these out, the tests check them, nothing here draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core import calibration, images, stats
from core.artifacts import TEST_TIME_VIEWS, Predictions, ResultSet, chosen_option, sample_relpath
from core.specs import MODEL_SPECS


def ordered_classes(result_set: ResultSet) -> list[str]:
    """Class names with fruits first, then vegetables, each alphabetical: confusions cluster by group."""
    groups = result_set.groups
    return sorted(result_set.class_names, key=lambda c: (groups[c] != "fruit", groups[c], c))


def accuracy_fields(metrics: dict) -> dict:
    """A table row's test-accuracy columns from a metrics.json: accuracy, its interval, images right of all."""
    low, high = metrics["accuracy_interval"]
    return {"accuracy": metrics["accuracy"], "accuracy_low": low, "accuracy_high": high,
            "correct": round(metrics["accuracy"] * metrics["n"]), "n": metrics["n"]}


def seed_accuracies(result_set: ResultSet, model_id: str) -> list[float]:
    """A model's test accuracy in each of its runs: the stored model's seed first, then the replicates'."""
    return [result_set.metrics(model_id)["accuracy"]] + [
        result_set.replicate_metrics(model_id, s)["accuracy"] for s in result_set.replicate_seeds(model_id)
    ]


def seed_pairs(result_set: ResultSet) -> pd.DataFrame:
    """Every pair of models with several seed runs each: mean accuracies, their difference, and whether it
    exceeds what the seeds alone spread.

    ``beyond_seeds``: every run of the better model beats every run of the other (their ranges over seeds do
    not overlap). Under seed noise alone, with 3 runs each, that happens 1 time in 10 (either way round).
    """
    runs = {m: seed_accuracies(result_set, m) for m in result_set.models}
    ids = [m for m in result_set.models if len(runs[m]) > 1]
    rows = []
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            better, worse = (a, b) if np.mean(runs[a]) >= np.mean(runs[b]) else (b, a)
            rows.append({
                "better": MODEL_SPECS[better].title,
                "worse": MODEL_SPECS[worse].title,
                "better_mean": float(np.mean(runs[better])),
                "worse_mean": float(np.mean(runs[worse])),
                "difference": float(np.mean(runs[better]) - np.mean(runs[worse])),
                "better_range": (min(runs[better]), max(runs[better])),
                "worse_range": (min(runs[worse]), max(runs[worse])),
                "runs": (len(runs[better]), len(runs[worse])),
                "beyond_seeds": min(runs[better]) > max(runs[worse]),
            })
    return pd.DataFrame(rows)


def overview_table(result_set: ResultSet) -> pd.DataFrame:
    """One row per available model: test figures with intervals, cost, and the study's reference."""
    rows = []
    for model_id, info in result_set.models.items():
        m = result_set.metrics(model_id)
        spec = MODEL_SPECS[model_id]
        seed_accuracy = seed_accuracies(result_set, model_id)
        seed_mean, seed_sd = stats.mean_and_spread(seed_accuracy)
        rows.append({
            "id": model_id,
            "model": spec.title,
            **accuracy_fields(m),
            "clean_accuracy": m["clean_accuracy"],
            "clean_n": m["clean_n"],
            "loss": m["loss"],
            "loss_low": m["loss_interval"][0],
            "loss_high": m["loss_interval"][1],
            "top5_accuracy": m["top5_accuracy"],
            "group_accuracy": m["group_accuracy"],
            "group_low": m["group_accuracy_interval"][0],
            "group_high": m["group_accuracy_interval"][1],
            "ece": m["ece"],
            # Temperature scaling fitted on validation (core.calibration); blank for runs stored before it.
            "temperature": m.get("calibration", {}).get("temperature"),
            "ece_scaled": m.get("calibration", {}).get("test_ece_scaled"),
            "loss_scaled": m.get("calibration", {}).get("test_loss_scaled"),
            "seed_runs": len(seed_accuracy),
            # One run says nothing about the spread: blank rather than a misleading 0.
            "seed_mean_accuracy": seed_mean if len(seed_accuracy) > 1 else None,
            "seed_sd_accuracy": seed_sd if len(seed_accuracy) > 1 else None,
            "best_epoch": info["best_epoch"],
            "epochs_run": info["epochs_run"],
            "parameters": info["parameters"],
            "trainable_parameters": info["trainable_parameters"],
            "stored_mb": info["stored_bytes"] / 1e6,
            "inference_ms": m["inference_ms"],
            "train_minutes": info["train_seconds"] / 60,
            "learning_rate": info["learning_rate"],
            "reference_accuracy": spec.reference_accuracy,
            "reference_loss": spec.reference_loss,
            "accuracy_vs_reference": m["accuracy"] - spec.reference_accuracy,
        })
    return pd.DataFrame(rows)


def test_probabilities(result_set: ResultSet, model_id: str, with_views: bool = False) -> tuple[Predictions, np.ndarray]:
    """A model's stored test predictions and their temperature-scaled probabilities (as the Classify page shows
    them); ``with_views``: with the test-time views validation took for it, where it took more than the photo."""
    metrics = result_set.metrics(model_id)
    chosen = chosen_option(metrics, TEST_TIME_VIEWS)
    stored = result_set.predictions(model_id, with_views=True) if with_views and chosen else None
    if stored is not None:
        return stored, calibration.scale(stored.probs, chosen[1]["temperature"])
    stored = result_set.predictions(model_id)
    return stored, calibration.scale(stored.probs, calibration.temperature(metrics))


def _accuracy(result_set: ResultSet, model_id: str, with_views: bool) -> float:
    metrics = result_set.metrics(model_id)
    chosen = chosen_option(metrics, TEST_TIME_VIEWS) if with_views else None
    return chosen[1]["test"]["accuracy"] if chosen else metrics["accuracy"]


def ensemble_table(result_set: ResultSet, confidence: float = 0.95) -> pd.DataFrame:
    """Soft-voting ensembles (the mean of the stored models' test probabilities, each temperature-scaled as
    the Classify page's average is): of every model, and of the ImageNet-based ones, each beside its best
    member; where every model's test-time views were measured, the same again with each model's views (as the
    Classify page's average with its switch on). Empty with fewer than two models."""
    members = {
        f"all {len(result_set.models)} models": list(result_set.models),
        "the ImageNet-based models": [m for m in result_set.models if MODEL_SPECS[m].backbone],
    }
    views_measured = all(TEST_TIME_VIEWS in result_set.metrics(m) for m in result_set.models)
    rows = []
    for with_views in (False, True) if views_measured else (False,):
        for name, ids in members.items():
            if len(ids) < 2 or (rows and ids == rows[-1]["ids"] and with_views == rows[-1]["with_views"]):
                continue
            tested = [test_probabilities(result_set, m, with_views) for m in ids]
            if any(not np.array_equal(stored.files, tested[0][0].files) for stored, _ in tested):
                raise ValueError("the models were tested on different images; an ensemble needs the same test set")
            correct = np.mean([probs for _, probs in tested], axis=0).argmax(axis=1) == tested[0][0].y_true
            k, n = int(correct.sum()), int(correct.size)
            low, high = stats.wilson_interval(k, n, confidence)
            best = max(ids, key=lambda m: _accuracy(result_set, m, with_views))
            rows.append({"ensemble": name + (", with views" if with_views else ""), "ids": ids,
                         "with_views": with_views, "accuracy": k / n, "accuracy_low": low, "accuracy_high": high,
                         "correct": k, "n": n, "best_member": MODEL_SPECS[best].title,
                         "best_member_accuracy": _accuracy(result_set, best, with_views)})
    return pd.DataFrame(rows)


def test_time_table(result_set: ResultSet, key: str) -> pd.DataFrame:
    """A test-time option per model where measured (``key``: ``artifacts.TEST_TIME_VIEWS`` or
    ``TEST_TIME_SIZES``, see ``core.testtime``): validation and test accuracy of each option (``{option:
    accuracy}``, in their order), the option validation chose against the baseline, and the test figures at it.
    Empty if no model has it."""
    rows = []
    for model_id in result_set.models:
        metrics = result_set.metrics(model_id)
        measured = metrics.get(key)
        if not measured:
            continue
        chosen = chosen_option(metrics, key)[1]["test"]
        rows.append({
            "id": model_id, "model": MODEL_SPECS[model_id].title, "baseline": measured["baseline"],
            "chosen": measured["chosen"],
            "validation_accuracy": {k: v["validation"]["accuracy"] for k, v in measured["options"].items()},
            "test_accuracy": {k: v["test"]["accuracy"] for k, v in measured["options"].items()},
            "test_chosen": chosen["accuracy"], "test_low": chosen["accuracy_interval"][0],
            "test_high": chosen["accuracy_interval"][1],
            "fixed": chosen["fixed"], "broken": chosen["broken"], "p_value": chosen["p_value"],
        })
    return pd.DataFrame(rows)


def reading(table: pd.DataFrame) -> list[str]:
    """A plain-language reading of the overview table: what is and is not a real difference."""
    if table.empty:
        return []
    table = table.sort_values("accuracy", ascending=False)
    best = table.iloc[0]
    n = int(best["n"])
    lines = [
        f"{best['model']} has the highest test accuracy: {best['accuracy']:.1%} "
        f"({int(best['correct'])} of {n} test images; 95% interval {best['accuracy_low']:.1%} to {best['accuracy_high']:.1%}). "
        f"One test image is {100 / n:.2f} points."
    ]
    overlapping = [r["model"] for _, r in table.iloc[1:].iterrows() if r["accuracy_high"] >= best["accuracy_low"]]
    separated = [r["model"] for _, r in table.iloc[1:].iterrows() if r["accuracy_high"] < best["accuracy_low"]]
    if overlapping:
        lines.append(
            f"{', '.join(overlapping)} {'lies' if len(overlapping) == 1 else 'lie'} within {best['model']}'s interval: "
            "on this test set they cannot be told apart (see Statistics for paired tests)."
        )
    if separated:
        lines.append(f"{', '.join(separated)} {'is' if len(separated) == 1 else 'are'} clearly below {best['model']}.")
    leaked = table[table["clean_n"] < table["n"]]
    if not leaked.empty:
        row = leaked.iloc[0]
        lines.append(
            f"{int(row['n'] - row['clean_n'])} of {n} test images have a duplicate in training; "
            "the clean accuracy column leaves them out."
        )
    lines.append(
        "The study's reference figures were measured on the full Kaggle test split, in which nearly every test "
        "image is a copy of a training image; differences from them are not like-for-like."
    )
    return lines


def mcnemar_tables(result_set: ResultSet, with_views: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Pairwise exact McNemar tests: p-values, counts of images the row model alone gets right, verdicts;
    ``with_views``: each model with the test-time views validation took for it, where it took any."""
    ids = list(result_set.models)
    correct, files = {}, None
    for model_id in ids:
        preds = (with_views and result_set.predictions(model_id, with_views=True)) or result_set.predictions(model_id)
        if files is not None and not np.array_equal(files, preds.files):
            raise ValueError("the models were tested on different images; paired tests need the same test set")
        files = preds.files
        correct[model_id] = preds.correct
    results = stats.pairwise_mcnemar(correct)
    titles = {m: MODEL_SPECS[m].title for m in ids}
    pvalues = pd.DataFrame(np.nan, index=[titles[m] for m in ids], columns=[titles[m] for m in ids])
    only_row = pd.DataFrame(0, index=pvalues.index, columns=pvalues.columns)
    for (a, b), r in results.items():
        pvalues.loc[titles[a], titles[b]] = r.p_value
        only_row.loc[titles[a], titles[b]] = r.only_a
    verdicts = [
        stats.mcnemar_verdict(titles[a], titles[b], results[(a, b)])
        for i, a in enumerate(ids) for b in ids[i + 1 :]
    ]
    return pvalues, only_row, verdicts


def most_confused(confusion: np.ndarray, class_names: list[str], top: int = 10) -> pd.DataFrame:
    """The largest off-diagonal cells: which true class is taken for which, how often, what share."""
    matrix = np.asarray(confusion)
    support = matrix.sum(axis=1)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    rows = []
    for flat in order:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] == 0:
            break
        rows.append({"true": class_names[i], "predicted": class_names[j], "count": int(off[i, j]),
                     "share of true class": off[i, j] / support[i]})
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share of true class"])


def per_class_table(result_set: ResultSet, model_id: str) -> pd.DataFrame:
    """Precision, recall, F1 and test images per class, with the recall's 95 % Wilson interval
    (``recall_low``, ``recall_high``): with about 10 test photos a class, one photo moves it by 10 points."""
    per_class = result_set.metrics(model_id)["per_class"]
    frame = pd.DataFrame([{"class": c, "group": result_set.groups[c], **per_class[c]} for c in ordered_classes(result_set)])
    frame = frame[frame["support"] > 0].reset_index(drop=True)
    found = (frame["recall"] * frame["support"]).round().astype(int)
    bounds = [stats.wilson_interval(k, n) for k, n in zip(found, frame["support"].astype(int))]
    return frame.assign(recall_low=[low for low, _ in bounds], recall_high=[high for _, high in bounds])


def image_table(result_set: ResultSet, model_ids: list[str]) -> pd.DataFrame:
    """One row per test image: its true class and each model's prediction, confidence and correctness. The
    confidence is temperature-scaled where the model has a fitted temperature, as the Classify page gives it."""
    names = result_set.class_names
    frame = None
    for model_id in model_ids:
        preds = result_set.predictions(model_id)
        if frame is None:
            frame = pd.DataFrame({"file": preds.files, "true": [names[i] for i in preds.y_true]})
        frame[f"{model_id}:pred"] = [names[i] for i in preds.y_pred]
        scaled = calibration.scale(preds.probs, calibration.temperature(result_set.metrics(model_id)))
        frame[f"{model_id}:conf"] = scaled.max(axis=1)
        frame[f"{model_id}:correct"] = preds.correct
    return frame if frame is not None else pd.DataFrame(columns=["file", "true"])


def seed_band(result_set: ResultSet, model_id: str, column: str) -> pd.DataFrame | None:
    """Per epoch, the mean, lowest and highest value of ``column`` over all seed runs of a model.

    None without extra seed runs. Runs stop at different epochs; an epoch counts while two runs reach it.
    """
    seeds = result_set.replicate_seeds(model_id)
    if not seeds:
        return None
    runs = [result_set.history(model_id)] + [result_set.replicate_history(model_id, s) for s in seeds]
    values = pd.concat([r.set_index("epoch")[column].rename(i) for i, r in enumerate(runs)], axis=1)
    values = values[values.notna().sum(axis=1) >= 2]
    return pd.DataFrame({"epoch": values.index, "mean": values.mean(axis=1), "low": values.min(axis=1),
                         "high": values.max(axis=1), "runs": values.notna().sum(axis=1)}).reset_index(drop=True)


def ema(values, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: exponential moving average with its start-up bias corrected."""
    values = np.asarray(values, float)
    smoothed, last, debias = np.empty_like(values), 0.0, 0.0
    for i, v in enumerate(values):
        last = weight * last + (1 - weight) * v
        debias = weight * debias + (1 - weight)
        smoothed[i] = last / debias if debias else v
    return smoothed


def confusion_frame(confusion, class_names: list[str], order: list[str]) -> pd.DataFrame:
    """The confusion matrix as a table, rows the true class and columns the predicted, both in ``order``."""
    frame = pd.DataFrame(np.asarray(confusion), index=class_names, columns=class_names)
    frame = frame.loc[order, order]
    frame.index.name, frame.columns.name = "true", "predicted"
    return frame


def row_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Each row divided by its total: the share of the true class; NaN for a class without test images."""
    totals = counts.sum(axis=1).replace(0, np.nan)
    return counts.div(totals, axis=0)


def confusion_cells(counts: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of a ``confusion_frame``: true, predicted, count, and the share of the true class."""
    cells = counts.stack().rename("count").reset_index()
    cells["share"] = cells["count"] / cells.groupby("true")["count"].transform("sum")
    return cells


def group_breaks(classes: list[str], groups: dict[str, str]) -> list[int]:
    """Positions in an ordered class list where the group changes: where the separator lines go."""
    return [i for i in range(1, len(classes)) if groups[classes[i]] != groups[classes[i - 1]]]


def recall_difference(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """Per-class accuracy (recall) of two models from their ``per_class_table``s, and first minus second."""
    merged = first[["class", "group", "support", "recall"]].merge(
        second[["class", "recall"]], on="class", suffixes=("_first", "_second")
    )
    merged["difference"] = merged["recall_first"] - merged["recall_second"]
    return merged


def right_only(table: pd.DataFrame, right: str, wrong: str) -> pd.DataFrame:
    """Rows of an ``image_table`` that model ``right`` classifies correctly and model ``wrong`` does not."""
    return table[table[f"{right}:correct"] & ~table[f"{wrong}:correct"]]


def cell_images(table: pd.DataFrame, model_id: str, true: str, predicted: str) -> pd.DataFrame:
    """Rows of an ``image_table`` in one confusion cell of a model: this true class, taken for that one."""
    return table[(table["true"] == true) & (table[f"{model_id}:pred"] == predicted)]


def choose_images(
    table: pd.DataFrame,
    true_class: str | None = None,
    model_id: str | None = None,
    correct: bool | None = None,
    disagree: bool = False,
) -> pd.DataFrame:
    """Filter an ``image_table``: by true class, by one model being right (or wrong), by the models disagreeing.

    None leaves a filter off. The models disagree on an image when their predictions are not all the same.
    """
    keep = pd.Series(True, index=table.index)
    if true_class is not None:
        keep &= table["true"] == true_class
    if model_id is not None and correct is not None:
        keep &= table[f"{model_id}:correct"] == correct
    if disagree:
        predictions = table[[c for c in table.columns if c.endswith(":pred")]]
        keep &= predictions.nunique(axis=1) > 1
    return table[keep]


def models_right(table: pd.DataFrame) -> pd.Series:
    """Per row of an ``image_table``, how many of its models classify the image correctly."""
    return table[[c for c in table.columns if c.endswith(":correct")]].sum(axis=1)


def sanity_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """Per model, the Grad-CAM randomisation check stored in its metrics (key "sanity"), if it was run.

    ``metrics`` maps model id to that model's metrics.json. A model not checked has ``checked`` False,
    ``passes`` False and NaN figures.
    """
    rows = []
    for model_id, m in metrics.items():
        check = m.get("sanity") or {}
        rows.append({
            "id": model_id,
            "checked": bool(check),
            "passes": bool(check.get("passes", False)),
            "gradcam_rank_correlation": check.get("gradcam_rank_correlation", np.nan),
            "absolute_rank_correlation": check.get("absolute_rank_correlation", np.nan),
            # Checks stored before the signed maps compared the maps as shown (after Grad-CAM's ReLU).
            "signed_maps": check.get("maps") == "signed",
            "threshold": check.get("threshold", np.nan),
            "images": check.get("images", np.nan),
            "flat_randomised": check.get("flat_randomised", np.nan),
        })
    return pd.DataFrame(rows, columns=["id", "checked", "passes", "gradcam_rank_correlation",
                                       "absolute_rank_correlation", "signed_maps", "threshold", "images",
                                       "flat_randomised"])


def find_test_photo(result_set: ResultSet, file: str, label: str) -> Path | None:
    """Where to read a test photo: under the dataset root, else its copy in the result set's samples, else None.

    ``file`` is the path stored in the predictions, relative to the dataset root; a fresh clone has only the
    result set, which keeps a small copy of every test photo (``artifacts.sample_relpath``).
    """
    root = result_set.data_root()
    candidates = [Path(root) / file] if root else []
    candidates.append(result_set.root / sample_relpath(file, label))
    return next((path for path in candidates if path.is_file()), None)


def read_test_photo(result_set: ResultSet, file: str, label: str, max_side: int) -> Image.Image | None:
    """The test photo, shrunk to fit ``max_side``; None when it cannot be found or read."""
    path = find_test_photo(result_set, file, label)
    if path is None:
        return None
    try:
        photo = images.read_image(path)
    except images.ImageError:
        return None
    photo.thumbnail((max_side, max_side))
    return photo
