"""Tables the pages show beside the models: the soft-voting ensembles, and how each model was trained."""

import shutil

import numpy as np
import pytest

from core import artifacts, calibration, comparison, recipes
from core.specs import MODEL_IDS, MODEL_SPECS


def test_ensembles_average_the_scaled_probabilities_of_all_models_and_of_the_imagenet_ones(tiny_results):
    rs = artifacts.open_result_set(tiny_results)
    table = comparison.ensemble_table(rs).set_index("ensemble")
    assert list(table.index) == ["all 6 models", "the ImageNet-based models"]
    for name, ids in [("all 6 models", MODEL_IDS), ("the ImageNet-based models", MODEL_IDS[2:])]:
        predictions = [rs.predictions(m) for m in ids]
        temperatures = [rs.metrics(m)["calibration"]["temperature"] for m in ids]
        voted = np.mean([calibration.scale(p.probs, t) for p, t in zip(predictions, temperatures)], axis=0).argmax(axis=1)
        row = table.loc[name]
        assert row["correct"] == int((voted == predictions[0].y_true).sum()) and row["n"] == len(voted)
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
        best = max(rs.metrics(m)["accuracy"] for m in ids)
        assert row["best_member_accuracy"] == pytest.approx(best)


@pytest.fixture(scope="module")
def generated_views(tiny_results, tmp_path_factory):
    """A copy of the tiny result set in which validation kept the photo alone for the CNN and took five crops
    for the other five models, whose averaged views (generated) are 90 % sure of the true class of every test
    photo."""
    copy = tmp_path_factory.mktemp("views") / "copy"
    shutil.copytree(tiny_results, copy)
    rs = artifacts.open_result_set(copy)
    writer = artifacts.ResultSetWriter(copy, rs.config)
    for model_id in MODEL_IDS:
        stored, metrics = rs.predictions(model_id), rs.metrics(model_id)
        chosen = "photo" if model_id == "cnn" else "five crops"
        metrics[artifacts.TEST_TIME_VIEWS] = {"baseline": "photo", "chosen": chosen, "options": {
            "photo": {"temperature": metrics["calibration"]["temperature"], "test": {"accuracy": metrics["accuracy"]}},
            "five crops": {"temperature": 1.0, "test": {"accuracy": 1.0}}}}
        with writer.model_folder(model_id, keep_existing=True) as folder:
            artifacts.write_json(folder / artifacts.METRICS, metrics)
            if chosen != "photo":
                sure = np.full(stored.probs.shape, 0.1 / (stored.probs.shape[1] - 1), np.float32)
                sure[np.arange(len(sure)), stored.y_true] = 0.9
                artifacts.write_predictions(folder / artifacts.VIEW_PREDICTIONS, stored.files, stored.y_true, sure)
    return copy


def test_ensembles_with_test_time_views_read_each_models_view_predictions(tiny_results, generated_views):
    assert not comparison.ensemble_table(artifacts.open_result_set(tiny_results))["with_views"].any()
    rs = artifacts.open_result_set(generated_views)
    assert rs.problems == {} and rs.predictions("cnn", with_views=True) is None
    table = comparison.ensemble_table(rs).set_index("ensemble")
    assert list(table.index) == ["all 6 models", "the ImageNet-based models", "all 6 models, with views",
                                 "the ImageNet-based models, with views"]
    plain = comparison.ensemble_table(artifacts.open_result_set(tiny_results)).set_index("ensemble")
    for name in plain.index:  # the rows without views are as before
        assert table.loc[name, "correct"] == plain.loc[name, "correct"]
        # Five members sure of the truth outvote the CNN's photo alone on every test photo.
        with_views = table.loc[f"{name}, with views"]
        assert with_views["correct"] == with_views["n"] and with_views["best_member_accuracy"] == 1.0


def test_paired_tests_with_test_time_views_pair_each_models_views(tiny_results, generated_views):
    from test_pages import page

    assert not page("statistics", tiny_results).toggle  # no views stored: no switch
    rs = artifacts.open_result_set(generated_views)
    title = {m: MODEL_SPECS[m].title for m in MODEL_IDS}
    _, alone, _ = comparison.mcnemar_tables(rs)
    _, with_views, verdicts = comparison.mcnemar_tables(rs, with_views=True)
    cnn_right = rs.predictions("cnn").correct
    for model_id in MODEL_IDS[1:]:  # right on every photo with its views: never wrong where the CNN is right
        assert with_views.loc[title["cnn"], title[model_id]] == 0
        assert with_views.loc[title[model_id], title["cnn"]] == int((~cnn_right).sum())
    assert with_views.loc[title["vgg16"], title["resnet50"]] == 0 and not alone.equals(with_views)
    at = page("statistics", generated_views)
    assert not at.exception and at.toggle[0].label == "With test-time views"
    shown_alone = [m.value for m in at.markdown if m.value.startswith("- ")]
    at.toggle[0].set_value(True).run()
    assert not at.exception
    assert [m.value for m in at.markdown if m.value.startswith("- ")] != shown_alone
    assert any(v in m.value for m in at.markdown for v in verdicts)


def test_recipes_read_back_from_a_model_json_and_say_what_they_are():
    tuned_cnn = recipes.for_model(recipes.TUNED, "cnn")
    assert recipes.Recipe.from_json(tuned_cnn.to_json()) == tuned_cnn
    # A record from before a field existed reads with that field's default; an unknown field is ignored.
    assert recipes.Recipe.from_json({"learning_rate": 1e-4, "optimizer": "adam", "later": 1}) == recipes.Recipe(1e-4)
    assert recipes.for_model(recipes.STUDY, "vgg16").describe() == (
        "Adam 1e-05; constant rate; plain cross-entropy; the cached views")
    text = tuned_cnn.describe()
    assert f"cosine decay to zero at epoch {tuned_cnn.cosine_epochs}" in text and "trained at 160 px" in text
    assert "cached views" in recipes.for_model(recipes.TUNED, "vgg16").describe()
    assert "fresh random crops" in recipes.Recipe(1e-3, augmentation="random").describe()
