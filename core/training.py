"""Training the six models on a CPU in reasonable time, and writing their result set.

The frozen trunk of each ImageNet backbone is run once per image and view, and cached; both models of a
backbone train on that cache (the fine-tuned one through its unfrozen top block, the attention one through
its head on the frozen top block, which is also computed once). An epoch then costs only the top block.
Augmentation fits that design: each training image has a fixed set of views (the photo, its mirror image,
and zoomed crops), cached like the photo, and every epoch draws one view per image.
"""

from __future__ import annotations

import io
import json
import logging
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from core import artifacts, dataset, evaluation, images, models
from core.groups import group_classes
from core.specs import MODEL_IDS, MODEL_SPECS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HyperParameters:
    """Shared by all six models; only the learning rate differs (it is the study's, per model)."""

    image_size: int = 160
    # Small batches: at the study's learning rates (1e-4, 1e-5) progress is bounded by the number of
    # updates, and the cached-trunk epochs are cheap enough to afford twice as many.
    batch_size: int = 16
    epochs: int = 30
    patience: int = 4
    dropout: float = 0.3
    views: int = 3
    seed: int = 0


# ---------------------------------------------------------------- data in memory


def make_views(photos: np.ndarray, views: int, seed: int) -> list[np.ndarray]:
    """The fixed augmented views of each training photo: itself, its mirror, then mirrored zoomed crops."""
    result = [photos]
    if views > 1:
        result.append(photos[:, :, ::-1])
    rng = np.random.default_rng(seed)
    size = photos.shape[1]
    for _ in range(2, views):
        n = len(photos)
        scale = rng.uniform(0.7, 0.9, n)
        top, left = rng.uniform(0, 1 - scale), rng.uniform(0, 1 - scale)
        boxes = np.stack([top, left, top + scale, left + scale], axis=1).astype(np.float32)
        crops = tf.image.crop_and_resize(photos.astype(np.float32), boxes, np.arange(n), (size, size))
        flip = rng.random(n) < 0.5
        crops = np.where(flip[:, None, None, None], crops.numpy()[:, :, ::-1], crops.numpy())
        result.append(np.clip(np.rint(crops), 0, 255).astype(np.uint8))
    return result


class RandomViewBatches(keras.utils.PyDataset):
    """Batches of (input, label) drawing one random view of every item each epoch."""

    def __init__(self, views: list[np.ndarray], labels: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.views, self.labels, self.batch_size = views, labels, batch_size
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        choice = self.choice[idx]
        batch = np.empty((len(idx), *self.views[0].shape[1:]), np.float32)
        for k, view in enumerate(self.views):
            pick = choice == k
            batch[pick] = view[idx[pick]]
        return batch, self.labels[idx]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.labels))
        self.choice = self.rng.integers(0, len(self.views), len(self.labels))


def predict_in_batches(model: keras.Model, views: list[np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
    """Run a frozen model over every view once, keeping float16 to halve the cache's memory."""
    out = []
    for view in views:
        parts = [
            model(view[i : i + batch_size].astype(np.float32), training=False).numpy().astype(np.float16)
            for i in range(0, len(view), batch_size)
        ]
        out.append(np.concatenate(parts))
    return out


# ---------------------------------------------------------------- one model


class EpochLog(keras.callbacks.Callback):
    """Per-epoch history with the learning rate and wall-clock seconds."""

    def on_train_begin(self, logs=None):
        self.rows, self.start = [], time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["epoch_seconds"] = now - self.epoch_start
        row["elapsed_seconds"] = now - self.start
        self.rows.append(row)


def fit(trainable: keras.Model, lr: float, train_views, y_train, val_x, y_val, hp, seed):
    """Train a model (or the top part of one, sharing its layers) and keep the best epoch's weights."""
    with trainable.distribute_strategy.scope():  # the optimizer's variables must live where the model's do
        trainable.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
        )
    monitor = "val_loss" if len(y_val) else "loss"
    epoch_log = EpochLog()
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=hp.patience, restore_best_weights=True)
    trainable.fit(
        RandomViewBatches(train_views, y_train, hp.batch_size, seed),
        validation_data=(val_x.astype(np.float32), y_val) if len(y_val) else None,
        epochs=hp.epochs,
        callbacks=[epoch_log, stopper],
        verbose=1 if sys.stdout.isatty() else 2,
    )
    history = pd.DataFrame(epoch_log.rows)
    best_epoch = int(history[monitor].idxmin()) + 1
    return history, best_epoch


# ---------------------------------------------------------------- the whole run


def resolve_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name != "default":
        raise ValueError(f"unknown strategy {name!r}: default, mirrored or multiworker")
    return tf.distribute.get_strategy()


