import dataclasses
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import ROOT, TINY_CLASSES, make_photo
from core import artifacts, augmentation, calibration, evaluation, explain, images, inference, models, openset, reports
from core.specs import BACKBONES, MODEL_IDS, MODEL_SPECS


@pytest.fixture(scope="module")
def loaded_models(tiny_results):
    rs = artifacts.open_result_set(tiny_results)
    return rs, inference.load_models(rs)


@pytest.fixture(scope="module")
def loaded(loaded_models):
    rs, models_loaded = loaded_models
    assert models_loaded.problems == {}
    return rs, inference.Classifier(models_loaded.models)


def test_shared_trunk_path_matches_each_full_model(loaded):
    rs, classifier = loaded
    rng = np.random.default_rng(5)
    photos = np.stack([images.to_array(make_photo(c, rng), 48) for c in TINY_CLASSES.values()])
    result = classifier.classify(photos)
    assert list(result.results) == list(MODEL_IDS)
    for model_id in MODEL_IDS:
        alone = inference.load_model(rs, model_id).predict(photos.astype("float32"), verbose=0)
        assert np.allclose(result.results[model_id].probs, alone, atol=1e-4), model_id


def tiny_photos(size=48, per_class=3):
    rng = np.random.default_rng(7)
    return np.stack([images.to_array(make_photo(c, rng), size) for c in TINY_CLASSES.values() for _ in range(per_class)])


def test_test_time_views_average_each_models_views_as_measured(loaded_models):
    rs, loaded = loaded_models
    chosen = {"cnn": inference.ChosenViews("five crops", augmentation.TEST_VIEW_SETS["five crops"], 0.8),
              "resnet50": inference.ChosenViews("photo + mirror", ("photo", "mirror"), 1.5),
              "resnet50_attention": inference.ChosenViews("photo + mirror + five crops",
                                                          augmentation.TEST_VIEW_SETS["photo + mirror + five crops"], 1.0)}
    classifier = inference.Classifier(loaded.models, temperatures=loaded.temperatures, specs=loaded.specs, views=chosen)
    photos = tiny_photos()
    alone, averaged = classifier.classify(photos), classifier.classify(photos, with_views=True)
    for model_id in MODEL_IDS:
        if model_id not in chosen:  # the others answer for the photo alone either way
            np.testing.assert_allclose(averaged.results[model_id].probs, alone.results[model_id].probs, atol=1e-6)
            continue
        option, views, temperature = chosen[model_id]
        # As core.testtime measures it: each view through the whole model, the probabilities averaged, scaled.
        each = [evaluation.probabilities(loaded.models[model_id], rs.spec(model_id), augmentation.test_time_view(photos, v))
                for v in views]
        np.testing.assert_allclose(averaged.results[model_id].probs, calibration.scale(np.mean(each, axis=0), temperature),
                                   atol=1e-4, err_msg=model_id)
        assert not np.allclose(averaged.results[model_id].probs, alone.results[model_id].probs, atol=1e-3), model_id
        # The maps stay the photo's.
        np.testing.assert_array_equal(averaged.results[model_id].gradcam, alone.results[model_id].gradcam)


def test_the_chosen_views_are_read_from_the_stored_figures():
    def stored(chosen):
        return {artifacts.TEST_TIME_VIEWS: {
            "baseline": "photo", "chosen": chosen, "views": {k: list(v) for k, v in augmentation.TEST_VIEW_SETS.items()},
            "options": {k: {"temperature": 0.5 + i} for i, k in enumerate(augmentation.TEST_VIEW_SETS)}}}
    assert inference.chosen_views({}) is None and inference.chosen_views(stored("photo")) is None
    assert inference.chosen_views(stored("five crops")) == (
        "five crops", augmentation.TEST_VIEW_SETS["five crops"], 2.5)


def test_each_backbone_is_built_once_and_its_models_answer_as_built_alone(loaded_models):
    rs, loaded = loaded_models
    assert loaded.problems == {} and list(loaded.models) == list(MODEL_IDS)
    assert set(loaded.pooled_features) == set(BACKBONES)
    for backbone in BACKBONES.values():
        finetuned, attention = loaded.models[backbone.name], loaded.models[f"{backbone.name}_attention"]
        # One trunk for both; the fine-tuned model has its own copy of the block above it.
        assert finetuned.get_layer(backbone.trunk_output) is attention.get_layer(backbone.trunk_output)
        assert finetuned.get_layer(backbone.last_conv) is not attention.get_layer(backbone.last_conv)
    photos = tiny_photos().astype("float32")
    for model_id in ("vgg16", "resnet50"):  # the copied block (the attention models keep build_model's own)
        info = rs.models[model_id]
        alone = models.build_model(model_id, info["num_classes"], info["image_size"], info["dropout"], "random")
        models.trained_part(alone, MODEL_SPECS[model_id]).load_weights(rs.weights_path(model_id))
        np.testing.assert_allclose(
            loaded.models[model_id].predict(photos, verbose=0), alone.predict(photos, verbose=0), atol=1e-6, err_msg=model_id
        )


