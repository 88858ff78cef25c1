import shutil
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from conftest import TINY_HP
from core import artifacts, cache, dataset, evaluation, inference, recipes, training
from core.specs import MODEL_IDS, MODEL_SPECS


def test_training_writes_a_complete_result_set(tiny_results):
    rs = artifacts.open_result_set(tiny_results)
    assert sorted(rs.models) == sorted(MODEL_IDS) and rs.problems == {}
    assert rs.class_names == ["apple", "banana", "carrot", "peas"]
    assert rs.groups == {"apple": "fruit", "banana": "fruit", "carrot": "vegetable", "peas": "vegetable"}
    for model_id in MODEL_IDS:
        history = rs.history(model_id)
        assert list(history["epoch"]) == [1, 2, 3, 4]
        for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds"):
            assert history[column].notna().all(), column
        assert history["learning_rate"].iloc[0] == pytest.approx(rs.models[model_id]["learning_rate"])
        metrics = rs.metrics(model_id)
        preds = rs.predictions(model_id)
        assert preds.probs.shape == (metrics["n"], 4)
        assert np.allclose(preds.probs.sum(axis=1), 1, atol=1e-5)
        assert metrics["accuracy"] == pytest.approx(preds.correct.mean())
        low, high = metrics["accuracy_interval"]
        assert low <= metrics["accuracy"] <= high
        assert np.array(metrics["confusion"]).sum() == metrics["n"]
        maps = rs.maps(model_id)
        assert maps["gradcam_pred"].dtype == np.float16 and len(maps["gradcam_pred"]) == metrics["n"]
        assert ("attention" in maps) == rs.models[model_id]["attention"]
        assert 0 <= float(maps["gradcam_pred"].min()) and float(maps["gradcam_pred"].max()) <= 1
        info = rs.models[model_id]
        assert 1 <= info["best_epoch"] <= info["epochs_run"] == 4


def test_every_model_learns_the_tiny_task(tiny_results):
    # Training loss, not test accuracy: 24 steps are too few for BatchNorm's moving averages to settle.
    rs = artifacts.open_result_set(tiny_results)
    for model_id in MODEL_IDS:
        loss = rs.history(model_id)["loss"]
        assert loss.iloc[-1] < loss.iloc[0], model_id


def test_backbone_models_store_only_what_training_changed(tiny_results):
    rs = artifacts.open_result_set(tiny_results)
    for model_id in ("vgg16", "resnet50", "vgg16_attention", "resnet50_attention"):
        info = rs.models[model_id]
        assert rs.weights_path(model_id).name == artifacts.TOP_WEIGHTS
        assert info["trainable_parameters"] < info["parameters"] / 2
        assert rs.weights_path(model_id).stat().st_size < info["parameters"] * 4 / 2
    assert rs.weights_path("cnn").name == artifacts.WHOLE_MODEL


def test_a_rerun_resumes_without_training_finished_models_again(tiny_data, tiny_results):
    before = {m: (tiny_results / m / artifacts.TOP_WEIGHTS if m not in ("cnn", "cnn_attention") else
                  tiny_results / m / artifacts.WHOLE_MODEL).stat().st_mtime_ns for m in MODEL_IDS}
    status = training.run(tiny_data, tiny_results, hp=training.HyperParameters(**TINY_HP),
                          random_backbones=True, progress=False)
    assert status == {m: "done" for m in MODEL_IDS}
    after = {m: (tiny_results / m / artifacts.TOP_WEIGHTS if m not in ("cnn", "cnn_attention") else
                 tiny_results / m / artifacts.WHOLE_MODEL).stat().st_mtime_ns for m in MODEL_IDS}
    assert before == after


def test_a_rerun_with_other_settings_is_refused(tiny_data, tiny_results):
    with pytest.raises(artifacts.ResultSetError, match="other settings"):
        training.run(tiny_data, tiny_results, hp=training.HyperParameters(**{**TINY_HP, "image_size": 64}),
                     random_backbones=True, progress=False)


