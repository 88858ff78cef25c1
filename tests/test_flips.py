"""Test-time options: flips (the figures count exactly the photos the mirror image fixes and breaks) and
resolution (the photos at other sizes); validation alone decides, and ``evaluate.py --flips`` /
``--test-sizes`` store them where the Overview shows them."""

import shutil
import sys

import numpy as np
import pytest

from conftest import ROOT
from core import artifacts, comparison, evaluation
from core.specs import MODEL_IDS
from test_pages import page

sys.path.insert(0, str(ROOT / "scripts"))
import evaluate  # noqa: E402

CLASSES = 4


def one_hot_ish(answers: np.ndarray, confidence: float = 0.7) -> np.ndarray:
    """Probabilities that give ``answers`` with ``confidence`` and share the rest evenly."""
    probs = np.full((len(answers), CLASSES), (1 - confidence) / (CLASSES - 1), np.float32)
    probs[np.arange(len(answers)), answers] = confidence
    return probs


def test_the_figures_count_the_photos_the_mirror_image_fixes_and_breaks():
    labels = np.arange(20) % CLASSES
    alone = labels.copy()
    alone[:6] = (labels[:6] + 1) % CLASSES  # six photos wrong alone
    # The mirror image is sure of the truth on photos 0-3 (fixing them) and sure of a wrong class on photos
    # 10-11 (breaking them); elsewhere it agrees with the photo.
    mirrored = alone.copy()
    mirrored[:4] = labels[:4]
    mirrored[10:12] = (labels[10:12] + 2) % CLASSES
    plain = {split: one_hot_ish(alone, 0.6) for split in ("validation", "test")}
    mirror = {split: one_hot_ish(mirrored, 0.9) for split in ("validation", "test")}
    figures = evaluation.flip_figures(plain, mirror, {"validation": labels, "test": labels}, temperature=1.0)
    test = figures["test"]
    assert (test["fixed"], test["broken"]) == (4, 2)
    assert test["accuracy"] == pytest.approx(14 / 20) and test["accuracy_flip"] == pytest.approx(16 / 20)
    assert test["p_value"] == pytest.approx(2 * (1 + 6 + 15) / 64)  # exact two-sided McNemar: 2 P(X <= 2), X ~ B(6, 1/2)
    assert test["accuracy_flip_interval"][0] < test["accuracy_flip"] < test["accuracy_flip_interval"][1]
    assert figures["chosen"]  # two more validation photos right


def test_validation_alone_decides_and_a_mirror_that_changes_nothing_is_not_taken():
    labels = np.arange(20) % CLASSES
    same = {split: one_hot_ish(labels) for split in ("validation", "test")}
    unchanged = evaluation.flip_figures(same, same, {"validation": labels, "test": labels}, temperature=1.0)
    assert not unchanged["chosen"]
    assert (unchanged["test"]["fixed"], unchanged["test"]["broken"]) == (0, 0)
    # Wrong on validation, right on test: the test split must not sway the choice.
    wrong = one_hot_ish((labels + 1) % CLASSES, 0.9)
    plain = {"validation": one_hot_ish(labels, 0.6), "test": one_hot_ish((labels + 1) % CLASSES, 0.6)}
    mirror = {"validation": wrong, "test": one_hot_ish(labels, 0.9)}
    figures = evaluation.flip_figures(plain, mirror, {"validation": labels, "test": labels}, temperature=1.0)
    assert figures["test"]["accuracy_flip"] == 1.0 and not figures["chosen"]


