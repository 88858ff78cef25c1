"""Tests for core.stats against closed forms and published reference values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# Lets the file run from any working directory without packaging the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.stats import (  # noqa: E402
    McNemarResult,
    ReliabilityBins,
    binary_group_probs,
    bootstrap_interval,
    expected_calibration_error,
    group_accuracy,
    mcnemar_exact,
    mcnemar_verdict,
    mean_and_spread,
    negative_log_likelihood,
    pairwise_mcnemar,
    reliability_bins,
    top_k_accuracy,
    wilson_interval,
)


# ---------------------------------------------------------------- Wilson


def _wilson_closed_form(k: int, n: int, z: float) -> tuple[float, float]:
    # Written in the alternative (Agresti-Coull style) arrangement so it is
    # not a copy of the implementation.
    p = k / n
    a = 2 * n * p + z * z
    b = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    c = 2 * (n + z * z)
    return ((a - b) / c, (a + b) / c)


@pytest.mark.parametrize(
    "k, n, expected",
    [
        # 95/100, the common textbook example.
        (95, 100, (0.8882, 0.9785)),
        # Newcombe (1998), Stat. Med. 17:857-872, Table I, method 3.
        (81, 263, (0.2553, 0.3662)),
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0000, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
    ],
)
def test_wilson_published_values(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


@pytest.mark.parametrize("k, n", [(0, 1), (3, 7), (50, 100), (349, 350), (350, 350)])
@pytest.mark.parametrize("confidence, z", [(0.95, 1.959963984540054), (0.90, 1.6448536269514722)])
def test_wilson_matches_closed_form(k, n, confidence, z):
    lo, hi = wilson_interval(k, n, confidence)
    exp_lo, exp_hi = _wilson_closed_form(k, n, z)
    assert lo == pytest.approx(max(0.0, exp_lo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, exp_hi), abs=1e-12)


def test_wilson_empty_and_invalid():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


def test_wilson_narrows_with_confidence_and_n():
    w95 = np.diff(wilson_interval(30, 40, 0.95))[0]
    w80 = np.diff(wilson_interval(30, 40, 0.80))[0]
    w95_big = np.diff(wilson_interval(300, 400, 0.95))[0]
    assert w80 < w95
    assert w95_big < w95


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.integers(min_value=1, max_value=5000).flatmap(
        lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
    ),
    st.floats(min_value=0.5, max_value=0.999),
)
def test_wilson_property_bounded_and_contains_estimate(kn, confidence):
    k, n = kn
    lo, hi = wilson_interval(k, n, confidence)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small = rng.random(100) < 0.8
    large = rng.random(2000) < 0.8
    lo_s, hi_s = bootstrap_interval(np.mean, small, n_resamples=500, seed=3)
    lo_l, hi_l = bootstrap_interval(np.mean, large, n_resamples=500, seed=3)
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    # Standard error scales as 1/sqrt(n): 20x the data, ~4.5x narrower.
    assert (hi_l - lo_l) < 0.4 * (hi_s - lo_s)
    # Sanity on absolute width: 95% CI of a proportion 0.8 at n=100 is ~0.16.
    assert 0.10 < hi_s - lo_s < 0.22


def test_bootstrap_deterministic_for_seed():
    x = np.arange(50, dtype=float)
    a = bootstrap_interval(np.median, x, n_resamples=300, seed=7)
    b = bootstrap_interval(np.median, x, n_resamples=300, seed=7)
    c = bootstrap_interval(np.median, x, n_resamples=300, seed=8)
    assert a == b
    assert a != c


def test_bootstrap_applies_same_rows_to_every_array():
    # If rows were resampled independently per array, a == b would break
    # and the accuracy would drop below 1 on most resamples.
    y = np.arange(350) % 7
    acc = lambda t, p: float(np.mean(t == p))  # noqa: E731
    assert bootstrap_interval(acc, y, y.copy(), n_resamples=200) == (1.0, 1.0)


def test_bootstrap_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        bootstrap_interval(lambda a, b: 0.0, np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------- McNemar


def _paired(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, dtype=bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, dtype=bool)
    return a, b


def test_mcnemar_textbook_value():
    a, b = _paired(n11=300, n10=1, n01=9, n00=40)
    res = mcnemar_exact(a, b)
    assert (res.only_a, res.only_b) == (1, 9)
    # 2 * P(X <= 1 | Bin(10, 1/2)) = 2 * 11 / 1024
    assert res.p_value == pytest.approx(22 / 1024, rel=1e-12)


def test_mcnemar_symmetric_and_degenerate_cases():
    assert mcnemar_exact(*_paired(10, 0, 0, 5)) == McNemarResult(0, 0, 1.0)
    # b == c: the doubled tail exceeds 1 and must be capped.
    assert mcnemar_exact(*_paired(10, 4, 4, 5)).p_value == 1.0
    # 8 vs 2: 2 * 56 / 1024
    res = mcnemar_exact(*_paired(0, 8, 2, 0))
    assert res.p_value == pytest.approx(112 / 1024)


def test_mcnemar_length_mismatch():
    with pytest.raises(ValueError):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_mcnemar_verdict_sentences():
    not_sig = McNemarResult(only_a=8, only_b=2, p_value=112 / 1024)
    assert (
        mcnemar_verdict("ResNet50", "CNN", not_sig)
        == "ResNet50 vs CNN: 6 images apart (8 vs 2), p = 0.11: no detectable difference"
    )
    sig = McNemarResult(only_a=2, only_b=20, p_value=0.003)
    assert mcnemar_verdict("ResNet50", "CNN", sig) == (
        "ResNet50 vs CNN: 18 images apart (2 vs 20), p = 0.003: CNN is better"
    )
    tiny = McNemarResult(only_a=40, only_b=1, p_value=1e-9)
    text = mcnemar_verdict("A", "B", tiny)
    assert "p < 0.001" in text and text.endswith("A is better")
    one = McNemarResult(only_a=3, only_b=2, p_value=1.0)
    assert mcnemar_verdict("A", "B", one) == (
        "A vs B: 1 image apart (3 vs 2), p = 1.0: no detectable difference"
    )


def test_pairwise_mcnemar_all_ordered_pairs():
    a, b = _paired(5, 1, 9, 0)
    c = np.ones_like(a)
    out = pairwise_mcnemar({"A": a, "B": b, "C": c})
    assert set(out) == {("A", "B"), ("B", "A"), ("A", "C"), ("C", "A"), ("B", "C"), ("C", "B")}
    assert (out["A", "B"].only_a, out["A", "B"].only_b) == (1, 9)
    assert (out["B", "A"].only_a, out["B", "A"].only_b) == (9, 1)
    assert out["A", "B"].p_value == out["B", "A"].p_value


# ---------------------------------------------------------------- probabilistic scores


def test_nll_uniform_equals_log_c_and_clips():
    probs = np.full((20, 36), 1 / 36)
    y = np.arange(20) % 36
    assert negative_log_likelihood(probs, y) == pytest.approx(math.log(36))
    hard = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert negative_log_likelihood(hard, np.array([1, 1]), eps=1e-7) == pytest.approx(
        -math.log(1e-7) / 2
    )


def test_top_k_accuracy():
    probs = np.array(
        [
            [0.5, 0.3, 0.2],  # true 0 -> top1
            [0.5, 0.3, 0.2],  # true 1 -> top2
            [0.5, 0.3, 0.2],  # true 2 -> top3
            [0.1, 0.2, 0.7],  # true 2 -> top1
        ]
    )
    y = np.array([0, 1, 2, 2])
    assert top_k_accuracy(probs, y, 1) == 0.5
    assert top_k_accuracy(probs, y, 2) == 0.75
    assert top_k_accuracy(probs, y, 3) == 1.0
    assert top_k_accuracy(probs, y, 10) == 1.0
    # Ties must not make everything "correct" at k=1: agree with argmax.
    uniform = np.full((4, 4), 0.25)
    assert top_k_accuracy(uniform, np.array([0, 1, 2, 3]), 1) == 0.25


def _sample_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random((probs.shape[0], 1))
    labels = (np.cumsum(probs, axis=1) < u).sum(axis=1)
    return np.minimum(labels, probs.shape[1] - 1)


def test_ece_calibrated_small_overconfident_large():
    rng = np.random.default_rng(12345)
    true_probs = rng.dirichlet(np.full(5, 0.7), size=50_000)
    y = _sample_labels(true_probs, rng)
    # Labels drawn from the predicted distribution: calibrated by construction.
    assert expected_calibration_error(true_probs, y) < 0.02

    # Sharpening keeps the argmax (same accuracy) but inflates confidence.
    sharp = true_probs**4
    sharp /= sharp.sum(axis=1, keepdims=True)
    ece_over = expected_calibration_error(sharp, y)
    assert ece_over > 0.1
    accuracy = float(np.mean(sharp.argmax(1) == y))
    assert ece_over == pytest.approx(sharp.max(1).mean() - accuracy, abs=0.02)


def test_reliability_bins_hand_example():
    probs = np.array(
        [
            [1.0, 0.0],  # conf 1.0 -> last bin, correct
            [0.95, 0.05],  # last bin, wrong
            [0.55, 0.45],  # bin [0.5, 0.6), correct
            [0.6, 0.4],  # exactly on an edge -> bin [0.6, 0.7)
        ]
    )
    y = np.array([0, 1, 0, 0])
    rb = reliability_bins(probs, y, n_bins=10)
    assert isinstance(rb, ReliabilityBins)
    np.testing.assert_allclose(rb.edges, np.linspace(0, 1, 11))
    np.testing.assert_array_equal(rb.count, [0, 0, 0, 0, 0, 1, 1, 0, 0, 2])
    assert rb.confidence[9] == pytest.approx(0.975)
    assert rb.accuracy[9] == pytest.approx(0.5)
    assert rb.accuracy[5] == 1.0 and rb.confidence[6] == pytest.approx(0.6)
    assert np.isnan(rb.confidence[0]) and np.isnan(rb.accuracy[7])
    # ECE by hand: 2/4*|0.5-0.975| + 1/4*|1-0.55| + 1/4*|1-0.6|
    expected = 0.5 * 0.475 + 0.25 * 0.45 + 0.25 * 0.4
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(expected)


# ---------------------------------------------------------------- groups


def test_group_probs_and_accuracy_hand_example():
    class_groups = ["fruit", "vegetable", "fruit", "vegetable"]
    probs = np.array(
        [
            [0.40, 0.30, 0.00, 0.30],  # top-1 fruit, but vegetable sums to 0.6
            [0.10, 0.20, 0.60, 0.10],  # fruit 0.7
            [0.00, 0.50, 0.00, 0.50],  # vegetable 1.0
            [0.25, 0.25, 0.30, 0.20],  # fruit 0.55
        ]
    )
    gp, names = binary_group_probs(probs, class_groups)
    assert names == ["fruit", "vegetable"]
    np.testing.assert_allclose(gp, [[0.4, 0.6], [0.7, 0.3], [0.0, 1.0], [0.55, 0.45]])
    # True groups: veg, fruit, fruit, veg -> predicted veg, fruit, veg, fruit.
    y = np.array([1, 2, 0, 3])
    assert group_accuracy(probs, y, class_groups) == 0.5
    with pytest.raises(ValueError):
        binary_group_probs(probs, class_groups[:3])


# ---------------------------------------------------------------- spread


def test_mean_and_spread():
    assert mean_and_spread([1.0, 2.0, 3.0, float("nan")]) == (2.0, 1.0)
    assert mean_and_spread([0.7]) == (0.7, 0.0)
    assert mean_and_spread([0.7, float("nan")]) == (0.7, 0.0)
    m, s = mean_and_spread([])
    assert math.isnan(m) and math.isnan(s)