def test_predictor_answers_as_the_classifier_with_the_open_set_verdict_on_imagenet_features(loaded, loaded_models):
    rs, classifier = loaded
    photos = tiny_photos()
    # Probabilities as the models output them, as the fixture's classifier gives them (temperature scaling on
    # top of both: test_calibration).
    loaded_models = dataclasses.replace(loaded_models[1], temperatures={})
    plain = inference.Predictor(loaded_models, None)
    classification, flags = plain(photos)
    assert flags is None and not plain.judges_open_set
    expected = classifier.classify(photos)
    for model_id in MODEL_IDS:
        np.testing.assert_allclose(classification.results[model_id].probs, expected.results[model_id].probs, atol=1e-5)
    np.testing.assert_allclose(classification.ensemble(), expected.ensemble(), atol=1e-5)

    # The features the verdict reads, as core.features builds them (keras.applications, pooling="avg"), on the
    # same seeded random backbone weights the tiny set was trained with.
    reference = {}
    for name in BACKBONES:
        inputs = keras.Input(photos.shape[1:])
        net = models._APPLICATIONS[name](
            include_top=False, weights=None, input_tensor=models.CaffePreprocess()(inputs), pooling="avg"
        )
        models._seeded_random_weights(net)
        reference[name] = openset.normalise(np.asarray(keras.Model(inputs, net.output)(photos.astype("float32"))))
    labels = np.repeat(np.arange(len(TINY_CLASSES)), len(photos) // len(TINY_CLASSES))
    detectors = openset.fit_detectors({"train": reference, "validation": reference}, {"train": labels, "validation": labels})
    stored = openset.to_stored(detectors, {}, photos.shape[1])
    for name, detector in openset.from_stored(*stored).items():
        # Thresholds at the median score, so that the flags compared below are mixed, not all alike.
        scores = detector.scores(openset.joined(reference, stored[0]["detectors"][name]["backbones"]))
        stored[0]["detectors"][name]["threshold"] = float(np.median(scores))
    expected_flags = openset.verdicts(stored[0], openset.from_stored(*stored), reference, MODEL_IDS)
    judging = inference.Predictor(loaded_models, stored)
    assert judging.judges_open_set
    _, flags = judging(photos)
    assert set(flags) == {*MODEL_IDS, openset.ENSEMBLE}
    assert 0 < flags[openset.ENSEMBLE].sum() < len(photos)
    # The app's compiled classifier judges on its own trunks the same way, in the same pass as its answers.
    judged = inference.Classifier(loaded_models.models, inference.OpenSetJudge(*stored, loaded_models.pooled_features))
    assert expected.unknown is None and classifier.judge is None  # the tiny set has no stored verdict
    unknown = judged.classify(photos).unknown
    for name, expected_flag in expected_flags.items():
        np.testing.assert_array_equal(flags[name], expected_flag, err_msg=name)
        np.testing.assert_array_equal(unknown[name], expected_flag, err_msg=name)
    # A stored verdict of another image size is not judged here (the caller falls back to core.features).
    assert not inference.Predictor(loaded_models, ({**stored[0], "image_size": 224}, stored[1])).judges_open_set


def test_probabilities_and_heatmaps_are_well_formed(loaded):
    rs, classifier = loaded
    image = make_photo(TINY_CLASSES["banana"], np.random.default_rng(0), size=90)
    result = classifier.classify_image(image)
    for model_id, r in result.results.items():
        assert r.probs.shape == (1, 4) and np.isclose(r.probs.sum(), 1, atol=1e-5)
        assert r.gradcam.shape[:2] == (1, 4)
        assert 0 <= r.gradcam.min() and r.gradcam.max() <= 1 + 1e-6
        if rs.models[model_id]["attention"]:
            assert r.attention.shape[1:] == r.gradcam.shape[2:] and r.attention.max() == pytest.approx(1, abs=1e-5)
        heat = explain.upsample(r.gradcam[0, 0], image.size)
        assert heat.shape == (90, 90) and 0 <= heat.min() and heat.max() <= 1
        assert explain.overlay(image, r.gradcam[0, 0], 0.5).size == image.size
    assert np.isclose(result.ensemble().sum(), 1, atol=1e-5)


def test_summary_counts_agreement_and_groups(loaded):
    rs, classifier = loaded
    classification = classifier.classify_image(make_photo(TINY_CLASSES["peas"], np.random.default_rng(1)))
    summary = reports.summarise(classification, rs)
    assert set(summary["models"]) == set(MODEL_IDS)
    names, groups = rs.class_names, np.array(rs.class_groups)
    answers = [names[int(r.probs[0].argmax())] for r in classification.results.values()]
    majority = summary["agreement"]["class"]
    assert summary["agreement"] == {"class": majority, "models": answers.count(majority), "of": 6}
    assert answers.count(majority) == max(answers.count(a) for a in answers)
    probabilities = {**{m: r.probs[0] for m, r in classification.results.items()}, "ensemble": classification.ensemble()[0]}
    for name, value in [*summary["models"].items(), ("ensemble", summary["ensemble"])]:
        probs = probabilities[name]
        order = np.argsort(-probs)[:3]
        assert [c for c, _ in value["top"]] == [names[i] for i in order]
        assert np.allclose([p for _, p in value["top"]], probs[order])
        # The group's probability is the sum over its classes, and the verdict the likelier group.
        in_group = probs[groups == value["group"]].sum()
        assert value["group_probability"] == pytest.approx(in_group) and in_group >= 0.5


def test_a_missing_trunk_weights_file_makes_backbone_models_unavailable(tiny_results, tmp_path):
    rs = artifacts.open_result_set(tiny_results)
    info = rs.models["vgg16"]
    info_copy = dict(info, backbone_weights="imagenet")
    rs.models["vgg16"] = info_copy
    with pytest.raises(inference.ModelUnavailable, match="vgg16_notop.weights.h5"):
        inference.load_model(rs, "vgg16", weights_dir=tmp_path)


def test_classify_script_reports_bad_files_and_classifies_the_rest(tiny_results, tmp_path):
    good = tmp_path / "apple.png"
    make_photo(TINY_CLASSES["apple"], np.random.default_rng(2)).save(good)
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "classify.py"), str(bad), str(good), "--json", "--artifacts", str(tiny_results)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "notes.jpg" in errors[0] and "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 1 and lines[0]["file"] == str(good)
    assert set(lines[0]["models"]) == set(MODEL_IDS)
    assert set(lines[0]["ensemble"]) >= {"top", "group"}
    assert all(len(m["top"]) == 3 and m["group"] in ("fruit", "vegetable") for m in lines[0]["models"].values())


