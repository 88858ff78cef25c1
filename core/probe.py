"""The linear probe: what the untouched ImageNet backbones give without any fine-tuning, a reference row.

Features: each frozen backbone's global-average-pooled last feature map (``core.features``) of the photos of
the result set's recorded splits. Classifier: multinomial logistic regression on standardised features,
fitted on the training photos only; its regularisation C is the one with the lowest validation log-loss
(the test split is never looked at), and it is then tested on the same test photos as the six models.

A fine-tuned ImageNet model that does not beat its own backbone's probe in the paired (exact McNemar) test
is flagged: on this test set, its fine-tuning adds nothing measurable over reading the frozen backbone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core import formatting, stats
from core.artifacts import Predictions, ResultSet
from core.comparison import accuracy_fields, seed_accuracies
from core.specs import BACKBONES, MODEL_SPECS

C_GRID = tuple(float(c) for c in np.logspace(-4, 1, 11))
ALPHA = 0.05  # level of the paired test that decides whether a model beats its probe
METHOD = "logistic regression (multinomial, L2) on standardised global-average-pooled frozen ImageNet features"


def title(backbone: str) -> str:
    return f"Linear probe ({BACKBONES[backbone].title})"


def _classifier(c: float):
    # scikit-learn only loads for fitting: the pages import this module just to read a stored probe.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def _probs(classifier, features: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities over all classes (a class without training photos gets 0)."""
    out = np.zeros((len(features), num_classes), np.float32)
    out[:, classifier.classes_] = classifier.predict_proba(features)
    return out


def fit(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int, grid=C_GRID):
    """``features[split]``: (N, D) for train/validation/test -> (test probabilities, the choice of C).

    Every C of the grid is fitted on train and scored on validation; the lowest validation log-loss wins.
    """
    tried = []
    for c in grid:
        classifier = _classifier(c).fit(features["train"], labels["train"])
        probs = _probs(classifier, features["validation"], num_classes)
        tried.append({
            "C": c,
            "accuracy": float((probs.argmax(axis=1) == labels["validation"]).mean()),
            "loss": stats.negative_log_likelihood(probs, labels["validation"]),
            "classifier": classifier,
        })
    best = min(tried, key=lambda t: t["loss"])
    choice = {
        "C": best["C"],
        "validation_accuracy": best["accuracy"],
        "validation_loss": best["loss"],
        "grid": [{k: t[k] for k in ("C", "accuracy", "loss")} for t in tried],
    }
    return _probs(best["classifier"], features["test"], num_classes), choice


