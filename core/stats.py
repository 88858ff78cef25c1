"""Statistics for comparing classifiers evaluated on one shared test set.

The dashboard compares a handful of models on a few hundred test images, so
every headline number carries real sampling noise.  This module supplies the
pieces needed to say how much: binomial and bootstrap intervals, the exact
McNemar test for paired per-image correctness, and calibration / probabilistic
scores computed from predicted class probabilities.

Conventions used throughout:

* ``probs`` is an ``(N, C)`` array of predicted class probabilities (rows are
  expected to sum to about 1; nothing here renormalises them).
* ``y_true`` is an ``(N,)`` array of integer class indices into ``probs``.
* Only numpy and scipy are used so the module stays importable anywhere
  (tests, notebooks, the Streamlit app) without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import binom, norm

from core import formatting

__all__ = [
    "McNemarResult",
    "ReliabilityBins",
    "binary_group_probs",
    "bootstrap_interval",
    "expected_calibration_error",
    "group_accuracy",
    "mcnemar_exact",
    "mcnemar_verdict",
    "mean_and_spread",
    "negative_log_likelihood",
    "pairwise_mcnemar",
    "reliability_bins",
    "top_k_accuracy",
    "wilson_interval",
]


# --------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _check_probs(probs: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coerce and validate a (probs, labels) pair.

    Done in one place so every metric fails loudly and identically on shape
    mistakes instead of silently broadcasting into a wrong number.
    """
    p = np.asarray(probs, dtype=float)
    y = np.asarray(y_true)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, C), got shape {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(
            f"y_true must be 1-D with {p.shape[0]} entries, got shape {y.shape}"
        )
    if p.shape[0] == 0:
        raise ValueError("need at least one sample")
    if not np.issubdtype(y.dtype, np.integer):
        # Float labels like 3.0 are common after a pandas round-trip; accept
        # them only when they are exactly integral.
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("y_true must contain integer class indices")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true entries must lie in [0, {p.shape[1] - 1}]")
    return p, y


# --------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Preferred over the normal (Wald) interval because accuracies here sit near
    1, where Wald intervals collapse or spill past 1.  ``n == 0`` carries no
    information, so the whole unit interval is returned.
    """
    _check_confidence(confidence)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    z = float(norm.ppf(0.5 + confidence / 2.0))
    z2 = z * z
    p_hat = successes / n
    denom = 1.0 + z2 / n
    centre = (p_hat + z2 / (2.0 * n)) / denom
    half = (z / denom) * np.sqrt(p_hat * (1.0 - p_hat) / n + z2 / (4.0 * n * n))
    lo = centre - half
    hi = centre + half
    # Algebraically the bound is exactly 0 at k = 0 and exactly 1 at k = n,
    # but cancellation leaves ~1e-20 residue that would exclude k/n itself.
    if successes == 0:
        lo = 0.0
    if successes == n:
        hi = 1.0
    return (float(max(0.0, lo)), float(min(1.0, hi)))


def bootstrap_interval(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for ``statistic(*arrays)``.

    Rows are resampled with replacement and the *same* row indices are applied
    to every array, which keeps paired quantities (labels with predictions,
    two models' correctness on one image) aligned.  All indices are drawn in
    one call so the result depends only on ``seed``; the statistic itself is
    applied per resample because it is arbitrary user code.
    """
    _check_confidence(confidence)
    if not arrays:
        raise ValueError("need at least one array to resample")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0] if arrs[0].ndim else 0
    if n == 0:
        raise ValueError("arrays must be non-empty along the first axis")
    if any(a.ndim == 0 or a.shape[0] != n for a in arrs):
        raise ValueError("all arrays must have the same length along the first axis")

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    stats = np.fromiter(
        (float(statistic(*(a[row] for a in arrs))) for row in idx),
        dtype=float,
        count=n_resamples,
    )
    alpha = 1.0 - confidence
    # nanpercentile: a statistic can be undefined on an unlucky resample
    # (e.g. a class missing entirely); dropping those beats poisoning the CI.
    lo, hi = np.nanpercentile(stats, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return (float(lo), float(hi))


# --------------------------------------------------------------------------
# Paired comparison: exact McNemar
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarResult:
    """Discordant counts and exact two-sided p-value for a model pair."""

    only_a: int  # images model A gets right and model B gets wrong
    only_b: int  # images model B gets right and model A gets wrong
    p_value: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """Exact (binomial) two-sided McNemar test on paired correctness.

    Only discordant images carry evidence about which model is better; under
    the null each is equally likely to favour either model, hence
    Binomial(b + c, 1/2).  The exact form is used because with a few hundred
    test images the discordant count is often small enough for the chi-square
    approximation to mislead.
    """
    a = np.asarray(correct_a)
    b_arr = np.asarray(correct_b)
    if a.ndim != 1 or b_arr.ndim != 1:
        raise ValueError("correct_a and correct_b must be 1-D")
    if a.shape != b_arr.shape:
        raise ValueError(f"length mismatch: {a.shape[0]} vs {b_arr.shape[0]}")
    a = a.astype(bool)
    b_arr = b_arr.astype(bool)
    only_a = int(np.count_nonzero(a & ~b_arr))
    only_b = int(np.count_nonzero(~a & b_arr))
    n_disc = only_a + only_b
    if n_disc == 0:
        p = 1.0
    else:
        p = float(min(1.0, 2.0 * binom.cdf(min(only_a, only_b), n_disc, 0.5)))
    return McNemarResult(only_a=only_a, only_b=only_b, p_value=p)


def mcnemar_verdict(
    name_a: str, name_b: str, result: McNemarResult, alpha: float = 0.05
) -> str:
    """One plain-language sentence summarising a McNemar comparison.

    Example: ``"ResNet50 vs CNN: 6 images apart (8 vs 2), p = 0.11: no
    detectable difference"``.  A winner is named only when ``p < alpha``.
    """
    gap = abs(result.only_a - result.only_b)
    unit = "image" if gap == 1 else "images"
    head = (
        f"{name_a} vs {name_b}: {gap} {unit} apart "
        f"({result.only_a} vs {result.only_b}), {formatting.p_value(result.p_value)}"
    )
    if result.p_value < alpha and result.only_a != result.only_b:
        winner = name_a if result.only_a > result.only_b else name_b
        return f"{head}: {winner} is better"
    return f"{head}: no detectable difference"


def pairwise_mcnemar(correct: Mapping[str, np.ndarray]) -> dict[tuple[str, str], McNemarResult]:
    """Exact McNemar results for every ordered pair of distinct models.

    Both orders are kept so callers can index ``(a, b)`` without caring which
    way round it was computed; ``(b, a)`` simply has the counts swapped.
    """
    return {(a, b): mcnemar_exact(correct[a], correct[b]) for a, b in permutations(correct, 2)}


# --------------------------------------------------------------------------
# Probabilistic scores and calibration
# --------------------------------------------------------------------------


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray, eps: float = 1e-7) -> float:
    """Mean negative log probability assigned to the true class.

    Probabilities are clipped at ``eps`` so one confidently wrong image (p = 0,
    common with float32 softmax) yields a large finite penalty, not infinity.
    """
    p, y = _check_probs(probs, y_true)
    p_true = np.clip(p[np.arange(p.shape[0]), y], eps, 1.0)
    return float(-np.mean(np.log(p_true)))


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin summary of top-1 confidence versus accuracy.

    ``edges`` has ``n_bins + 1`` entries; the other arrays have ``n_bins``.
    Empty bins have ``count == 0`` and NaN confidence/accuracy so plots show a
    gap rather than a misleading zero.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    def to_json(self) -> dict:
        """Plain lists; an empty bin's NaN becomes None (JSON has no NaN)."""
        def plain(values):
            return [None if np.isnan(v) else float(v) for v in values]

        return {"edges": self.edges.tolist(), "confidence": plain(self.confidence), "accuracy": plain(self.accuracy),
                "count": self.count.astype(int).tolist()}


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 10) -> ReliabilityBins:
    """Bin samples by top-1 confidence into equal-width bins on [0, 1].

    Bins are half-open ``[lo, hi)`` except the last, which also takes
    confidence exactly 1.0 (saturated softmax outputs are common).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _check_probs(probs, y_true)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    # arange / n gives each edge as the correctly rounded k / n; linspace does
    # not (its 0.6 is 0.6000000000000001, pushing conf == 0.6 a bin too low).
    edges = np.arange(n_bins + 1) / n_bins
    # searchsorted against the stored edges (rather than floor(conf * n_bins))
    # keeps bin membership consistent with the edges reported to the caller.
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        mean_acc = np.where(count > 0, acc_sum / count, np.nan)
    return ReliabilityBins(edges=edges, confidence=mean_conf, accuracy=mean_acc, count=count)


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: count-weighted mean |accuracy - confidence|."""
    bins = reliability_bins(probs, y_true, n_bins=n_bins)
    filled = bins.count > 0
    weights = bins.count[filled] / bins.count.sum()
    gaps = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    return float(np.sum(weights * gaps))