from conftest import SHARED_DATA, SHARED_WEIGHTS, needs_shared  # noqa: E402


@needs_shared(SHARED_DATA)
def test_real_photos_go_through_the_validation_path_and_all_models(loaded):
    rs, classifier = loaded
    photos = sorted((SHARED_DATA / "test").rglob("*.jpg"))[::20][:6]
    assert photos
    for path in photos:
        image = images.read_image(path)
        result = classifier.classify_image(image)
        for r in result.results.values():
            assert np.isclose(r.probs.sum(), 1, atol=1e-5)
            heat = explain.upsample(r.gradcam[0, int(r.probs.argmax())], image.size)
            assert heat.shape == (image.height, image.width) and 0 <= heat.min() and heat.max() <= 1


@needs_shared(SHARED_WEIGHTS)
def test_local_imagenet_weights_build_the_real_backbones():
    from core import models
    from core.specs import MODEL_SPECS

    for model_id in ("vgg16", "resnet50_attention"):
        weights = models.imagenet_weights(MODEL_SPECS[model_id].backbone, SHARED_WEIGHTS)
        a = models.build_model(model_id, 5, 64, weights=weights)
        b = models.build_model(model_id, 5, 64, weights=weights)
        random = models.build_model(model_id, 5, 64, weights="random")
        spec = MODEL_SPECS[model_id]
        assert models.trunk_signature(a, spec) == pytest.approx(models.trunk_signature(b, spec), rel=1e-5)
        assert models.trunk_signature(a, spec) != pytest.approx(models.trunk_signature(random, spec), rel=1e-2)
