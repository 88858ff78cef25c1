"""Recipes: the study's protocol unchanged, the tuned one's parts doing what they say, both recorded."""

import json
import shutil
from dataclasses import replace

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import ROOT, TINY_HP
from core import artifacts, augmentation, inference, models, recipes, training
from core.specs import MODEL_IDS, MODEL_SPECS


def test_the_study_recipe_is_the_studys_learning_rate_with_adam_at_a_constant_rate_and_plain_cross_entropy():
    for model_id in MODEL_IDS:
        recipe = recipes.for_model(recipes.STUDY, model_id)
        assert recipe.learning_rate == MODEL_SPECS[model_id].learning_rate
        assert type(recipe.make_optimizer()) is keras.optimizers.Adam and recipe.callbacks("val_loss") == []
        assert isinstance(recipe.loss(), keras.losses.SparseCategoricalCrossentropy)


def test_every_model_has_a_tuned_recipe_that_builds():
    for model_id in MODEL_IDS:
        recipe = recipes.for_model(recipes.TUNED, model_id)
        assert recipe != recipes.for_model(recipes.STUDY, model_id)
        recipe.make_optimizer(), recipe.loss(), recipe.callbacks("val_loss")
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.for_model("best", "cnn")


def test_random_augmentation_is_only_chosen_for_models_that_read_photos():
    for model_id in MODEL_IDS:
        if recipes.for_model(recipes.TUNED, model_id).augmentation == "random":
            assert MODEL_SPECS[model_id].backbone is None
    with pytest.raises(ValueError, match="unknown augmentation"):
        recipes.Recipe(1e-3, augmentation="mixup")


def test_bfloat16_training_leaves_a_float32_model_with_the_learnt_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Activation("softmax")])
    hp = training.HyperParameters(batch_size=16, epochs=15, patience=15)
    history, _ = training.fit(model, recipes.Recipe(0.05), [x], y, x, y, hp, seed=0, precision="bfloat16")
    assert history["loss"].iloc[-1] < 0.5 * history["loss"].iloc[0]
    assert model.dtype_policy.name == "float32" and all(w.dtype == "float32" for w in model.weights)
    assert np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y) >= 0.9


def test_label_smoothing_is_cross_entropy_against_spread_targets():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    labels = np.array([0, 2])
    smoothing = 0.1
    targets = np.full((2, 3), smoothing / 3) + (1 - smoothing) * np.eye(3)[labels]
    expected = -(targets * np.log(probs)).sum(axis=1).mean()
    loss = recipes.Recipe(1e-3, label_smoothing=smoothing).loss()
    assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)
    plain = float(recipes.Recipe(1e-3).loss()(labels, probs))
    assert plain == pytest.approx(-np.log(probs[[0, 1], labels]).mean(), rel=1e-5) and plain < float(loss(labels, probs))


def test_the_plateau_schedule_lowers_the_rate_when_the_validation_loss_stalls():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, 32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    recipe = recipes.Recipe(1e-9, schedule="plateau")  # too small to lower any loss: every epoch stalls
    hp = training.HyperParameters(batch_size=8, epochs=6, patience=10)
    history, _ = training.fit(model, recipe, [x], y, x, y, hp, seed=0)
    rates = history["learning_rate"].to_numpy()
    stalled = 1 + recipes.PLATEAU_PATIENCE  # the first epoch sets the best loss, then PATIENCE without a better one
    assert np.allclose(rates[:stalled], 1e-9)
    assert np.allclose(rates[stalled], 1e-9 * recipes.PLATEAU_FACTOR)


def test_the_cosine_schedule_warms_up_then_falls_along_a_half_cosine_to_zero():
    recipe = recipes.Recipe(1e-3, schedule="cosine", cosine_epochs=12, warmup_epochs=2)
    rates = [recipe.cosine_rate(epoch) for epoch in range(15)]
    assert rates[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])  # warm-up, then the full rate at epoch 2
    assert rates[7] == pytest.approx(0.5e-3)  # halfway through the fall
    assert all(a > b for a, b in zip(rates[2:12], rates[3:13])) and rates[12:] == pytest.approx([0, 0, 0])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, 32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    history, _ = training.fit(model, recipe, [x], y, x, y, training.HyperParameters(batch_size=8, epochs=5, patience=10), 0)
    assert history["learning_rate"].to_numpy() == pytest.approx(rates[:5])
    short = recipes.Recipe(1e-3, schedule="cosine", cosine_epochs=3)
    history, _ = training.fit(model, short, [x], y, x, y, training.HyperParameters(batch_size=8, epochs=9, patience=10), 0)
    assert len(history) == 3 and recipes.Recipe(1e-3).epoch_budget(9) == 9  # no epoch at a zero rate
    with pytest.raises(ValueError, match="cosine_epochs"):
        recipes.Recipe(1e-3, schedule="cosine")
    with pytest.raises(ValueError, match="unknown schedule"):
        recipes.Recipe(1e-3, schedule="step")


