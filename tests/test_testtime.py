"""Test-time options (core.testtime): views of each photo averaged (the figures count exactly the photos an
option fixes and breaks) and resolution (the photos at other sizes); validation alone decides, and
``evaluate.py --views`` / ``--test-sizes`` store them where the Overview shows them."""

import shutil
import sys

import numpy as np
import pytest

from conftest import ROOT
from core import artifacts, augmentation, comparison, testtime
from core.specs import MODEL_IDS, MODEL_SPECS
from test_pages import page

sys.path.insert(0, str(ROOT / "scripts"))
import evaluate  # noqa: E402

CLASSES = 4


def one_hot_ish(answers: np.ndarray, confidence: float = 0.7) -> np.ndarray:
    """Probabilities that give ``answers`` with ``confidence`` and share the rest evenly."""
    probs = np.full((len(answers), CLASSES), (1 - confidence) / (CLASSES - 1), np.float32)
    probs[np.arange(len(answers)), answers] = confidence
    return probs


def test_the_figures_count_the_photos_an_option_fixes_and_breaks():
    labels = np.arange(20) % CLASSES
    alone = labels.copy()
    alone[:6] = (labels[:6] + 1) % CLASSES  # six photos wrong alone
    # The averaged views are right on photos 0-3 (fixing them) and wrong on photos 10-11 (breaking them);
    # elsewhere they agree with the photo.
    averaged = alone.copy()
    averaged[:4] = labels[:4]
    averaged[10:12] = (labels[10:12] + 2) % CLASSES
    figures = testtime.option_figures(
        {"photo": {split: one_hot_ish(alone, 0.6) for split in testtime.SPLITS},
         "photo + mirror": {split: one_hot_ish(averaged, 0.6) for split in testtime.SPLITS}},
        {"validation": labels, "test": labels}, baseline="photo")
    test = figures["options"]["photo + mirror"]["test"]
    assert (test["fixed"], test["broken"]) == (4, 2)
    assert figures["options"]["photo"]["test"]["accuracy"] == pytest.approx(14 / 20)
    assert test["accuracy"] == pytest.approx(16 / 20)
    assert test["p_value"] == pytest.approx(2 * (1 + 6 + 15) / 64)  # exact two-sided McNemar: 2 P(X <= 2), X ~ B(6, 1/2)
    assert test["accuracy_interval"][0] < test["accuracy"] < test["accuracy_interval"][1]
    assert (figures["options"]["photo"]["test"]["fixed"], figures["options"]["photo"]["test"]["broken"]) == (0, 0)
    assert figures["chosen"] == "photo + mirror"  # two more validation photos right


def test_a_mirror_image_and_crops_are_of_the_photo():
    # A photo whose pixels say where they are: red grows down the rows, green along the columns.
    side = 50
    rows, cols = np.meshgrid(np.arange(side, dtype=np.float32), np.arange(side, dtype=np.float32), indexing="ij")
    photo = np.stack([rows, cols, np.zeros_like(rows)], axis=-1)[None]
    assert np.array_equal(augmentation.test_time_view(photo, "mirror")[0, :, :, 1], photo[0, :, ::-1, 1])
    assert augmentation.test_time_view(photo, "photo") is photo
    cropped = (1 - augmentation.TEST_CROP_SIDE) * (side - 1)  # where a crop not at the top or left starts, in pixels
    for name, (top, left) in {"top-left crop": (0, 0), "bottom-right crop": (cropped, cropped),
                              "top-right crop": (0, cropped), "centre crop": (cropped / 2, cropped / 2)}.items():
        crop = augmentation.test_time_view(photo, name)
        assert crop.shape == photo.shape  # resized back to the image size
        # Its corner pixels are those of the box: the crop spans CROP_SIDE of the side from there.
        assert crop[0, 0, 0, :2] == pytest.approx([top, left], abs=1e-3)
        assert crop[0, -1, -1, :2] == pytest.approx([top + augmentation.TEST_CROP_SIDE * (side - 1)] * 1
                                                    + [left + augmentation.TEST_CROP_SIDE * (side - 1)], abs=1e-3)
    # Every view set averages views that exist, and starts from the photo alone.
    assert list(augmentation.TEST_VIEW_SETS)[0] == "photo" and augmentation.TEST_VIEW_SETS["photo"] == ("photo",)
    for names in augmentation.TEST_VIEW_SETS.values():
        for name in names:
            assert augmentation.test_time_view(photo, name).shape == photo.shape


