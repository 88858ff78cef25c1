import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from core import benchmarks, recipes, training


def test_projection_counts_every_step_of_a_run():
    measured = {
        "read_ms_per_full_size_photo": 10.0,
        "trunk_ms_per_image": {"vgg16": {"train_views": 20.0, "float32": 40.0}},
        "costs": {
            "vgg16": {"train_ms": 5.0, "validation_ms": 2.0, "evaluation_ms": 30.0},
            "vgg16_attention": {"train_ms": 1.0, "validation_ms": 1.0, "evaluation_ms": 30.0,
                                "frozen_features_ms": {"train_views": 2.0, "float32": 4.0}},
        },
    }
    hp = training.HyperParameters(views=3, epochs=10)
    counts = {"train": 600, "validation": 60, "test": 60}
    p = benchmarks.project_full_dataset(measured, hp, {"vgg16": 4}, counts)
    assert p["loading_minutes"] == pytest.approx(10 * 720 / 60000)
    assert p["trunk_minutes"] == pytest.approx((20 * 1800 + 40 * 120 + 2 * 1800 + 4 * 120) / 60000)
    assert p["training_minutes"] == pytest.approx((4 * (5 * 600 + 2 * 60) + 10 * (1 * 600 + 1 * 60)) / 60000)
    assert p["evaluation_minutes"] == pytest.approx(2 * 30 * 60 / 60000)
    assert p["total_minutes"] == pytest.approx(
        p["loading_minutes"] + p["trunk_minutes"] + p["training_minutes"] + p["evaluation_minutes"])


def test_the_training_benchmark_times_every_model_and_the_cache_against_a_naive_fit(tiny_results):
    done = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "train", "--image-size", "32", "--images", "16", "--rounds", "2",
         "--artifacts", str(tiny_results), "--train-precision", "bfloat16", "--json"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    comparison = result["cache_vs_naive"]
    assert comparison["model"] == "resnet50" and len(comparison["naive_epoch_s"]) == 2
    assert comparison["speedup"] > 0 and "faster" in done.stdout
    assert set(result["costs"]) == {"cnn", "cnn_attention", "vgg16", "resnet50", "vgg16_attention", "resnet50_attention"}
    assert all(cost["train_ms"] > 0 and cost["evaluation_ms"] > 0 for cost in result["costs"].values())
    # Timed as the set's recipes train: the tiny set's models all read the cached views.
    assert {cost["augmentation"] for cost in result["costs"].values()} == {"views"}
    projection = result["full_dataset_projection"]["all_epochs"]
    assert projection["counts"]["train"] == 3115 and projection["total_minutes"] > 0
    assert "Projected, not measured" in done.stdout
    # The recorded set's own epochs and photos: one seed of all six as it ran them, trained parts in bfloat16.
    own = result["full_dataset_projection"]["recorded_epochs_own_photos"]
    assert result["train_precision"] == "bfloat16" and own["counts"] == result["recorded_run"]["counts"]
    assert 0 < own["total_minutes"] < projection["total_minutes"] and "one seed of all six" in done.stdout


def test_a_recorded_run_scales_with_its_training_and_test_photos(tiny_results):
    from core import artifacts

    rs = artifacts.open_result_set(tiny_results)
    ran = benchmarks.scale_recorded_run(rs, 0.0, {"train": 1, "validation": 1, "test": 1})["counts"]
    doubled = benchmarks.scale_recorded_run(rs, 0.0, {split: 2 * n for split, n in ran.items()})
    timings = rs.manifest["timings"]
    read_minutes = (timings["split_seconds"] + timings["load_seconds"]) / 60
    assert doubled["evaluation_recorded"] and doubled["epochs"] == {m: i["epochs_run"] for m, i in rs.models.items()}
    assert doubled["scaled_minutes"] == pytest.approx(2 * (doubled["measured_minutes"] - read_minutes))
    with_reading = benchmarks.scale_recorded_run(rs, 60.0, {split: 2 * n for split, n in ran.items()})
    assert with_reading["scaled_minutes"] == pytest.approx(doubled["scaled_minutes"] + 2 * sum(ran.values()) / 1000)


def test_replayed_early_stopping_stops_where_keras_would():
    import keras

    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    for _ in range(40):
        # A falling, noisy validation loss with ties, as a real run's is.
        val_loss = np.round(np.cumsum(rng.normal(-0.02, 0.05, size=30)), 2)
        for patience in range(1, 7):
            stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)
            stopper.set_model(model)
            model.stop_training = False
            stopper.on_train_begin()
            ran = 0
            for epoch, loss in enumerate(val_loss):
                ran = epoch + 1
                stopper.on_epoch_end(epoch, {"val_loss": float(loss)})
                if model.stop_training:
                    break
            assert benchmarks.epochs_under_patience(val_loss, patience) == ran


