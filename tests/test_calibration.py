"""Temperature scaling: the fit finds the temperature that generated the data, scaling changes no answer, and
a result set carries it from training (or ``evaluate.py --calibrate``) to the answers the models give."""

import shutil

import numpy as np
import pytest
from scipy.special import softmax

from core import artifacts, calibration, comparison, evaluation, inference, stats
from core.specs import MODEL_IDS


def sample(temperature: float, n: int = 4000, classes: int = 10, seed: int = 0):
    """Labels drawn from softmax(logits), and the probabilities a model with ``temperature`` too much or too
    little confidence would give: softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, (n, classes))
    true = softmax(logits, axis=1)
    labels = np.array([rng.choice(classes, p=p) for p in true])
    return softmax(logits / temperature, axis=1), labels


@pytest.mark.parametrize("generating", [0.5, 1.0, 2.0])
def test_the_fit_recovers_the_temperature_that_miscalibrated_the_model(generating):
    probs, labels = sample(generating)
    # softmax(logits / g) scaled by T is softmax(logits / (g T)): the calibrated T is 1 / g.
    assert calibration.fit_temperature(probs, labels) == pytest.approx(1 / generating, rel=0.1)


def test_scaling_keeps_every_answer_and_one_is_the_identity():
    probs, _ = sample(0.5, n=200)
    for temperature in (0.3, 1.0, 4.0):
        scaled = calibration.scale(probs, temperature)
        assert np.array_equal(scaled.argmax(axis=1), probs.argmax(axis=1))
        assert np.allclose(scaled.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(calibration.scale(probs, 1.0), probs, atol=1e-6)
    assert (calibration.scale(probs, 0.5).max(axis=1) >= probs.max(axis=1) - 1e-6).all()  # T < 1 sharpens


def test_a_temperature_fitted_on_validation_calibrates_new_photos():
    # An under-confident model, as label smoothing leaves the tuned recipe's (README: Calibration).
    val_probs, y_val = sample(2.0, seed=1)
    test_probs, y_test = sample(2.0, seed=2)
    fitted = calibration.on_test(calibration.fit(val_probs, y_val), test_probs, y_test)
    assert fitted["validation_loss_scaled"] < fitted["validation_loss"]
    assert fitted["test_ece_scaled"] < stats.expected_calibration_error(test_probs, y_test) / 3
    assert fitted["test_loss_scaled"] < stats.negative_log_likelihood(test_probs, y_test)
    metrics = {"reliability": stats.reliability_bins(test_probs, y_test).to_json(), "calibration": fitted}
    assert calibration.reliability(metrics, scaled=True) == fitted["reliability_scaled"]
    assert calibration.reliability(metrics, scaled=False) == metrics["reliability"]
    assert calibration.reliability({"reliability": metrics["reliability"]}, scaled=True) == metrics["reliability"]
    assert calibration.temperature({}) == 1.0 and calibration.temperature(metrics) == fitted["temperature"]


def test_training_stores_each_runs_temperature_and_the_answers_use_it(tiny_results):
    rs = artifacts.open_result_set(tiny_results)
    table = comparison.overview_table(rs).set_index("id")
    for model_id in MODEL_IDS:
        fitted = rs.metrics(model_id)["calibration"]
        assert calibration.TEMPERATURE_RANGE[0] < fitted["temperature"] < calibration.TEMPERATURE_RANGE[1]
        assert fitted["validation_loss_scaled"] <= fitted["validation_loss"] + 1e-6
        assert table.loc[model_id, "temperature"] == fitted["temperature"]
        assert table.loc[model_id, "ece_scaled"] == fitted["test_ece_scaled"]
    photos = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    loaded = inference.load_models(rs)
    raw = inference.Classifier(loaded.models).classify(photos)
    scaled = inference.Classifier(loaded.models, temperatures=loaded.temperatures).classify(photos)
    plain, _ = inference.Predictor(loaded, None)(photos)
    for model_id in MODEL_IDS:
        expected = calibration.scale(raw.results[model_id].probs, loaded.temperatures[model_id])
        assert np.allclose(scaled.results[model_id].probs, expected, atol=1e-4)
        assert np.allclose(plain.results[model_id].probs, expected, atol=1e-4)


def test_calibrating_a_set_made_before_adds_the_temperature_and_reevaluation_keeps_it(tiny_data, tiny_results, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    writer = artifacts.ResultSetWriter(copy, artifacts.open_result_set(copy).config)
    trained = {}
    for model_id in MODEL_IDS:  # as a set written before calibration existed
        metrics = artifacts.open_result_set(copy).metrics(model_id)
        trained[model_id] = metrics.pop("calibration")
        with writer.model_folder(model_id, keep_existing=True) as folder:
            artifacts.write_json(folder / artifacts.METRICS, metrics)
    before = artifacts.open_result_set(copy)
    assert inference.load_models(before).temperatures == {m: 1.0 for m in MODEL_IDS}
    assert evaluation.calibrate(before, data_dir=tiny_data, progress=False) == {m: "calibrated" for m in MODEL_IDS}
    after = artifacts.open_result_set(copy)
    assert after.problems == {}
    for model_id in MODEL_IDS:
        # The same validation photos and weights as at the end of training: the same temperature.
        assert after.metrics(model_id)["calibration"]["temperature"] == pytest.approx(
            trained[model_id]["temperature"], rel=0.02)
    kept = after.metrics("cnn")["calibration"]["temperature"]
    evaluation.reevaluate(after, data_dir=tiny_data, model_ids=["cnn"], progress=False)
    again = artifacts.open_result_set(copy).metrics("cnn")["calibration"]
    assert again["temperature"] == kept