def run(
    data_dir,
    out,
    model_ids=MODEL_IDS,
    hp: HyperParameters = HyperParameters(),
    split: str = "clean",
    weights_dir=None,
    random_backbones: bool = False,
    strategy: str = "default",
    group_overrides: dict | None = None,
    seeds: int = 1,
    progress: bool = True,
) -> dict[str, str]:
    """Train the models not yet complete in ``out``; returns model id -> "trained"/"done"/reason skipped.

    With ``seeds`` > 1 every model is also trained again from seeds ``hp.seed + 1`` ... (replicates, whose
    history, metrics and predictions are kept beside the model to show the spread that seeds alone cause).
    """
    timings = {}
    clock = time.perf_counter()
    plan = dataset.plan_splits(data_dir, split, hp.seed, progress=progress)
    timings["split_seconds"] = time.perf_counter() - clock
    class_names = plan.class_names
    groups = group_classes(class_names, group_overrides)
    config = {
        **asdict(hp),
        "split": split,
        "dataset": plan.fingerprint,
        "learning_rates": {m: MODEL_SPECS[m].learning_rate for m in MODEL_IDS},
        "optimizer": "adam",
        "loss": "sparse categorical cross-entropy",
        "early_stopping": "val_loss",
        "resize": images.RESIZE_POLICY,
        "backbone_weights": "random (test only)" if random_backbones else "imagenet",
    }
    writer = artifacts.ResultSetWriter(out, config)
    writer.write_file(artifacts.DATASET, (json.dumps(plan.to_json(), indent=1) + "\n").encode())
    writer.save_manifest(
        class_names=class_names,
        groups=groups,
        dataset_summary={
            "root": str(data_dir),
            "counts": plan.counts(),
            "skipped": len(plan.skipped),
            "dropped_copies": len(plan.dropped_copies),
            "leaked": {s: len(v) for s, v in plan.leaked.items()},
        },
        versions={
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    )
    jobs = [(m, hp.seed + k) for m in model_ids for k in range(seeds) if not _job_done(writer, m, hp.seed + k, hp.seed)]
    status = {m: "done" for m in model_ids}
    if not jobs:
        return status

    clock = time.perf_counter()
    index = {name: i for i, name in enumerate(class_names)}
    data = {}
    for name in dataset.SPLITS:
        photos, kept, skipped = dataset.load_images(data_dir, plan.files[name], hp.image_size, progress)
        data[name] = (photos, np.array([index[f.label] for f in kept], np.int64), kept)
    _write_samples(writer, data_dir, data["test"][2])
    train_views = make_views(data["train"][0], hp.views, hp.seed)
    timings["load_seconds"] = time.perf_counter() - clock
    clean_mask = ~np.isin([f.path for f in data["test"][2]], plan.leaked["test"])

    weights = {}
    for backbone in sorted({MODEL_SPECS[m].backbone for m, _ in jobs} - {None}):
        try:
            weights[backbone] = "random" if random_backbones else models.imagenet_weights(backbone, weights_dir)
        except models.WeightsUnavailable as err:
            for m in [m for m, _ in jobs if MODEL_SPECS[m].backbone == backbone]:
                status[m] = str(err)
    jobs = [(m, seed) for m, seed in jobs if status[m] == "done"]

    dist = resolve_strategy(strategy)
    caches: dict[str, dict] = {}
    for position, (model_id, run_seed) in enumerate(jobs):
        spec = MODEL_SPECS[model_id]
        if status[model_id] not in ("done", "trained"):
            continue  # its first run failed; no replicate without it
        seed = run_seed * 1000 + MODEL_IDS.index(model_id)
        keras.utils.set_random_seed(seed)
        with dist.scope():
            try:
                model = models.build_model(
                    model_id, len(class_names), hp.image_size, hp.dropout, weights.get(spec.backbone)
                )
                trainable = models.trained_part(model, spec)
            except models.WeightsUnavailable as err:
                status[model_id] = str(err)
                continue
        clock = time.perf_counter()
        inputs = _model_inputs(model, spec, train_views, data, caches, timings, progress)
        history, best_epoch = fit(
            trainable, spec.learning_rate, inputs["train"], data["train"][1],
            inputs["validation"], data["validation"][1], hp, seed,
        )
        train_seconds = time.perf_counter() - clock
        log.info("%s, seed %d: %d epochs, best %d, %.0f s", model_id, run_seed, len(history), best_epoch, train_seconds)
        explain_inputs = caches[spec.backbone]["trunk"]["test"] if spec.backbone else data["test"][0]
        if run_seed == hp.seed:
            _write_model(
                writer, model, spec, class_names, groups, history, best_epoch, train_seconds,
                explain_inputs, data["test"], clean_mask, weights.get(spec.backbone), hp,
            )
        else:
            _write_replicate(writer, model, spec, run_seed, class_names, groups, history, explain_inputs,
                             data["test"], clean_mask)
        status[model_id] = "trained"
        print(f"[{position + 1}/{len(jobs)}] {model_id} (seed {run_seed}) written to {writer.root / model_id}", flush=True)
    writer.save_manifest(timings={**writer.manifest.get("timings", {}), **timings})
    return status


def _model_inputs(model, spec, train_views, data, caches, timings, progress) -> dict:
    """What the trainable part of ``model`` reads, per split: photos, trunk output or frozen features."""
    photos = {"train": train_views, "validation": data["validation"][0], "test": data["test"][0]}
    if spec.backbone is None:
        return photos
    cache = caches.setdefault(spec.backbone, {})
    if "trunk" not in cache:
        clock = time.perf_counter()
        trunk = models.trunk_model(model, spec)
        all_views = train_views + [photos["validation"], photos["test"]]
        it = tqdm(all_views, desc=f"{spec.backbone} trunk, once per view", disable=not progress)
        computed = [predict_in_batches(trunk, [v])[0] for v in it]
        cache["trunk"] = {"train": computed[:-2], "validation": computed[-2], "test": computed[-1]}
        timings[f"{spec.backbone}_trunk_seconds"] = time.perf_counter() - clock
    if not spec.attention:
        return cache["trunk"]
    if "frozen" not in cache:
        frozen = models.frozen_features_model(model, spec)
        t = cache["trunk"]
        cache["frozen"] = {
            "train": predict_in_batches(frozen, t["train"]),
            "validation": predict_in_batches(frozen, [t["validation"]])[0],
            "test": predict_in_batches(frozen, [t["test"]])[0],
        }
    return cache["frozen"]


def _write_model(writer, model, spec, class_names, groups, history, best_epoch, train_seconds,
                 explain_inputs, test_data, clean_mask, weights, hp):
    photos, y_test, files = test_data
    tested = evaluation.run_test_split(
        model, spec, explain_inputs, photos, y_test, class_names, [groups[c] for c in class_names], clean_mask
    )
    with writer.model_folder(spec.id) as folder:
        stored = models.trained_part(model, spec)
        if spec.backbone:
            stored.save_weights(folder / artifacts.TOP_WEIGHTS)
        else:
            # A fresh copy, so that the file holds the model without the optimizer state (a third the size).
            clean = models.build_model(spec.id, len(class_names), hp.image_size, hp.dropout)
            clean.set_weights(model.get_weights())
            clean.save(folder / artifacts.WHOLE_MODEL)
        artifacts.write_csv(folder / artifacts.HISTORY, history)
        artifacts.write_test_files(folder, [f.path for f in files], y_test, tested.probs, tested.maps, tested.metrics)
        stored_bytes = sum(p.stat().st_size for p in folder.iterdir())
        artifacts.write_json(
            folder / artifacts.MODEL_JSON,
            {
                "id": spec.id,
                "title": spec.title,
                "backbone": spec.backbone,
                "attention": spec.attention,
                "learning_rate": spec.learning_rate,
                "preprocessing": spec.preprocessing,
                "resize": images.RESIZE_POLICY,
                "image_size": hp.image_size,
                "dropout": hp.dropout,
                "num_classes": len(class_names),
                "parameters": int(model.count_params()),
                "trainable_parameters": int(sum(np.prod(w.shape) for w in stored.trainable_weights)),
                "stored_bytes": int(stored_bytes),
                "epochs_run": int(len(history)),
                "best_epoch": int(best_epoch),
                "train_seconds": float(train_seconds),
                "backbone_weights": _weights_label(weights) if spec.backbone else None,
                "trunk_signature": models.trunk_signature(model, spec) if spec.backbone else None,
            },
        )


def _job_done(writer, model_id: str, seed: int, first_seed: int) -> bool:
    if not writer.is_complete(model_id):
        return False
    return seed == first_seed or artifacts.replicate_file(seed, artifacts.METRICS) in writer.manifest["models"][model_id]["files"]


def _write_replicate(writer, model, spec, seed, class_names, groups, history, explain_inputs, test_data, clean_mask):
    """Another seed's run of a model: its history, test metrics and predictions, added to the model's folder."""
    _, y_test, files = test_data
    probs = models.top_model(model, spec).predict(np.asarray(explain_inputs, np.float32), verbose=0)
    metrics = evaluation.evaluate(probs, y_test, class_names, [groups[c] for c in class_names], clean_mask)
    metrics["best_epoch"] = int(history["val_loss" if "val_loss" in history else "loss"].idxmin()) + 1
    with writer.model_folder(spec.id, keep_existing=True) as folder:
        artifacts.write_csv(folder / artifacts.replicate_file(seed, artifacts.HISTORY), history)
        artifacts.write_json(folder / artifacts.replicate_file(seed, artifacts.METRICS), metrics)
        artifacts.write_npz(folder / artifacts.replicate_file(seed, artifacts.PREDICTIONS),
                            files=np.array([f.path for f in files]), y_true=y_test, probs=probs.astype(np.float32))


def _weights_label(weights: str) -> str:
    return weights if weights in ("imagenet", "random") else f"imagenet (local file {Path(weights).name})"


def _write_samples(writer, root, test_files):
    """Every test photo, as a small JPEG in the result set: the dashboard shows test images without the
    dataset (a fresh clone has only the result set), and the Classify page offers them as samples."""
    for f in test_files:
        try:
            image = images.read_image(f"{root}/{f.path}")
        except images.ImageError:
            continue
        image.thumbnail((artifacts.SAMPLE_SIDE, artifacts.SAMPLE_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=80)
        writer.write_file(artifacts.sample_relpath(f.path, f.label), buffer.getvalue())