def measure(result_set: ResultSet, features: dict, labels: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Fit and test one probe per backbone of ``features[split][backbone]``; the result set's stored form.

    ``features``/``labels`` as ``core.features.split_features`` returns them for the result set's splits.
    """
    from core.evaluation import evaluate  # loads TensorFlow; the pages only read what this wrote

    plan = result_set.dataset()
    test_files = [f for f, _ in plan["files"]["test"]]
    clean_mask = ~np.isin(test_files, plan["leaked"]["test"])
    info = {
        "method": METHOD,
        "selection": "C with the lowest validation log-loss; fitted on the training photos only",
        "image_size": int(result_set.config["image_size"]),
        "train_photos": len(labels["train"]),
        "validation_photos": len(labels["validation"]),
        "backbones": {},
    }
    arrays = {"files": np.array(test_files), "y_true": labels["test"]}
    for backbone in features["train"]:
        split = {s: features[s][backbone] for s in ("train", "validation", "test")}
        probs, choice = fit(split, labels, len(result_set.class_names))
        metrics = evaluate(probs, labels["test"], result_set.class_names, result_set.class_groups, clean_mask)
        info["backbones"][backbone] = {**choice, "feature_dims": int(split["train"].shape[1]), "metrics": metrics}
        arrays[f"{backbone}.probs"] = probs
    return info, arrays


# ---------------------------------------------------------------- what the pages show


def reference_table(result_set: ResultSet) -> pd.DataFrame:
    """One row per probed backbone (empty when the result set has no probe), columns like the overview's."""
    stored = result_set.linear_probe()
    rows = []
    for backbone, entry in (stored[0]["backbones"] if stored else {}).items():
        m = entry["metrics"]
        rows.append({
            "backbone": backbone,
            "model": title(backbone),
            **accuracy_fields(m),
            "loss": m["loss"],
            "group_accuracy": m["group_accuracy"],
            "C": entry["C"],
            "validation_accuracy": entry["validation_accuracy"],
        })
    return pd.DataFrame(rows)


def _paired(model: Predictions, probe: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of a model and a probe on the test photos both answered, matched by file."""
    at = {f: i for i, f in enumerate(probe.files)}
    rows = [(i, at[f]) for i, f in enumerate(model.files) if f in at]
    mine, theirs = (np.array(r, int) for r in zip(*rows)) if rows else (np.zeros(0, int),) * 2
    return model.correct[mine], probe.correct[theirs]


def paired_tests(result_set: ResultSet) -> pd.DataFrame:
    """Every model against every probe: exact McNemar counts, p-value, verdict; own backbone marked.

    ``beats_probe``: the model is right on significantly more of the paired photos (p < ALPHA). Only rows
    with ``own_backbone`` (a fine-tuned model against its frozen backbone) are flagged when it is False.
    """
    stored = result_set.linear_probe()
    rows = []
    for backbone, probe in (stored[1] if stored else {}).items():
        for model_id in result_set.models:
            model_correct, probe_correct = _paired(result_set.predictions(model_id), probe)
            result = stats.mcnemar_exact(model_correct, probe_correct)
            runs = seed_accuracies(result_set, model_id)
            seed_mean, seed_sd = stats.mean_and_spread(runs)
            rows.append({
                "id": model_id,
                "model": MODEL_SPECS[model_id].title,
                "backbone": backbone,
                "probe": title(backbone),
                "own_backbone": MODEL_SPECS[model_id].backbone == backbone,
                "n": len(model_correct),
                "model_accuracy": float(model_correct.mean()) if len(model_correct) else float("nan"),
                "probe_accuracy": float(probe_correct.mean()) if len(probe_correct) else float("nan"),
                "only_model": result.only_a,
                "only_probe": result.only_b,
                "p_value": result.p_value,
                "beats_probe": result.p_value < ALPHA and result.only_a > result.only_b,
                # Over the model's seed runs (the probe has no seed): is its margin larger than their spread?
                "seed_runs": len(runs),
                "seed_margin": seed_mean - float(probe_correct.mean()) if len(probe_correct) else float("nan"),
                "seed_sd": seed_sd,
                "verdict": stats.mcnemar_verdict(MODEL_SPECS[model_id].title, title(backbone), result, ALPHA),
            })
    return pd.DataFrame(rows)


def flags(tests: pd.DataFrame) -> list[str]:
    """One sentence per fine-tuned ImageNet model against its own backbone's probe; ⚠ where not beaten: not
    significantly better on the test photos, or (with several seeds) a mean margin within the seeds' spread.

    A model whose backbone has no probe in the set (only some backbones probed) is said to be not compared.
    """
    if tests.empty:
        return []
    lines = []
    for model_id, model in tests.drop_duplicates("id")[["id", "model"]].itertuples(index=False):
        backbone = MODEL_SPECS[model_id].backbone
        if backbone is not None and backbone not in set(tests["backbone"]):
            lines.append(f"{model} is not compared: this result set has no {BACKBONES[backbone].title} probe.")
    for row in tests[tests["own_backbone"]].itertuples():
        figures = (
            f"{formatting.percent(row.model_accuracy)} vs {formatting.percent(row.probe_accuracy)} test accuracy; "
            f"right where the other is wrong on {row.only_model} vs {row.only_probe} photos, "
            f"{formatting.p_value(row.p_value)}"
        )
        beyond_seeds = True
        if row.seed_runs > 1:
            beyond_seeds = row.seed_margin > row.seed_sd
            figures += (f"; mean of {row.seed_runs} seeds {100 * row.seed_margin:+.1f} points, "
                        f"{'more' if beyond_seeds else 'not more'} than their spread (SD {100 * row.seed_sd:.1f} points)")
        if row.beats_probe and beyond_seeds:
            lines.append(f"{row.model} beats its backbone's linear probe ({figures}).")
        elif beyond_seeds and row.seed_runs > 1:
            lines.append(f"⚠ {row.model} is above its backbone's linear probe over its seeds, but not significantly "
                         f"on the paired test photos ({figures}).")
        else:
            lines.append(f"⚠ {row.model} does not beat its backbone's linear probe ({figures}).")
    return lines