def test_a_recorded_run_is_replayed_under_a_shorter_patience(tiny_results):
    from core import artifacts

    rs = artifacts.open_result_set(tiny_results)
    own = benchmarks.scale_recorded_run(rs, 0.0, patience=rs.config["patience"])
    assert own["epochs"] == own["recorded_epochs"] == {m: i["epochs_run"] for m, i in rs.models.items()}
    shorter = benchmarks.scale_recorded_run(rs, 0.0, patience=1)
    assert shorter["patience"] == 1 and shorter["measured_minutes"] == own["measured_minutes"]
    for model_id in rs.models:
        val_loss = rs.history(model_id)["val_loss"].to_numpy()
        # Patience 1 stops at the first epoch whose loss is not a new minimum.
        first_miss = next((e + 1 for e in range(1, len(val_loss)) if val_loss[e] >= val_loss[:e].min()), len(val_loss))
        assert shorter["epochs"][model_id] == first_miss <= own["epochs"][model_id]


def test_a_grown_dataset_holds_the_originals_then_altered_copies(tmp_path):
    from conftest import make_dataset
    from core import dataset

    source = make_dataset(tmp_path / "source", per_split=(("train", 3), ("validation", 1), ("test", 1)))
    originals = dataset.scan(source)
    grown = benchmarks.grow_dataset(source, tmp_path / "grown", 2 * len(originals) + 1)
    files = dataset.scan(grown)
    assert len(files) == 2 * len(originals) + 1
    assert sorted((f.folder_split, f.label) for f in files if "copy1-" in f.path) == sorted((f.folder_split, f.label) for f in originals)
    first = originals[0]
    copy = next(f for f in files if f.path.endswith(f"copy1-{first.path.rsplit('/', 1)[1].rsplit('.', 1)[0]}.jpg"))
    original_pixels = np.asarray(benchmarks.images.read_image(f"{source}/{first.path}").convert("RGB"), np.float32)
    copy_pixels = np.asarray(benchmarks.images.read_image(f"{grown}/{copy.path}"), np.float32)
    assert copy_pixels.shape == original_pixels.shape
    assert np.abs(copy_pixels - original_pixels[:, ::-1]).mean() < np.abs(copy_pixels - original_pixels).mean()


def test_grown_copies_split_apart_from_their_originals_are_counted(tmp_path):
    from conftest import make_dataset
    from core import dataset

    source = make_dataset(tmp_path / "source", per_split=(("train", 4), ("validation", 1), ("test", 1)))
    grown = benchmarks.grow_dataset(source, tmp_path / "grown", 2 * len(dataset.scan(source)))
    plan = dataset.plan_splits(grown, progress=False).to_json()
    found = benchmarks.copies_apart(plan)
    assert found["copies"] == len(dataset.scan(source))
    # The detection joins these recoloured, mirrored, re-encoded copies to their originals.
    assert found["apart"] == 0
    # Moving one copy to another split is counted.
    train, test = plan["files"]["train"], plan["files"]["test"]
    moved = next(entry for entry in train if "copy1-" in entry[0])
    train.remove(moved)
    test.append(moved)
    assert benchmarks.copies_apart(plan) == {"copies": found["copies"], "apart": 1}


def test_models_trained_on_fresh_random_crops_are_timed_with_them_at_their_training_size():
    photos = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    weights = {"vgg16": "random", "resnet50": "random"}
    trained_with = {"cnn": recipes.Recipe(1e-3), "cnn_attention": recipes.Recipe(1e-3, augmentation="random", train_size=24)}
    measured = benchmarks.training_benchmark(photos, 4, weights, training.HyperParameters(image_size=32, batch_size=4),
                                             rounds=1, trained_with=trained_with, model_ids=("cnn", "cnn_attention"))
    assert {m: (c["augmentation"], c["train_size"]) for m, c in measured["costs"].items()} == {
        "cnn": ("views", 32), "cnn_attention": ("random", 24)}
    assert all(c["train_ms"] > 0 for c in measured["costs"].values()) and measured["cache_vs_naive"] == {}


def test_a_backbone_cut_deeper_is_timed_at_its_cut_for_both_of_its_models():
    # The attention model's evaluation reads the trunk output (its frozen layers above the cut run inside it), not
    # the frozen features its head trains on: at a deeper cut the two differ in shape.
    photos = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    weights = {"vgg16": "random", "resnet50": "random"}
    trained_with = {"resnet50": recipes.Recipe(1e-4, frozen_through="conv4_block6_out"),
                    "resnet50_attention": recipes.Recipe(1e-3)}
    measured = benchmarks.training_benchmark(photos, 4, weights, training.HyperParameters(image_size=32, batch_size=4),
                                             rounds=1, trained_with=trained_with, compare="",
                                             model_ids=("resnet50", "resnet50_attention"))
    costs = measured["costs"]
    assert all(c["train_ms"] > 0 and c["evaluation_ms"] > 0 for c in costs.values())
    assert costs["resnet50_attention"]["frozen_features_ms"]["float32"] > 0 and set(measured["trunk_ms_per_image"]) == {"resnet50"}