def test_views_are_fixed_and_distinct_and_the_same_in_chunks_on_disk(tmp_path):
    photos = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    a = training.make_views(photos, 3, seed=0)
    b = training.make_views(photos, 3, seed=0, folder=tmp_path, chunk=2)
    assert len(a) == 3 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert isinstance(b[2], cache.StoredArray) and (tmp_path / "view2.npy").exists()
    assert np.array_equal(a[1], photos[:, :, ::-1])
    assert not np.array_equal(a[2], photos) and a[2].dtype == np.uint8


def test_view_batches_cover_every_item_once_per_epoch_in_a_new_order_and_mix():
    views = [np.arange(10)[:, None] * 1.0, np.arange(10)[:, None] + 100.0]
    batches = training.view_batches(views, np.arange(10), batch_size=4, seed=0)
    epochs = [[(x.numpy()[:, 0], y.numpy()) for x, y in batches] for _ in range(3)]
    for epoch in epochs:
        assert [len(y) for _, y in epoch] == [4, 4, 2]
        labels = np.concatenate([y for _, y in epoch])
        values = np.concatenate([x for x, _ in epoch])
        assert sorted(labels) == list(range(10))
        assert all(v in (label, label + 100) for v, label in zip(values, labels))
    orders = {tuple(np.concatenate([y for _, y in epoch])) for epoch in epochs}
    drawn = np.concatenate([np.concatenate([x for x, _ in epoch]) for epoch in epochs]) >= 100
    assert len(orders) == 3 and 0.2 < drawn.mean() < 0.8
    again = training.view_batches(views, np.arange(10), batch_size=4, seed=0)
    assert np.array_equal(next(iter(again))[1], epochs[0][0][1])


def test_view_batches_run_without_the_autotuner_whose_wake_up_fit_waits_for_at_every_epoch_end():
    batches = training.view_batches([np.zeros((4, 2))], np.arange(4), batch_size=2, seed=0)
    assert batches.options().autotune.enabled is False


def test_grad_cam_sanity_check_is_recorded(tiny_results):
    rs = artifacts.open_result_set(tiny_results)
    for model_id in MODEL_IDS:
        sanity = rs.metrics(model_id)["sanity"]
        assert -1 <= sanity["gradcam_rank_correlation"] <= 1
        assert sanity["threshold"] == evaluation.SANITY_MAX_CORRELATION and sanity["maps"] == evaluation.SANITY_MAPS
        assert sanity["passes"] == (sanity["gradcam_rank_correlation"] < sanity["threshold"])