def test_validation_alone_decides_and_views_that_change_nothing_are_not_taken():
    labels = np.arange(20) % CLASSES
    splits = {"validation": labels, "test": labels}
    same = {split: one_hot_ish(labels) for split in testtime.SPLITS}
    unchanged = testtime.option_figures({"photo": same, "five crops": same}, splits, baseline="photo")
    assert unchanged["chosen"] == "photo"
    assert (unchanged["options"]["five crops"]["test"]["fixed"], unchanged["options"]["five crops"]["test"]["broken"]) == (0, 0)
    # Wrong on validation, right on test: the test split must not sway the choice.
    plain = {"validation": one_hot_ish(labels, 0.6), "test": one_hot_ish((labels + 1) % CLASSES, 0.6)}
    averaged = {"validation": one_hot_ish((labels + 1) % CLASSES, 0.9), "test": one_hot_ish(labels, 0.9)}
    figures = testtime.option_figures({"photo": plain, "five crops": averaged}, splits, baseline="photo")
    assert figures["options"]["five crops"]["test"]["accuracy"] == 1.0 and figures["chosen"] == "photo"


def test_measured_views_are_stored_and_shown_on_the_overview(tiny_data, tiny_results, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    # One model from scratch and one on a frozen trunk: seven views of each split cost seven passes.
    measured = ["cnn", "resnet50_attention"]
    assert evaluate.main(["--artifacts", str(copy), "--data-dir", str(tiny_data), "--views",
                          "--models", ",".join(measured)]) == 0
    check_stored_and_shown(copy, tiny_results, artifacts.TEST_TIME_VIEWS, measured, "photo",
                           capsys.readouterr().out, "views (validation, accuracy %): photo: ", "Test-time views",
                           list(augmentation.TEST_VIEW_SETS))


def check_stored_and_shown(copy, tiny_results, key: str, measured: list[str], baseline: str, printed: str, line: str,
                           expander: str, columns: list[str]):
    """What a test-time option's command stored for each of the ``measured`` models, the line it printed for
    each, and the Overview's table of it; returns the result set."""
    rs = artifacts.open_result_set(copy)
    assert rs.problems == {}
    table = comparison.test_time_table(rs, key).set_index("id")
    assert list(table.index) == measured
    for model_id in measured:
        stored = rs.metrics(model_id)[key]
        assert stored["baseline"] == baseline
        # The baseline on test is the stored predictions: the same accuracy, exactly (a temperature does not
        # change a photo's answer).
        assert stored["options"][baseline]["test"]["accuracy"] == pytest.approx(rs.metrics(model_id)["accuracy"])
        chosen = stored["options"][stored["chosen"]]
        assert chosen["validation"]["accuracy"] == max(v["validation"]["accuracy"] for v in stored["options"].values())
        assert table.loc[model_id, "test_chosen"] == chosen["test"]["accuracy"]
    assert printed.count(line) == len(measured)
    at = page("overview", copy)
    assert not at.exception
    frame = next(e for e in at.expander if e.label.startswith(expander)).dataframe[0].value
    assert list(frame["Model"]) == [MODEL_SPECS[m].title for m in measured]
    assert list(frame.columns[1:len(columns) + 1]) == columns
    # One tick per model, in the column of the option validation chose.
    options = {m: list(rs.metrics(m)[key]["options"]) for m in measured}
    assert [[c for c in columns if frame.loc[i, c].endswith(" ✓")] for i in range(len(measured))] == [
        [columns[options[m].index(rs.metrics(m)[key]["chosen"])]] for m in measured]
    assert comparison.test_time_table(artifacts.open_result_set(tiny_results), key).empty
    return rs


def test_validation_chooses_the_size_and_the_test_counts_what_it_fixes_and_breaks():
    labels = np.arange(20) % CLASSES
    at_image_size = labels.copy()
    at_image_size[:5] = (labels[:5] + 1) % CLASSES  # five photos wrong at the image size
    larger = labels.copy()
    larger[12:14] = (labels[12:14] + 1) % CLASSES  # right on those five, wrong on two others
    both = lambda answers, confidence=0.7: {split: one_hot_ish(answers, confidence) for split in testtime.SPLITS}
    splits = {"validation": labels, "test": labels}
    figures = testtime.option_figures({"48": both(at_image_size), "64": both(larger), "80": both(at_image_size, 0.9)},
                                      splits, baseline="48")
    assert figures["chosen"] == "64" and figures["baseline"] == "48"
    test = figures["options"]["64"]["test"]
    assert (test["fixed"], test["broken"]) == (5, 2) and test["accuracy"] == pytest.approx(18 / 20)
    assert figures["options"]["48"]["test"]["accuracy"] == pytest.approx(15 / 20)
    assert (figures["options"]["48"]["test"]["fixed"], figures["options"]["48"]["test"]["broken"]) == (0, 0)
    # The same answers at 80 px: a size is only taken when it does better on validation; the image size stays.
    assert testtime.option_figures({"48": both(at_image_size), "80": both(at_image_size)}, splits, "48")["chosen"] == "48"
    # As often right at 80 px, its wrong answers giving the true class the next most: a lower loss, so taken.
    hedged = one_hot_ish(at_image_size, 0.7)
    hedged[np.arange(5), labels[:5]] = 0.25
    hedged /= hedged.sum(1, keepdims=True)
    on_a_tie = testtime.option_figures({"48": both(at_image_size), "80": {"validation": hedged, "test": hedged}}, splits, "48")
    assert on_a_tie["options"]["80"]["validation"]["loss"] < on_a_tie["options"]["48"]["validation"]["loss"]
    assert on_a_tie["chosen"] == "80"
    # Better on test only: the test split must not sway the choice.
    one_more_wrong = at_image_size.copy()
    one_more_wrong[6] = (labels[6] + 1) % CLASSES
    swayed = testtime.option_figures(
        {"48": both(at_image_size), "64": {"validation": one_hot_ish(one_more_wrong), "test": one_hot_ish(labels)}},
        splits, baseline="48")
    assert swayed["options"]["64"]["test"]["accuracy"] == 1.0 and swayed["chosen"] == "48"


def test_each_size_is_scaled_by_a_temperature_fitted_at_that_size():
    labels = np.arange(40) % CLASSES
    answers = labels.copy()
    answers[:8] = (labels[:8] + 1) % CLASSES  # 80 % right at every size
    # As confident as right at the image size; at 64 px the same answers at 99 %: over-confident.
    by_size = {"48": {split: one_hot_ish(answers, 0.8) for split in testtime.SPLITS},
               "64": {split: one_hot_ish(answers, 0.99) for split in testtime.SPLITS}}
    figures = testtime.option_figures(by_size, {"validation": labels, "test": labels}, baseline="48")
    at_image_size, larger = figures["options"]["48"], figures["options"]["64"]
    assert at_image_size["temperature"] == pytest.approx(1.0, abs=0.05) and larger["temperature"] > 1.5
    # Its own temperature takes the over-confidence away: the loss is the image size's, not the far higher
    # loss of the 99 % answers as they are (which one temperature for all sizes would leave them).
    unscaled = -np.log(by_size["64"]["validation"][np.arange(40), labels]).mean()
    assert larger["validation"]["loss"] == pytest.approx(at_image_size["validation"]["loss"], rel=1e-3)
    assert larger["validation"]["loss"] < unscaled - 0.4


def test_measured_sizes_are_stored_and_shown_on_the_overview(tiny_data, tiny_results, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    assert evaluate.main(["--artifacts", str(copy), "--data-dir", str(tiny_data), "--test-sizes", "64,40"]) == 0
    image_size = artifacts.open_result_set(copy).config["image_size"]
    rs = check_stored_and_shown(copy, tiny_results, artifacts.TEST_TIME_SIZES, list(MODEL_IDS), str(image_size),
                                capsys.readouterr().out, "sizes (validation, accuracy %): 40: ", "Test-time resolution",
                                ["40 px", f"{image_size} px", "64 px"])
    # Evaluating the same weights again (to refresh the test files) keeps what was measured with them, and
    # records what the new Grad-CAM maps are of.
    measured = {m: rs.metrics(m)[artifacts.TEST_TIME_SIZES] for m in MODEL_IDS}
    assert evaluate.main(["--artifacts", str(copy), "--data-dir", str(tiny_data)]) == 0
    again = artifacts.open_result_set(copy)
    assert {m: again.metrics(m)[artifacts.TEST_TIME_SIZES] for m in MODEL_IDS} == measured
    assert {again.metrics(m)["gradcam_target"] for m in MODEL_IDS} == {"log-probability"}
    with pytest.raises(SystemExit):
        evaluate.main(["--artifacts", str(copy), "--test-sizes", "288,big"])