def test_a_cosine_run_is_not_stopped_early_and_keeps_its_best_epoch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    wrong = 1 - y  # a validation loss that rises as the model learns: patience 1 would stop at epoch 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    cosine = recipes.Recipe(0.05, schedule="cosine", cosine_epochs=6)
    history, best_epoch = training.fit(model, cosine, [x], y, x, wrong, training.HyperParameters(
        batch_size=16, epochs=20, patience=1), 0)
    assert len(history) == 6 and best_epoch < 6
    kept = model.evaluate(x, wrong, verbose=0, return_dict=True)["loss"]
    assert kept == pytest.approx(history["val_loss"].iloc[best_epoch - 1], rel=1e-4)
    assert recipes.Recipe(1e-3).patience(4) == 4 and cosine.patience(4) == 6


def test_head_epochs_train_the_classifier_alone_then_everything():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)

    def train(recipe):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(4, name="hidden")
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name=models.CLASSIFIER)(hidden(inputs)))
        start = [layer.get_weights()[0].copy() for layer in (hidden, model.get_layer(models.CLASSIFIER))]
        history, best_epoch = training.fit(model, recipe, [x], y, x, y, training.HyperParameters(
            batch_size=16, epochs=4, patience=10), 0)
        moved = [not np.array_equal(layer.get_weights()[0], before)
                 for layer, before in zip((hidden, model.get_layer(models.CLASSIFIER)), start)]
        return history, best_epoch, moved, model

    # After the head's epochs nothing trains (rate 0): only the classifier moved.
    history, best_epoch, moved, model = train(recipes.Recipe(0.0, head_epochs=2, head_learning_rate=0.1))
    assert moved == [False, True] and all(layer.trainable for layer in model.layers)
    assert list(history["epoch"]) == [1, 2, 3, 4] and best_epoch > 2  # one history; the kept epoch is a later one
    assert history["learning_rate"].tolist() == pytest.approx([0.1, 0.1, 0, 0])
    history, _, moved, _ = train(recipes.Recipe(1e-2, head_epochs=2, head_learning_rate=0.1))
    assert moved == [True, True]
    head_only = recipes.Recipe(1e-2, schedule="plateau", head_epochs=2, head_learning_rate=0.1).head_phase()
    assert (head_only.learning_rate, head_only.head_epochs, head_only.schedule) == (0.1, 0, "constant")
    assert "the classifier alone first, 2 epochs at 0.1" in recipes.Recipe(1e-2, head_epochs=2, head_learning_rate=0.1).describe()


def test_cutmix_trains_on_mixed_targets_and_validates_on_the_labels():
    with pytest.raises(ValueError, match="cutmix needs augmentation='random'"):
        recipes.Recipe(1e-3, cutmix=1.0)
    cutmix = recipes.Recipe(3e-3, augmentation="random", cutmix=1.0)
    assert "CutMix (alpha 1)" in cutmix.describe() and cutmix.head_phase().cutmix == 1.0
    # Mixed targets: the smoothed loss is the cross-entropy against them; the accuracy asks for their largest share.
    probs = np.array([[0.6, 0.3, 0.1]], np.float32)
    targets = np.array([[0.25, 0.75, 0.0]], np.float32)
    assert float(cutmix.loss()(targets, probs)) == pytest.approx(-(targets * np.log(probs)).sum(), rel=1e-5)
    accuracy = recipes.TopLabelAccuracy()
    accuracy.update_state(targets, probs)
    assert float(accuracy.result()) == 0.0
    # Red photos against blue ones: a small CNN learns them on CutMix batches and is validated on plain labels.
    rng = np.random.default_rng(3)
    y = np.arange(64) % 2
    x = rng.uniform(0, 60, size=(64, 16, 16, 3)).astype(np.float32)
    x[y == 0, :, :, 0] += 180
    x[y == 1, :, :, 2] += 180
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    history, _ = training.fit(model, cutmix, [x], y, x, y, training.HyperParameters(batch_size=16, epochs=30,
                                                                                      patience=30), 0)
    assert history["loss"].notna().all() and history["val_accuracy"].iloc[-1] == 1.0