def test_reevaluation_rewrites_test_files_with_the_same_predictions(tiny_data, tiny_results, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    before = artifacts.open_result_set(copy)
    # Read now: a result set reads its files when asked, so after re-evaluation it would read the new ones.
    written = {m: before.predictions(m).probs.copy() for m in MODEL_IDS}
    stamps = {m: (copy / m / artifacts.PREDICTIONS).stat().st_mtime_ns for m in MODEL_IDS}
    status = evaluation.reevaluate(before, data_dir=tiny_data, progress=False)
    assert status == {m: "evaluated" for m in MODEL_IDS}
    after = artifacts.open_result_set(copy)
    assert after.problems == {}
    for model_id in MODEL_IDS:
        assert (copy / model_id / artifacts.PREDICTIONS).stat().st_mtime_ns != stamps[model_id]
        # Training tested through the trunk outputs it cached (stored as float16), re-evaluation through the
        # float32 trunk directly: the same up to that rounding (4e-4 seen), far below what other weights give.
        assert np.allclose(after.predictions(model_id).probs, written[model_id], atol=2e-3)


def test_seeds_add_replicate_runs_and_resume(tiny_data, tmp_path):
    from core import comparison

    out = tmp_path / "seeds"
    hp = training.HyperParameters(**TINY_HP)
    status = training.run(tiny_data, out, ["cnn", "cnn_attention"], hp=hp, seeds=3, random_backbones=True,
                          progress=False)
    assert status == {"cnn": "trained", "cnn_attention": "trained"}
    rs = artifacts.open_result_set(out)
    assert rs.replicate_seeds("cnn_attention") == [1, 2]
    table = comparison.overview_table(rs).set_index("id")
    accuracies = {m: [rs.metrics(m)["accuracy"]] + [rs.replicate_metrics(m, s)["accuracy"] for s in (1, 2)]
                  for m in ("cnn", "cnn_attention")}
    row = table.loc["cnn_attention"]
    assert row["seed_runs"] == 3 and row["seed_mean_accuracy"] == pytest.approx(np.mean(accuracies["cnn_attention"]))
    pair = comparison.seed_pairs(rs).iloc[0]
    means = {m: np.mean(a) for m, a in accuracies.items()}
    better, worse = sorted(means, key=means.get, reverse=True)
    assert pair["difference"] == pytest.approx(means[better] - means[worse]) and pair["runs"] == (3, 3)
    assert pair["beyond_seeds"] == (min(accuracies[better]) > max(accuracies[worse]))
    band = comparison.seed_band(rs, "cnn_attention", "val_loss")
    assert list(band["runs"]) == [3, 3, 3, 3] and (band["low"] <= band["high"]).all()
    again = training.run(tiny_data, out, ["cnn_attention"], hp=hp, seeds=3, random_backbones=True, progress=False)
    assert again == {"cnn_attention": "done"}


def test_precision_is_bfloat16_only_when_asked_or_native(monkeypatch):
    assert training.resolve_precision("float32") == "float32"
    assert training.resolve_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr(training.tf.config, "list_physical_devices", lambda kind=None: [])  # a CPU-only machine
    for flags, expected in [("fpu avx2 fma", "float32"), ("avx2 avx512f avx512_bf16", "bfloat16"),
                            ("avx512f amx_bf16 amx_tile", "bfloat16"), ("avx512_bf16x", "float32")]:
        cpuinfo = SimpleNamespace(read_text=lambda: f"processor : 0\nflags : {flags}\n")
        monkeypatch.setattr(training, "Path", lambda path: cpuinfo if path == "/proc/cpuinfo" else Path(path))
        assert training.resolve_precision("auto") == expected, flags
    with pytest.raises(ValueError, match="unknown precision"):
        training.resolve_precision("int8")
    with pytest.raises(ValueError, match="unknown precision"):  # mixed float16 would need loss scaling
        training.resolve_precision("float16", training.TRAIN_PRECISIONS)


def test_a_gpu_gets_the_reduced_precision_all_its_devices_compute_natively():
    assert training.gpu_precision([(9, 0)]) == "bfloat16"  # Hopper
    assert training.gpu_precision([(8, 6), (7, 5)]) == "float16"  # an Ampere and a Turing: the older decides
    assert training.gpu_precision([(7, 0)]) == "float16"
    assert training.gpu_precision([(6, 1)]) == "float32"


def test_precomputed_validation_and_test_are_float32_whatever_the_training_views_get():
    from core import models

    spec = MODEL_SPECS["vgg16"]
    trunk = models.trunk_model(models.build_model("vgg16", 4, 32, weights="random"), spec)
    photos = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    splits = {"train": [photos, photos[:, :, ::-1]], "validation": photos[:3], "test": photos[3:]}
    exact = training.precompute(trunk, splits, "float32")
    rounded = training.precompute(trunk, splits, "bfloat16")
    for name in ("validation", "test"):
        assert np.array_equal(rounded[name], exact[name])
    for fast, slow in zip(rounded["train"], exact["train"]):
        assert fast.dtype == np.float16 and not np.array_equal(fast, slow)
        assert np.allclose(fast, slow, rtol=0.05, atol=0.05 * np.abs(slow).max())


def test_several_steps_per_execution_make_the_same_updates_as_one():
    from core import models

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 24, 24, 3), dtype=np.uint8)  # 5 batches: fewer than one execution's steps
    y = rng.integers(0, 3, 40)
    trained = []
    for steps in (1, training.STEPS_PER_EXECUTION):
        keras.utils.set_random_seed(0)
        model = models.build_model("cnn", 3, 24, dropout=0.0)
        initial = model.get_weights()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      steps_per_execution=steps)
        model.fit(training.view_batches([x], y, 8, seed=0), epochs=2, verbose=0, shuffle=False)
        trained.append(model.get_weights())
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(*trained))
    assert not all(np.allclose(a, b) for a, b in zip(initial, trained[1]))


