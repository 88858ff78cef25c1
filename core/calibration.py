"""Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks").

A model's class probabilities p become softmax(log p / T), with one temperature T per model, the one with the
lowest negative log-likelihood on the validation photos (which no model trained on). T > 1 softens an
over-confident model; T < 1 sharpens an under-confident one, as label smoothing leaves the tuned recipe's
models (README: Calibration). The order of the classes, and so every accuracy, stays the same; what changes
is what a confidence means: of the photos a calibrated model gives 80 %, about 80 % are right.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from core import stats

# The search interval of T; far beyond what the models here need (0.3 to 3), so that it never binds.
TEMPERATURE_RANGE = (0.02, 50.0)


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (..., C) after temperature scaling; ``temperature`` 1 returns them unchanged."""
    logits = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0))
    return softmax(logits / temperature, axis=-1).astype(np.float32)


def fit_temperature(probs: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature with the lowest negative log-likelihood of ``y_true`` (a 1-D search over log T)."""
    logits = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0))
    rows = np.arange(len(y_true))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y_true].mean())

    found = minimize_scalar(nll, bounds=np.log(TEMPERATURE_RANGE), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def fit(val_probs: np.ndarray, y_val: np.ndarray) -> dict:
    """The temperature fitted on the validation photos, with what it changes there, as plain JSON values (a
    model's ``metrics.json`` keeps it under ``"calibration"``, completed by ``on_test``)."""
    temperature = fit_temperature(val_probs, y_val)
    scaled = scale(val_probs, temperature)
    return {
        "method": "temperature scaling, fitted on the validation split",
        "temperature": temperature,
        "validation_n": int(len(y_val)),
        "validation_loss": stats.negative_log_likelihood(val_probs, y_val),
        "validation_loss_scaled": stats.negative_log_likelihood(scaled, y_val),
        "validation_ece": stats.expected_calibration_error(val_probs, y_val),
        "validation_ece_scaled": stats.expected_calibration_error(scaled, y_val),
    }


def on_test(fitted: dict, test_probs: np.ndarray, y_test: np.ndarray) -> dict:
    """``fitted`` (from ``fit``) with the test split's loss, ECE and reliability bins after scaling."""
    scaled = scale(test_probs, fitted["temperature"])
    return {
        **fitted,
        "test_loss_scaled": stats.negative_log_likelihood(scaled, y_test),
        "test_ece_scaled": stats.expected_calibration_error(scaled, y_test),
        "reliability_scaled": stats.reliability_bins(scaled, y_test, n_bins=10).to_json(),
    }


def temperature(metrics: dict) -> float:
    """The model's fitted temperature; 1 (its probabilities as they are) for runs stored before calibration."""
    return float(metrics.get("calibration", {}).get("temperature", 1.0))


def reliability(metrics: dict, scaled: bool) -> dict:
    """A model's stored reliability bins on the test split (``stats.ReliabilityBins.to_json``): after
    temperature scaling where ``scaled`` and a temperature was fitted, else as the model outputs them."""
    fitted = metrics.get("calibration")
    return fitted["reliability_scaled"] if scaled and fitted else metrics["reliability"]