def top_k_accuracy(probs: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the ``k`` most probable.

    Ties are broken towards the lower class index (stable sort), matching
    ``argmax`` so that ``k == 1`` agrees with plain accuracy.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    p, y = _check_probs(probs, y_true)
    k = min(k, p.shape[1])
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


# --------------------------------------------------------------------------
# Coarse (group-level) scores, e.g. fruit vs vegetable
# --------------------------------------------------------------------------


def binary_group_probs(
    probs: np.ndarray, class_groups: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Sum class probabilities within each group.

    ``class_groups[c]`` names the group of class ``c``.  Returns an ``(N, G)``
    array whose columns follow the sorted group names, so the column order is
    reproducible regardless of class order.
    """
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, C), got shape {p.shape}")
    if len(class_groups) != p.shape[1]:
        raise ValueError(
            f"class_groups has {len(class_groups)} entries but probs has {p.shape[1]} classes"
        )
    groups = sorted(set(class_groups))
    col = {g: i for i, g in enumerate(groups)}
    membership = np.zeros((p.shape[1], len(groups)))
    membership[np.arange(p.shape[1]), [col[g] for g in class_groups]] = 1.0
    return p @ membership, groups


def group_accuracy(probs: np.ndarray, y_true: np.ndarray, class_groups: Sequence[str]) -> float:
    """Accuracy of the most probable group against the true class's group.

    Uses summed group probability rather than the group of the top-1 class,
    so a model split between several vegetables still counts as "vegetable".
    """
    p, y = _check_probs(probs, y_true)
    group_probs, groups = binary_group_probs(p, class_groups)
    col = {g: i for i, g in enumerate(groups)}
    class_to_group = np.array([col[g] for g in class_groups])
    return float(np.mean(group_probs.argmax(axis=1) == class_to_group[y]))


# --------------------------------------------------------------------------
# Summaries across runs
# --------------------------------------------------------------------------


def mean_and_spread(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1), ignoring NaN.

    A single value gets spread 0.0 rather than NaN so one-run models still
    display; no finite values at all gives ``(nan, nan)``.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    if v.size == 1:
        return (float(v[0]), 0.0)
    return (float(np.mean(v)), float(np.std(v, ddof=1)))
