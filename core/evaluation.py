"""Test-set metrics of one model, from its class probabilities, computed once and stored."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from core import stats


def evaluate(
    probs: np.ndarray,
    y_true: np.ndarray,
    class_names: list[str],
    class_groups: list[str],
    clean_mask: np.ndarray | None = None,
) -> dict:
    """Every figure the dashboard shows for one model, as plain JSON-able values.

    ``clean_mask`` marks the test images without a (near) duplicate in training; the accuracy on those
    alone is what the model does on images it has not seen.
    """
    n, num_classes = probs.shape
    y_pred = probs.argmax(axis=1)
    correct = y_pred == y_true
    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    clean_mask = np.ones(n, bool) if clean_mask is None else np.asarray(clean_mask, bool)
    bins = stats.reliability_bins(probs, y_true, n_bins=10)
    return {
        "n": int(n),
        "accuracy": float(correct.mean()),
        "accuracy_interval": stats.wilson_interval(int(correct.sum()), n),
        "loss": stats.negative_log_likelihood(probs, y_true),
        "loss_interval": stats.bootstrap_interval(
            lambda p, y: stats.negative_log_likelihood(p, y), probs, y_true
        ),
        "top5_accuracy": stats.top_k_accuracy(probs, y_true, min(5, num_classes)),
        "group_accuracy": stats.group_accuracy(probs, y_true, class_groups),
        "group_accuracy_interval": stats.bootstrap_interval(
            lambda p, y: stats.group_accuracy(p, y, class_groups), probs, y_true
        ),
        "clean_n": int(clean_mask.sum()),
        "clean_accuracy": float(correct[clean_mask].mean()) if clean_mask.any() else None,
        "clean_accuracy_interval": stats.wilson_interval(int(correct[clean_mask].sum()), int(clean_mask.sum())),
        "ece": stats.expected_calibration_error(probs, y_true, n_bins=10),
        "reliability": {
            "edges": bins.edges.tolist(),
            "confidence": _nan_to_none(bins.confidence),
            "accuracy": _nan_to_none(bins.accuracy),
            "count": bins.count.astype(int).tolist(),
        },
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _nan_to_none(values: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in values]
