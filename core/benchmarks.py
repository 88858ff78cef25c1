"""Measurements behind ``scripts/benchmark.py``: training with and without the trunk cache, and the
six-model classification against a naive loop. Timings are wall-clock medians on this machine."""

from __future__ import annotations

import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from core import dataset, images, models, training
from core.inference import Classifier
from core.specs import MODEL_IDS, MODEL_SPECS

# The full Kaggle dataset (the study's split): 3,115 training, 351 validation and 359 test images.
FULL_DATASET = {"train": 3115, "validation": 351, "test": 359}


def machine() -> str:
    return f"{platform.machine()}, {tf.config.threading.get_inter_op_parallelism_threads() or 'all'} threads, " \
           f"{len(tf.config.list_physical_devices('CPU'))} CPU device, {len(tf.config.list_physical_devices('GPU'))} GPU"


def sample_photos(data_dir, count: int, size: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Real photos from a dataset folder when given, else random pixels (timing does not depend on content)."""
    if data_dir:
        files = dataset.scan(data_dir)
        picked = [files[i] for i in np.random.default_rng(seed).permutation(len(files))[:count]]
        photos, kept, _ = dataset.load_images(data_dir, picked, size, progress=False)
        return photos, f"{len(kept)} real photos from {data_dir}"
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8), f"{count} random images"


def _epoch_seconds(trainable: keras.Model, x, y, batch_size: int) -> float:
    """Seconds for one epoch of ``fit`` over (x, y), after a warm-up epoch that pays for tracing."""
    trainable.compile(optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy")
    trainable.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    start = time.perf_counter()
    trainable.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    return time.perf_counter() - start


def _trunk_ms(model, spec, photos) -> float:
    trunk = models.trunk_model(model, spec)
    trunk.predict(photos[:32].astype(np.float32), verbose=0)
    start = time.perf_counter()
    trunk.predict(photos.astype(np.float32), batch_size=64, verbose=0)
    return (time.perf_counter() - start) / len(photos) * 1000


def training_benchmark(photos, num_classes: int, weights, hp: training.HyperParameters, compare: str = "resnet50") -> dict:
    """Per-image costs of every model, and for the fine-tuned model ``compare`` an epoch with the trunk cache
    against a naive end-to-end ``fit`` (the trunk frozen but recomputed for every batch)."""
    labels = np.arange(len(photos)) % num_classes
    x = photos.astype(np.float32)
    per_model, trunk_ms = {}, {}
    for model_id in MODEL_IDS:
        spec = MODEL_SPECS[model_id]
        model = models.build_model(model_id, num_classes, hp.image_size, hp.dropout, weights.get(spec.backbone))
        if spec.backbone and spec.backbone not in trunk_ms:
            trunk_ms[spec.backbone] = _trunk_ms(model, spec, photos)
        if spec.backbone is None:
            inputs = x
        elif spec.attention:
            inputs = models.frozen_features_model(model, spec).predict(
                models.trunk_model(model, spec).predict(x, verbose=0), verbose=0)
        else:
            inputs = models.trunk_model(model, spec).predict(x, verbose=0)
        seconds = _epoch_seconds(models.trained_part(model, spec), inputs, labels, hp.batch_size)
        per_model[model_id] = seconds / len(photos) * 1000
        if model_id == compare:
            naive = _epoch_seconds(model, x, labels, hp.batch_size)
            cached = {"model": compare, "cached_epoch_s": seconds, "naive_epoch_s": naive, "speedup": naive / seconds}
    return {"images": len(photos), "train_ms_per_image": per_model, "trunk_ms_per_image": trunk_ms, "cache_vs_naive": cached}


def project_full_dataset(measured: dict, hp: training.HyperParameters, epochs: dict[str, int] | None = None) -> dict:
    """Minutes to train all six on the full dataset, from the measured per-image costs.

    ``epochs``: how many epochs each model runs (default: all ``hp.epochs``, the worst case; early stopping
    usually ends sooner). The trunk runs once per view of each training photo and once per other photo.
    """
    n = FULL_DATASET
    trunk_images = n["train"] * hp.views + n["validation"] + n["test"]
    trunk_s = sum(ms * trunk_images for ms in measured["trunk_ms_per_image"].values()) / 1000
    train_s = sum(
        ms * n["train"] * (epochs or {}).get(m, hp.epochs) for m, ms in measured["train_ms_per_image"].items()
    ) / 1000
    return {"trunk_minutes": trunk_s / 60, "training_minutes": train_s / 60, "total_minutes": (trunk_s + train_s) / 60}


def naive_classify_functions(loaded: dict[str, keras.Model]):
    """The straightforward way: each model's ``predict`` plus a separately built Grad-CAM model (keras-io)."""
    grad_models = {
        m: keras.Model(model.inputs, [model.get_layer(MODEL_SPECS[m].last_conv).output, model.output])
        for m, model in loaded.items()
    }

    def run(photo_batch):
        outputs = {}
        for model_id, model in loaded.items():
            probs = model.predict(photo_batch, verbose=0)
            with tf.GradientTape() as tape:
                conv, preds = grad_models[model_id](photo_batch)
                score = preds[:, int(np.argmax(probs[0]))]
            grads = tape.gradient(score, conv)
            weights = tf.reduce_mean(grads, axis=(0, 1, 2))
            heatmap = tf.nn.relu(conv[0] @ weights[..., None])[..., 0]
            outputs[model_id] = (probs, heatmap.numpy() / (float(tf.reduce_max(heatmap)) + 1e-12))
        return outputs

    return run


def classify_benchmark(loaded: dict[str, keras.Model], image, runs: int = 10) -> dict:
    """Median milliseconds: the app's six-model classification with all heatmaps vs the naive loop."""
    classifier = Classifier(loaded)
    naive = naive_classify_functions(loaded)
    batch = images.to_array(image, classifier.image_size)[None].astype(np.float32)
    classifier.classify_image(image)
    naive(batch)
    fast_ms, naive_ms = [], []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.classify_image(image)
        fast_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        naive(batch)
        naive_ms.append((time.perf_counter() - start) * 1000)
    six, slow = statistics.median(fast_ms), statistics.median(naive_ms)
    return {"image_size": classifier.image_size, "models": len(loaded), "runs": runs,
            "six_model_ms": six, "naive_ms": slow, "ratio": slow / six}