def test_measured_flips_are_stored_and_shown_on_the_overview(tiny_data, tiny_results, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    status = evaluation.test_time_flips(artifacts.open_result_set(copy), data_dir=tiny_data, progress=False)
    assert status == {m: "flips measured" for m in MODEL_IDS}
    rs = artifacts.open_result_set(copy)
    assert rs.problems == {}
    table = comparison.flip_table(rs).set_index("id")
    for model_id in MODEL_IDS:
        flips = rs.metrics(model_id)["test_time_flip"]
        # The photo alone is what training tested: the same accuracy as the stored predictions, within a photo
        # (training's test pass and this one may round differently near a tie).
        assert abs(flips["test"]["accuracy"] - rs.metrics(model_id)["accuracy"]) <= 1 / flips["test"]["n"] + 1e-9
        assert table.loc[model_id, "test_accuracy_flip"] == flips["test"]["accuracy_flip"]
    at = page("overview", copy)
    assert not at.exception
    shown = next(e for e in at.expander if e.label.startswith("Test-time flips"))
    assert len(shown.dataframe[0].value) == len(MODEL_IDS)
    assert comparison.flip_table(artifacts.open_result_set(tiny_results)).empty


def test_validation_chooses_the_size_and_the_test_counts_what_it_fixes_and_breaks():
    labels = np.arange(20) % CLASSES
    at_image_size = labels.copy()
    at_image_size[:5] = (labels[:5] + 1) % CLASSES  # five photos wrong at the image size
    larger = labels.copy()
    larger[12:14] = (labels[12:14] + 1) % CLASSES  # right on those five, wrong on two others
    both = lambda answers, confidence=0.7: {split: one_hot_ish(answers, confidence) for split in ("validation", "test")}
    splits = {"validation": labels, "test": labels}
    figures = evaluation.size_figures({48: both(at_image_size), 64: both(larger), 80: both(at_image_size, 0.9)},
                                      splits, image_size=48)
    assert figures["chosen"] == 64 and figures["image_size"] == 48
    test = figures["sizes"]["64"]["test"]
    assert (test["fixed"], test["broken"]) == (5, 2) and test["accuracy"] == pytest.approx(18 / 20)
    assert figures["sizes"]["48"]["test"]["accuracy"] == pytest.approx(15 / 20)
    assert (figures["sizes"]["48"]["test"]["fixed"], figures["sizes"]["48"]["test"]["broken"]) == (0, 0)
    # The same answers at 80 px: a size is only taken when it does better on validation; the image size stays.
    assert evaluation.size_figures({48: both(at_image_size), 80: both(at_image_size)}, splits, 48)["chosen"] == 48
    # As often right at 80 px, its wrong answers giving the true class the next most: a lower loss, so taken.
    hedged = one_hot_ish(at_image_size, 0.7)
    hedged[np.arange(5), labels[:5]] = 0.25
    hedged /= hedged.sum(1, keepdims=True)
    on_a_tie = evaluation.size_figures({48: both(at_image_size), 80: {"validation": hedged, "test": hedged}}, splits, 48)
    assert on_a_tie["sizes"]["80"]["validation"]["loss"] < on_a_tie["sizes"]["48"]["validation"]["loss"]
    assert on_a_tie["chosen"] == 80
    # Better on test only: the test split must not sway the choice.
    one_more_wrong = at_image_size.copy()
    one_more_wrong[6] = (labels[6] + 1) % CLASSES
    swayed = evaluation.size_figures(
        {48: both(at_image_size), 64: {"validation": one_hot_ish(one_more_wrong), "test": one_hot_ish(labels)}},
        splits, image_size=48)
    assert swayed["sizes"]["64"]["test"]["accuracy"] == 1.0 and swayed["chosen"] == 48


def test_each_size_is_scaled_by_a_temperature_fitted_at_that_size():
    labels = np.arange(40) % CLASSES
    answers = labels.copy()
    answers[:8] = (labels[:8] + 1) % CLASSES  # 80 % right at every size
    # As confident as right at the image size; at 64 px the same answers at 99 %: over-confident.
    by_size = {48: {split: one_hot_ish(answers, 0.8) for split in ("validation", "test")},
               64: {split: one_hot_ish(answers, 0.99) for split in ("validation", "test")}}
    figures = evaluation.size_figures(by_size, {"validation": labels, "test": labels}, image_size=48)
    at_image_size, larger = figures["sizes"]["48"], figures["sizes"]["64"]
    assert at_image_size["temperature"] == pytest.approx(1.0, abs=0.05) and larger["temperature"] > 1.5
    # Its own temperature takes the over-confidence away: the loss is the image size's, not the far higher
    # loss of the 99 % answers as they are (which one temperature for all sizes would leave them).
    unscaled = -np.log(by_size[64]["validation"][np.arange(40), labels]).mean()
    assert larger["validation"]["loss"] == pytest.approx(at_image_size["validation"]["loss"], rel=1e-3)
    assert larger["validation"]["loss"] < unscaled - 0.4


def test_measured_sizes_are_stored_and_shown_on_the_overview(tiny_data, tiny_results, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    assert evaluate.main(["--artifacts", str(copy), "--data-dir", str(tiny_data), "--test-sizes", "64,40"]) == 0
    printed = capsys.readouterr().out
    rs = artifacts.open_result_set(copy)
    assert rs.problems == {}
    image_size = rs.config["image_size"]
    table = comparison.size_table(rs).set_index("id")
    for model_id in MODEL_IDS:
        sizes = rs.metrics(model_id)["test_time_size"]
        assert sorted(sizes["sizes"]) == sorted(str(s) for s in (40, image_size, 64))
        # At the image size the figures are the stored test predictions', exactly.
        assert sizes["sizes"][str(image_size)]["test"]["accuracy"] == pytest.approx(rs.metrics(model_id)["accuracy"])
        chosen = sizes["sizes"][str(sizes["chosen"])]
        assert table.loc[model_id, "test_chosen"] == chosen["test"]["accuracy"]
        assert chosen["validation"]["accuracy"] == max(v["validation"]["accuracy"] for v in sizes["sizes"].values())
        assert f"{model_id} " in printed and "sizes (px: accuracy %): validation 40: " in printed
    at = page("overview", copy)
    assert not at.exception
    shown = next(e for e in at.expander if e.label.startswith("Test-time resolution"))
    assert len(shown.dataframe[0].value) == len(MODEL_IDS)
    assert comparison.size_table(artifacts.open_result_set(tiny_results)).empty
    # Evaluating the same weights again (to refresh the test files) keeps what was measured with them, and
    # records what the new Grad-CAM maps are of.
    measured = {m: rs.metrics(m)["test_time_size"] for m in MODEL_IDS}
    assert evaluate.main(["--artifacts", str(copy), "--data-dir", str(tiny_data)]) == 0
    again = artifacts.open_result_set(copy)
    assert {m: again.metrics(m)["test_time_size"] for m in MODEL_IDS} == measured
    assert {again.metrics(m)["gradcam_target"] for m in MODEL_IDS} == {"log-probability"}
    with pytest.raises(SystemExit):
        evaluate.main(["--artifacts", str(copy), "--test-sizes", "288,big"])