def test_mixup_mixes_cached_trunk_outputs_too_and_not_with_cutmix():
    with pytest.raises(ValueError, match="cutmix or mixup"):
        recipes.Recipe(1e-3, augmentation="random", cutmix=1.0, mixup=0.4)
    mixup = recipes.Recipe(1e-3, mixup=0.4)  # on the cached views, as the fine-tuned models train
    assert "mixup (alpha 0.4)" in mixup.describe() and mixup.head_phase().mixup == 0.4
    assert isinstance(mixup.loss(), recipes.SmoothedCrossentropy)
    batch = np.zeros((8, 3, 3, 4), np.float32) + np.arange(8, dtype=np.float32)[:, None, None, None]
    inputs, targets = training.augmenter(mixup, 8)(tf.constant(batch), tf.range(8))
    assert targets.shape == (8, 8) and inputs.shape == batch.shape
    assert training.augmenter(recipes.Recipe(1e-3), 8) is None  # the cached views as they come


def test_a_tuned_run_records_each_models_recipe_and_cannot_resume_as_the_study(tiny_data, tmp_path):
    hp = training.HyperParameters(**{**TINY_HP, "epochs": 1})
    out = tmp_path / "tuned"
    status = training.run(tiny_data, out, ["cnn"], hp, random_backbones=True, progress=False, recipe=recipes.TUNED)
    assert status == {"cnn": "trained"}
    config = json.loads((out / artifacts.MANIFEST).read_text())["config"]
    tuned = recipes.for_model(recipes.TUNED, "cnn")
    assert config["recipe"] == "tuned" and config["recipes"]["cnn"] == tuned.to_json()
    model_json = json.loads((out / "cnn" / artifacts.MODEL_JSON).read_text())
    assert model_json["recipe"] == tuned.to_json() and model_json["learning_rate"] == tuned.learning_rate
    with pytest.raises(artifacts.ResultSetError, match="recipe"):
        training.run(tiny_data, out, ["cnn"], hp, random_backbones=True, progress=False)
    # A changed field is recorded, and a set cannot be continued with another change (a resume with the
    # same ones trains nothing).
    changed = tmp_path / "changed"
    changes = ["cnn.learning_rate=1e-3", "cnn.cosine_epochs=3"]
    training.run(tiny_data, changed, ["cnn"], hp, random_backbones=True, progress=False, recipe=recipes.TUNED,
                 recipe_changes=changes)
    recorded = json.loads((changed / "cnn" / artifacts.MODEL_JSON).read_text())["recipe"]
    assert (recorded["learning_rate"], recorded["cosine_epochs"], recorded["weight_decay"]) == (1e-3, 3, tuned.weight_decay)
    assert training.run(tiny_data, changed, ["cnn"], hp, random_backbones=True, progress=False, recipe=recipes.TUNED,
                        recipe_changes=changes) == {"cnn": "done"}
    with pytest.raises(artifacts.ResultSetError, match="other recipes for cnn"):
        training.run(tiny_data, changed, ["cnn"], hp, random_backbones=True, progress=False, recipe=recipes.TUNED)


def test_recipe_changes_parse_each_fields_type_and_name_what_is_wrong():
    chosen = {m: recipes.for_model(recipes.TUNED, m) for m in MODEL_IDS}
    changed = recipes.with_changes(chosen, ["resnet50.learning_rate=1e-5", "resnet50.head_epochs=8",
                                            "cnn.augmentation=random", "cnn.cosine_epochs=1e2"])
    assert changed["resnet50"] == replace(chosen["resnet50"], learning_rate=1e-5, head_epochs=8)
    assert changed["cnn"].augmentation == "random" and changed["cnn"].cosine_epochs == 100
    assert changed["vgg16"] == chosen["vgg16"] and chosen["resnet50"].head_epochs == 0  # the others untouched
    for bad, message in (("resnet50.rate=1e-5", "FIELD one of"), ("alexnet.learning_rate=1", "MODEL one of"),
                         ("resnet50.learning_rate", "MODEL.FIELD=VALUE"), ("cnn.cosine_epochs=2.5", "takes a whole number"),
                         ("cnn.schedule=step", "unknown schedule")):
        with pytest.raises(ValueError, match=message):
            recipes.with_changes(chosen, [bad])