def test_the_trunk_cache_on_disk_holds_what_memory_held_and_is_reused(tmp_path):
    from core import models

    spec = MODEL_SPECS["vgg16"]
    trunk = models.trunk_model(models.build_model("vgg16", 4, 32, weights="random"), spec)
    photos = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    splits = {"train": [photos, photos[:, :, ::-1]], "validation": photos[:3], "test": photos[3:]}
    in_memory = training.precompute(trunk, splits, "float32")
    on_disk = training.precompute(trunk, splits, "float32", folder=tmp_path)
    assert isinstance(on_disk["test"], cache.StoredArray)
    for name in ("validation", "test"):
        assert np.array_equal(in_memory[name], on_disk[name])
    assert all(np.array_equal(a, b) for a, b in zip(in_memory["train"], on_disk["train"]))
    written = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert sorted(written) == ["test.npy", "train-view0.npy", "train-view1.npy", "validation.npy"]
    training.precompute(trunk, splits, "float32", folder=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == written  # read back, not recomputed


def test_view_batches_read_stored_arrays_batch_by_batch(tmp_path):
    views = [cache.write_rows(tmp_path / f"v{k}.npy", (10, 3), np.float16, [np.arange(10)[:, None] + 100 * k + np.zeros(3)])
             for k in range(2)]
    inputs, labels = zip(*training.view_batches(views, np.arange(10), batch_size=4, seed=0).take(3))
    inputs, labels = np.concatenate(inputs), np.concatenate(labels)
    assert sorted(labels) == list(range(10)) and inputs.dtype == np.float32
    assert np.array_equal(inputs[:, 0] % 100, labels)  # each row is its label's item, from one of its views


def test_view_batches_without_shuffle_keep_the_order():
    batches = training.view_batches([np.arange(10)[:, None] * 1.0], np.arange(10), batch_size=4, seed=0, shuffle=False)
    for _ in range(2):
        assert [y.numpy().tolist() for _, y in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_photos_decoded_into_a_file_are_the_photos_decoded_in_memory(tiny_data, tmp_path):
    from core import dataset

    files = dataset.scan(tiny_data)[:5]
    files.insert(2, dataset.ImageFile("train/apple/missing.jpg", "apple", "train"))
    in_memory, kept, skipped = dataset.load_images(tiny_data, files, 32, progress=False)
    on_disk, kept_too, _ = dataset.load_images(tiny_data, files, 32, progress=False, path=tmp_path / "p" / "train.npy")
    assert isinstance(on_disk, cache.StoredArray) and np.array_equal(in_memory, on_disk) and kept == kept_too
    assert len(kept) == 5 and [path for path, _ in skipped] == ["train/apple/missing.jpg"]


def test_a_run_deletes_its_trunk_cache_unless_asked_to_keep_it(tiny_data, tmp_path):
    hp = training.HyperParameters(**{**TINY_HP, "epochs": 1})
    training.run(tiny_data, tmp_path / "gone", ["vgg16"], hp, random_backbones=True, progress=False)
    assert not (tmp_path / "gone" / ".cache").exists()
    training.run(tiny_data, tmp_path / "kept", ["vgg16"], hp, random_backbones=True, progress=False, keep_cache=True)
    photo_views, photos, trunk = sorted((tmp_path / "kept" / ".cache").iterdir())
    assert photo_views.name == "photo-views" and (photo_views / "view1.npy").exists()
    assert sorted(p.name for p in photos.iterdir()) == ["test.npy", "train.npy", "validation.npy"]
    assert trunk.name.startswith("vgg16-") and (trunk / "trunk" / "train-view0.npy").exists()


def test_a_deeper_cut_trains_more_of_the_backbone_is_recorded_and_loads_as_trained(tiny_data, tiny_results, tmp_path):
    out = tmp_path / "deeper"
    hp = training.HyperParameters(**{**TINY_HP, "epochs": 2})
    deeper = "conv4_block6_out"
    status = training.run(tiny_data, out, ["resnet50", "resnet50_attention"], hp=hp, random_backbones=True,
                          progress=False, recipe_changes=[f"resnet50.frozen_through={deeper}"])
    assert status == {"resnet50": "trained", "resnet50_attention": "trained"}
    rs, usual = artifacts.open_result_set(out), artifacts.open_result_set(tiny_results)
    # Both models of the backbone share the cut (one trunk cache); only the fine-tuned one trains more for it.
    assert {rs.models[m]["trunk_output"] for m in rs.models} == {deeper}
    assert rs.spec("resnet50").trunk_output == deeper and usual.spec("resnet50").trunk_output == "conv5_block2_out"
    assert rs.models["resnet50"]["trainable_parameters"] > 2 * usual.models["resnet50"]["trainable_parameters"]
    assert rs.models["resnet50_attention"]["trainable_parameters"] == usual.models["resnet50_attention"]["trainable_parameters"]
    assert "fine-tuned above conv4_block6_out" in recipes.Recipe.from_json(rs.models["resnet50"]["recipe"]).describe()

    loaded = inference.load_models(rs)
    assert list(loaded.models) == ["resnet50", "resnet50_attention"]
    assert {s.trunk_output for s in loaded.specs.values()} == {deeper}
    plan = dataset.SplitPlan.from_json(rs.dataset())
    photos, _, _ = dataset.load_images(tiny_data, plan.files["test"], hp.image_size, progress=False)
    shared = inference.Classifier(loaded.models, specs=loaded.specs).classify(photos)
    for model_id, model in loaded.models.items():
        # Training tested on the float16 trunk cache, whose rounding the random backbone's residual blocks amplify.
        stored = rs.predictions(model_id).probs
        alone = model.predict(photos.astype("float32"), verbose=0)
        np.testing.assert_allclose(alone, stored, atol=0.01, err_msg=model_id)
        np.testing.assert_allclose(shared.results[model_id].probs, alone, atol=1e-4, err_msg=model_id)

    # A set whose two ResNet50 models were cut apart (the attention model merged in from a usual-cut set) loads
    # the first and says why the other cannot share its trunk, instead of loading it on the wrong cut.
    shutil.rmtree(out / "resnet50_attention")
    shutil.copytree(tiny_results / "resnet50_attention", out / "resnet50_attention")
    manifest = artifacts.read_json(out / artifacts.MANIFEST)
    manifest["models"]["resnet50_attention"] = artifacts.read_json(tiny_results / artifacts.MANIFEST)["models"]["resnet50_attention"]
    artifacts.write_json(out / artifacts.MANIFEST, manifest)
    mixed = artifacts.open_result_set(out)
    assert "resnet50" in mixed.models and "resnet50_attention" in mixed.models
    loaded = inference.load_models(mixed)
    assert list(loaded.models) == ["resnet50"]
    assert "trunk ending at conv5_block2_out, unlike the set's other resnet50 model" in loaded.problems["resnet50_attention"]


def test_only_a_fine_tuned_model_can_be_cut_deeper():
    chosen = {m: recipes.for_model("study", m) for m in MODEL_IDS}
    specs = training.trained_specs(recipes.with_changes(chosen, ["vgg16.frozen_through=block3_pool"]))
    assert specs["vgg16"].trunk_output == specs["vgg16_attention"].trunk_output == "block3_pool"
    assert specs["resnet50"].trunk_output == "conv5_block2_out"
    with pytest.raises(ValueError, match="fine-tunes no backbone layer"):
        training.trained_specs(recipes.with_changes(chosen, ["vgg16_attention.frozen_through=block3_pool"]))
