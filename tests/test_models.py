import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import ROOT
from core import artifacts, features, models
from core.specs import MODEL_IDS, MODEL_SPECS


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_every_model_is_a_flat_graph_with_its_preprocessing_inside(model_id):
    model = models.build_model(model_id, 5, 32, weights="random")
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.get_layer(MODEL_SPECS[model_id].last_conv) is not None
    assert model.layers[1].name in ("preprocess", "rescale")
    probs = model(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32"))
    assert np.allclose(np.sum(probs, axis=1), 1, atol=1e-5)


def test_learning_rates_are_the_studys():
    assert {m: s.learning_rate for m, s in MODEL_SPECS.items()} == {
        "cnn": 1e-4, "cnn_attention": 1e-4, "vgg16": 1e-5, "resnet50": 1e-4,
        "vgg16_attention": 1e-5, "resnet50_attention": 1e-4,
    }


def test_frozen_and_trained_parts():
    vgg = models.build_model("vgg16", 5, 32, weights="random")
    trainable = {layer.name for layer in vgg.layers if layer.trainable and layer.weights}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3", "logits"}
    attention = models.build_model("resnet50_attention", 5, 32, weights="random")
    trainable = {layer.name for layer in attention.layers if layer.trainable and layer.weights}
    assert trainable == {"attention", "logits"}
    resnet = models.build_model("resnet50", 5, 32, weights="random")
    trainable = {layer.name for layer in resnet.layers if layer.trainable and layer.weights}
    assert all(name.startswith("conv5_block3") and "_bn" not in name for name in trainable - {"logits"})


def test_random_backbones_are_reproducible_and_the_signature_tells_other_weights():
    spec = MODEL_SPECS["vgg16"]
    a = models.build_model("vgg16", 5, 32, weights="random")
    b = models.build_model("vgg16", 5, 32, weights="random")
    trunk_a, trunk_b = models.trunk_model(a, spec), models.trunk_model(b, spec)
    assert all(np.array_equal(x, y) for x, y in zip(trunk_a.get_weights(), trunk_b.get_weights()))
    assert models.trunk_signature(a, spec) == models.trunk_signature(b, spec)
    # A trunk rebuilt from other weights (here its first convolution's) must not pass the check.
    first = next(layer for layer in trunk_b.layers if layer.weights)
    kernel, bias = first.get_weights()
    first.set_weights([kernel * 1.1, bias])
    assert models.trunk_signature(b, spec) != pytest.approx(models.trunk_signature(a, spec), rel=1e-3)


def test_attention_layer_saves_and_loads_in_a_fresh_process(tmp_path):
    model = models.build_model("cnn_attention", 3, 32)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", keras.ops.convert_to_numpy(model(x)))
    model.save(tmp_path / "m.keras")
    code = textwrap.dedent(f"""
        import sys, numpy as np, keras
        sys.path.insert(0, {str(ROOT)!r})
        import core.models  # registers the custom layers, as the app does
        m = keras.saving.load_model({str(tmp_path / 'm.keras')!r}, safe_mode=True, compile=False)
        x = np.load({str(tmp_path / 'x.npy')!r})
        out = keras.ops.convert_to_numpy(m(x))
        assert np.allclose(out, np.load({str(tmp_path / 'expected.npy')!r}), atol=1e-6)
        attention = m.get_layer("attention").output[1]
        print("ok", tuple(attention.shape))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok (None, 2, 2)" in done.stdout


def test_attention_map_is_a_distribution_over_positions():
    layer = models.SpatialAttention(units=4)
    features = np.random.default_rng(0).normal(size=(2, 3, 5, 6)).astype("float32")
    pooled, attention = layer(features)
    attention = keras.ops.convert_to_numpy(attention)
    assert attention.shape == (2, 3, 5) and np.allclose(attention.sum(axis=(1, 2)), 1, atol=1e-6)
    expected = np.einsum("bhw,bhwc->bc", attention, features)
    assert np.allclose(keras.ops.convert_to_numpy(pooled), expected, atol=1e-5)


def test_offline_imagenet_download_fails_with_a_one_line_message(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.vgg16.file_utils.get_file", offline)
    with pytest.raises(models.WeightsUnavailable) as caught:
        models.build_model("vgg16", 5, 32, weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message and "--weights-dir" in message and "FRUITVEG_WEIGHTS_DIR" in message
    # The open-set verdict's own backbones too: without weights the set has no verdict, nothing fails.
    monkeypatch.delenv("FRUITVEG_WEIGHTS_DIR", raising=False)
    with pytest.raises(models.WeightsUnavailable):
        features.FeatureExtractor(32, backbones=("vgg16",))
    assert features.load_verdict(artifacts.open_result_set(ROOT / "artifacts")) is None


def test_weights_dir_without_the_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("FRUITVEG_WEIGHTS_DIR", raising=False)
    assert models.imagenet_weights("vgg16", None) == "imagenet"
    with pytest.raises(models.WeightsUnavailable, match="vgg16_notop.weights.h5"):
        models.imagenet_weights("vgg16", tmp_path)
    (tmp_path / "resnet50_notop.weights.h5").write_bytes(b"")
    monkeypatch.setenv("FRUITVEG_WEIGHTS_DIR", str(tmp_path))
    assert models.imagenet_weights("resnet50", None) == str(tmp_path / "resnet50_notop.weights.h5")


def test_randomisation_check_restores_the_trained_weights():
    from core import evaluation

    model = models.build_model("cnn_attention", 3, 48)
    spec = MODEL_SPECS["cnn_attention"]
    x = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 3)).astype("float32")
    before = keras.ops.convert_to_numpy(model(x))
    result = evaluation.randomisation_check(model, spec, x, np.asarray(before).argmax(1))
    assert np.allclose(keras.ops.convert_to_numpy(model(x)), before)
    assert set(result) == {"gradcam_rank_correlation", "absolute_rank_correlation", "maps", "images",
                           "flat_randomised", "passes", "threshold"}
    assert result["maps"] == "signed"
    assert -1 <= result["gradcam_rank_correlation"] <= 1 and -1 <= result["absolute_rank_correlation"] <= 1
    assert result["passes"] == (result["gradcam_rank_correlation"] < evaluation.SANITY_MAX_CORRELATION)


def test_a_bfloat16_copy_keeps_the_weights_and_rounds_only_the_arithmetic():
    trunk = models.trunk_model(models.build_model("vgg16", 5, 32, weights="random"), MODEL_SPECS["vgg16"])
    copy = models.with_compute_dtype(trunk, "mixed_bfloat16")
    assert copy.layers[-1].compute_dtype == "bfloat16"
    assert all(np.array_equal(a, b) for a, b in zip(trunk.get_weights(), copy.get_weights()))
    photos = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    exact = keras.ops.convert_to_numpy(trunk(photos))
    rounded = keras.ops.convert_to_numpy(keras.ops.cast(copy(photos), "float32"))
    relative = np.linalg.norm(rounded - exact) / np.linalg.norm(exact)
    assert 0 < relative < 0.03


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-4), ("mixed_bfloat16", 3e-2)])
def test_the_fused_batch_norm_computes_what_keras_batch_norm_does(dtype, tolerance):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(3.0, 2.0, (4, 6, 6, 5)), tf.float32)
    gamma, beta = rng.uniform(0.5, 2, 5), rng.uniform(-1, 1, 5)
    layers = [cls(momentum=0.9, dtype=dtype) for cls in (keras.layers.BatchNormalization,
                                                          models.FusedBatchNormalization)]
    outputs, gradients = [], []
    for layer in layers:
        layer.build(x.shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x, training=True), tf.float32)
            loss = tf.reduce_sum(y * y * x)  # weighs every output differently, so every gradient is tested
        outputs.append([y, layer(x, training=False)])
        gradients.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
    keras_layer, fused_layer = layers
    for name in ("moving_mean", "moving_variance", "gamma", "beta"):
        assert np.allclose(getattr(keras_layer, name).numpy(), getattr(fused_layer, name).numpy(), rtol=1e-5)
    assert not np.allclose(keras_layer.moving_mean.numpy(), 0)  # the statistics did move
    for expected, fused in zip(outputs[0] + gradients[0], outputs[1] + gradients[1]):
        expected, fused = np.asarray(tf.cast(expected, tf.float32)), np.asarray(tf.cast(fused, tf.float32))
        assert np.linalg.norm(fused - expected) <= tolerance * np.linalg.norm(expected)


def test_a_training_copy_uses_the_fused_batch_norm_only_where_batch_norm_trains():
    cnn = models.build_model("cnn", 5, 32, weights="random")
    copy = models.with_compute_dtype(cnn, "mixed_bfloat16", fused_batch_norm=True)
    assert {type(layer) for layer in copy.layers if isinstance(layer, keras.layers.BatchNormalization)} == {
        models.FusedBatchNormalization}
    assert all(np.array_equal(a, b) for a, b in zip(cnn.get_weights(), copy.get_weights()))
    resnet = models.build_model("resnet50", 5, 32, weights="random")  # its batch norms are frozen
    copy = models.with_compute_dtype(resnet, "mixed_bfloat16", fused_batch_norm=True)
    assert not any(isinstance(layer, models.FusedBatchNormalization) for layer in copy.layers)


def test_explaining_six_models_traces_each_once_and_warns_of_no_retracing():
    import logging

    import tensorflow as tf

    from core.explain import Explainer

    warnings = []
    handler = logging.Handler()
    handler.emit = warnings.append
    tf.get_logger().addHandler(handler)
    try:
        explainers = [Explainer(models.build_model("cnn", 3, 32), MODEL_SPECS["cnn"]) for _ in range(6)]
        rng = np.random.default_rng(0)
        for explainer in explainers:
            for count in (1, 2, 5):  # another batch size reuses the trace
                explainer(rng.uniform(0, 255, (count, 32, 32, 3)).astype("float32"))
    finally:
        tf.get_logger().removeHandler(handler)
    assert [e.traces for e in explainers] == [1] * 6
    assert not [w.getMessage() for w in warnings if "retracing" in w.getMessage()]


def test_grad_cam_shows_where_a_class_wins_even_with_a_negative_logit():
    # The ResNet50 models predict many photos' classes with a negative logit: the class wins by being least
    # suppressed. Here every class's weights are negative on the (non-negative, ReLU) last map, class 0's
    # least: the gradient of its logit is negative everywhere and its map would be zero after the ReLU, while
    # that of its log-probability weighs it against the others and draws where the map is strong.
    from core.explain import Explainer

    model, spec = models.build_model("cnn", 3, 32), MODEL_SPECS["cnn"]
    kernel, bias = model.get_layer("logits").get_weights()
    kernel = -0.01 * np.tile(np.arange(1, 4, dtype=kernel.dtype), (kernel.shape[0], 1))
    model.get_layer("logits").set_weights([kernel, np.full_like(bias, -1.0)])
    photos = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    explainer = Explainer(model, spec)
    logits = keras.ops.convert_to_numpy(explainer.from_conv(explainer.to_conv(photos))["logits"])
    assert (logits < 0).all() and (logits.argmax(axis=1) == 0).all()
    maps = explainer(photos).gradcam[:, 0]
    strength = keras.ops.convert_to_numpy(explainer.to_conv(photos)).sum(axis=-1)  # every channel weighs alike
    assert np.allclose(maps.max(axis=(1, 2)), 1.0)  # the logit's would be zero everywhere
    np.testing.assert_allclose(maps, strength / strength.max(axis=(1, 2), keepdims=True), atol=1e-4)


def test_signed_maps_are_the_shown_maps_before_the_relu_and_scaling():
    # The randomisation check compares the signed maps: where they are positive, they are the shown maps' order.
    from core.explain import Explainer

    model, spec = models.build_model("cnn", 4, 64), MODEL_SPECS["cnn"]
    rng = np.random.default_rng(1)
    kernel, bias = model.get_layer("logits").get_weights()  # zero-initialised: every map would be flat
    model.get_layer("logits").set_weights([rng.normal(0, 0.1, kernel.shape).astype(kernel.dtype), bias])
    photos = rng.uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    shown, signed = Explainer(model, spec)(photos).gradcam, Explainer(model, spec, signed=True)(photos).gradcam
    assert (signed < 0).any() and (signed > 0).any()
    positive = np.maximum(signed, 0)
    scale = positive.max(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(shown, np.divide(positive, scale, out=np.zeros_like(positive), where=scale > 0), atol=1e-5)


def test_rank_agreement_counts_a_flat_randomised_map_as_no_agreement():
    from core import evaluation

    maps = np.random.default_rng(0).uniform(size=(4, 7, 7))
    assert evaluation.rank_agreement(maps, maps) == (pytest.approx(1.0), 4, 0)
    assert evaluation.rank_agreement(maps, np.zeros_like(maps)) == (0.0, 4, 4)
    half = np.concatenate([maps[:2], np.zeros_like(maps[2:])])
    assert evaluation.rank_agreement(maps, half) == (pytest.approx(0.5), 4, 2)
    # A flat trained map says nothing either way: left out; none left means no sign of dependence.
    assert evaluation.rank_agreement(half, maps) == (pytest.approx(1.0), 2, 0)
    assert evaluation.rank_agreement(np.zeros_like(maps), maps) == (1.0, 0, 0)