def test_a_run_takes_its_recipes_budget_and_arithmetic_unless_given():
    assert training.HyperParameters.for_recipe(recipes.STUDY, epochs=None) == training.HyperParameters()
    tuned = training.HyperParameters.for_recipe(recipes.TUNED, epochs=None, patience=None, image_size=224)
    assert (tuned.epochs, tuned.patience, tuned.image_size) == (recipes.TUNED_EPOCHS, recipes.TUNED_PATIENCE, 224)
    assert training.HyperParameters.for_recipe(recipes.TUNED, epochs=12).epochs == 12
    assert training.default_train_precision(recipes.STUDY) == "float32"
    assert training.default_train_precision(recipes.TUNED) == "auto"


def test_a_model_from_before_recipes_reads_as_the_studys_at_its_learning_rate(tiny_results):
    info = dict(artifacts.open_result_set(tiny_results).models["vgg16"])
    assert recipes.as_trained(info) == recipes.Recipe.from_json(info["recipe"])
    del info["recipe"]
    assert recipes.as_trained(info) == recipes.for_model(recipes.STUDY, "vgg16") == recipes.Recipe(info["learning_rate"])


def test_a_result_set_from_before_recipes_resumes_as_the_study_recipe(tiny_data, tiny_results, tmp_path):
    old = shutil.copytree(tiny_results, tmp_path / "old")
    manifest = json.loads((old / artifacts.MANIFEST).read_text())
    del manifest["config"]["recipe"], manifest["config"]["recipes"]
    (old / artifacts.MANIFEST).write_text(json.dumps(manifest))
    status = training.run(tiny_data, old, hp=training.HyperParameters(**TINY_HP), random_backbones=True, progress=False)
    assert set(status.values()) == {"done"}


def test_a_model_trained_on_smaller_crops_is_validated_stored_and_tested_at_the_image_size(tiny_data, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="train_size needs augmentation='random'"):
        recipes.Recipe(1e-3, train_size=32)
    assert "trained at 32 px" in recipes.Recipe(1e-3, augmentation="random", train_size=32).describe()
    crop_sizes = set()
    draw = augmentation.random_crop_flip_jitter

    def recording(batch, size=None):
        crops = draw(batch, size)
        crop_sizes.add(tuple(crops.shape[1:3]))
        return crops

    monkeypatch.setattr(augmentation, "random_crop_flip_jitter", recording)
    hp = training.HyperParameters(**{**TINY_HP, "epochs": 2})
    out = tmp_path / "smaller"
    status = training.run(tiny_data, out, ["cnn_attention"], hp, random_backbones=True, progress=False,
                          recipe=recipes.TUNED, recipe_changes=["cnn_attention.train_size=32"])
    assert status == {"cnn_attention": "trained"} and crop_sizes == {(32, 32)}
    result_set = artifacts.open_result_set(out)
    assert result_set.models["cnn_attention"]["recipe"]["train_size"] == 32
    model = inference.load_model(result_set, "cnn_attention")
    assert model.input_shape[1:3] == (TINY_HP["image_size"],) * 2
    history = pd.read_csv(out / "cnn_attention" / "history.csv")
    assert len(history) == 2 and history["val_loss"].notna().all()


def test_the_shipped_tuned_set_was_trained_with_the_recipes_the_code_calls_tuned():
    """The README's recipe table, the benchmark's time and the pages describe ``TUNED_RECIPES``; the shipped set
    must be what they describe (a recipe changed in the code is only true once its models are retrained)."""
    config = json.loads((ROOT / "artifacts" / artifacts.MANIFEST).read_text())["config"]
    assert config["recipe"] == recipes.TUNED
    for model_id in MODEL_IDS:
        recorded = json.loads((ROOT / "artifacts" / model_id / artifacts.MODEL_JSON).read_text())["recipe"]
        tuned = recipes.for_model(recipes.TUNED, model_id)
        assert recipes.Recipe.from_json(config["recipes"][model_id]) == tuned, model_id
        assert recipes.Recipe.from_json(recorded) == tuned, model_id
