"""Training the six models on a CPU in reasonable time, and writing their result set.

The frozen trunk of each ImageNet backbone is run once per image and view, and cached; both models of a
backbone train on that cache (the fine-tuned one through its unfrozen top block, the attention one through
its head on the frozen top block, which is also computed once). An epoch then costs only the top block.
Augmentation fits that design: each training image has a fixed set of views (the photo, its mirror image,
and zoomed crops), cached like the photo, and every epoch draws one view per image.

Where the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), the trunk runs over the training views
in bfloat16, about twice as fast for VGG16; validation and test images go through it in float32, exactly as
the app computes them, so every reported figure is what a user gets.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import platform
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tensorflow.python.eager import context as tf_context  # the coordination barrier has no public API
from tqdm import tqdm

from core import artifacts, augmentation, cache, calibration, dataset, evaluation, images, models, recipes
from core.groups import group_classes
from core.specs import BACKBONES, MODEL_IDS, MODEL_SPECS, ModelSpec

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

    @classmethod
    def for_recipe(cls, recipe: str, **given) -> HyperParameters:
        """The run's settings under ``recipe``: those ``given`` (None: not given) over the recipe's defaults,
        the study's own budget, or the tuned recipe's longer one (``recipes.TUNED_EPOCHS``, ``TUNED_PATIENCE``)
        in which every model stops on its validation loss."""
        tuned = {"epochs": recipes.TUNED_EPOCHS, "patience": recipes.TUNED_PATIENCE} if recipe == recipes.TUNED else {}
        return cls(**{**tuned, **{name: value for name, value in given.items() if value is not None}})


def default_train_precision(recipe: str) -> str:
    """The trained parts' arithmetic where none is asked: float32 for the study's recipe (its results unchanged),
    auto for the tuned one (bfloat16 where the machine computes it natively; ``resolve_precision``)."""
    return "auto" if recipe == recipes.TUNED else "float32"


# Several training steps per call of the compiled step function. The cached tops take a few milliseconds a
# step, and Keras' per-step Python work would otherwise be a large share of that. The updates are the same.
STEPS_PER_EXECUTION = 16
TRUNK_PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# The trained part computes in float32 or bfloat16: mixed float16 would need loss scaling.
TRAIN_PRECISIONS = ("auto", "float32", "bfloat16")


def gpu_precision(compute_capabilities: list[tuple[int, int]]) -> str:
    """The reduced precision every GPU computes natively: bfloat16 from compute capability 8.0 (Ampere) on,
    float16 from 7.0 (Volta's tensor cores), else float32."""
    oldest = min(compute_capabilities, default=(0, 0))
    return "bfloat16" if oldest >= (8, 0) else "float16" if oldest >= (7, 0) else "float32"


def resolve_precision(requested: str = "auto", choices=TRUNK_PRECISIONS) -> str:
    """The precision the trunk runs in over the training views, or the trained part trains in: on a GPU the
    one it computes natively (see ``gpu_precision``); on a CPU bfloat16 only where it computes it natively
    (elsewhere it is emulated and slower than float32); or as asked. Cached trunk outputs are float16 on the
    host either way."""
    if requested not in choices:
        raise ValueError(f"unknown precision {requested!r}: {', '.join(choices)}")
    if requested != "auto":
        return requested
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
        return gpu_precision([tuple(d.get("compute_capability", (0, 0))) for d in details])
    try:
        cpu_flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell
        return "float32"
    return "bfloat16" if re.search(r"\b(avx512_bf16|amx_bf16)\b", cpu_flags) else "float32"


def trained_specs(chosen: dict[str, recipes.Recipe]) -> dict[str, ModelSpec]:
    """Each model as a run with these recipes trains it. A backbone's trunk ends where its fine-tuned model's
    recipe says (``Recipe.frozen_through``), for its attention model too: one trunk cache serves the two, and
    the attention model computes the frozen layers between the cut and its head once per view."""
    cuts = {}
    for model_id, recipe in chosen.items():
        spec = MODEL_SPECS[model_id]
        if recipe.frozen_through and not spec.finetuned:
            raise ValueError(f"{model_id} fine-tunes no backbone layer: frozen_through is for the fine-tuned models")
        if spec.finetuned:
            cuts[spec.backbone] = recipe.frozen_through
    return {m: MODEL_SPECS[m].cut_at(cuts.get(MODEL_SPECS[m].backbone)) for m in chosen}


def compile_for_training(trainable: keras.Model, recipe: recipes.Recipe) -> None:
    strategy = trainable.distribute_strategy
    with strategy.scope():  # the optimizer's variables must live where the model's do
        trainable.compile(
            optimizer=recipe.make_optimizer(),
            loss=recipe.loss(),
            metrics=[recipes.TopLabelAccuracy()],
            # One step per call over several replicas: Keras 3 fails otherwise (keras-team/keras#19246).
            steps_per_execution=STEPS_PER_EXECUTION if strategy.num_replicas_in_sync == 1 else 1,
        )


# ---------------------------------------------------------------- data in memory


def make_views(photos, views: int, seed: int, folder: Path | None = None, chunk: int = 256) -> list:
    """The fixed augmented views of each training photo: itself, its mirror, then mirrored zoomed crops.

    Computed ``chunk`` photos at a time (a float32 copy of every photo would be 4 times the photos); with
    ``folder``, the views after the first are written there as uint8 ``.npy`` files (``cache.StoredArray``).
    """
    n, size = len(photos), photos.shape[1]

    def mirrored(part):
        return photos[part][:, :, ::-1]

    def zoomed_in(boxes, flip):
        def view(part):
            zoomed = tf.image.crop_and_resize(
                np.asarray(photos[part], np.float32), boxes[part], np.arange(len(boxes[part])), (size, size)
            ).numpy()
            zoomed = np.where(flip[part, None, None, None], zoomed[:, :, ::-1], zoomed)
            return np.clip(np.rint(zoomed), 0, 255).astype(np.uint8)

        return view

    transforms = [mirrored] if views > 1 else []
    rng = np.random.default_rng(seed)
    for _ in range(2, views):
        scale = rng.uniform(0.7, 0.9, n)
        top, left = rng.uniform(0, 1 - scale), rng.uniform(0, 1 - scale)
        boxes = np.stack([top, left, top + scale, left + scale], axis=1).astype(np.float32)
        transforms.append(zoomed_in(boxes, rng.random(n) < 0.5))

    result = [photos]
    for k, transform in enumerate(transforms, start=1):
        chunks = (transform(slice(start, start + chunk)) for start in range(0, n, chunk))
        if folder is None or not n:
            result.append(np.concatenate(list(chunks)) if n else np.empty_like(photos))
        else:
            result.append(cache.write_rows(Path(folder) / f"view{k}.npy", photos.shape, photos.dtype, chunks))
    return result


def view_batches(views: list[np.ndarray], labels: np.ndarray, batch_size: int, seed: int,
                 shuffle: bool = True, augment=None) -> tf.data.Dataset:
    """Batches of (input, label) in a new order every epoch (in order without ``shuffle``), each item as one
    of its views drawn at random, then passed through ``augment`` if given (a function of a float32 batch and
    its labels, returning the batch and its targets: see ``augmenter``).

    The order and the views are drawn inside tf.data; the rows are gathered from ``views`` (arrays or
    ``cache.StoredArray`` files) one batch at a time, so that no copy of every view is ever made.
    """
    count = len(labels)
    labels = np.asarray(labels)
    order = tf.data.Dataset.range(count)
    if shuffle:
        order = order.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    view = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(lambda r: r % len(views))
    picks = tf.data.Dataset.zip(view, order).batch(batch_size)
    row_shape = views[0].shape[1:]

    def rows(view, item):
        return np.stack([views[v][i] for v, i in zip(view, item)]).astype(np.float32), labels[item]

    def gather(view, item):
        inputs, picked = tf.numpy_function(rows, [view, item], (tf.float32, tf.as_dtype(labels.dtype)))
        inputs.set_shape((None, *row_shape))
        picked.set_shape((None,))
        return (inputs, picked) if augment is None else augment(inputs, picked)

    # The autotuner off: its thread sleeps 10 ms x 2^k between rounds, and at the end of every epoch ``fit``
    # waits for the iterator's teardown until that thread's next wake, 1.28 s, 2.56 s, ... up to 40.96 s
    # (2026-12-04: ``fit`` returned at 2.57 s in 10 of 16 calls whose training ended at 1.5 s; 0 of 16 with it
    # off; eight CNN epochs 16.3-18.1 s with it, 12.2-13.3 s without, alternating in one run). AUTOTUNE still
    # means something with it off: as many parallel map calls as tf.data's thread pool has threads (at most
    # 16), and a prefetch buffer grown by the prefetch's own tuner, which is all these batches need.
    options = tf.data.Options()
    options.autotune.enabled = False
    return picks.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE).with_options(options)


# Photos per call of a frozen part. Traced (models.compiled_forward), ResNet50's trunk holds about 0.9 GB at
# this batch size and 1.3 GB at 64, at nearly the same speed; the memory is kept by TensorFlow's allocator.
FROZEN_BATCH = 32


def predict_in_batches(model: keras.Model, inputs: np.ndarray, batch_size: int = FROZEN_BATCH,
                       dtype=cache.CACHE_DTYPE) -> np.ndarray:
    """Run a model over an array (or an on-disk cache) once, batch by batch; float16 by default, as cached."""
    parts = list(cache.forward_blocks(models.compiled_forward(model), inputs, batch_size, dtype))
    return np.concatenate(parts) if parts else np.zeros((0, *model.output_shape[1:]), dtype)


def precompute(frozen: keras.Model, splits: dict, precision: str, progress: bool = False, desc: str = "",
               folder: Path | None = None) -> dict:
    """A frozen part's output for every split: each training view in ``precision``, validation and test in float32.

    With ``folder``, each output is written there batch by batch and returned as a ``cache.StoredArray``;
    without, it is held in memory.
    """
    train_model = frozen if precision == "float32" else models.with_compute_dtype(frozen, f"mixed_{precision}")

    def output(model, inputs, name):
        if folder is None:
            return predict_in_batches(model, inputs)
        return cache.predict_to_file(models.compiled_forward(model), model.output_shape[1:], inputs,
                                     Path(folder) / f"{name}.npy", FROZEN_BATCH)

    views = tqdm(splits["train"], desc=desc, disable=not progress)
    return {
        "train": [output(train_model, view, f"train-view{k}") for k, view in enumerate(views)],
        "validation": output(frozen, splits["validation"], "validation"),
        "test": output(frozen, splits["test"], "test"),
    }


# ---------------------------------------------------------------- one model


class EpochLog(keras.callbacks.Callback):
    """Per-epoch history with the learning rate and wall-clock seconds."""

    def __init__(self):
        super().__init__()
        self.rows, self.start = [], None

    def on_train_begin(self, logs=None):
        if self.start is None:  # a run in two phases (the head first) keeps one history
            self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["epoch_seconds"] = now - self.epoch_start
        row["elapsed_seconds"] = now - self.start
        self.rows.append(row)


def learner_for(trainable: keras.Model, precision: str, any_image_size: bool = False) -> keras.Model:
    """What trains for ``trainable``: itself in float32 at its own image size (as the study's recipe trains);
    else a copy computing in mixed ``precision`` with a float32 softmax, or taking images of any size
    (``any_image_size``), with its trained BatchNormalization layers on TensorFlow's fused kernel, whose
    weights are to be copied back after training."""
    if precision == "float32" and not any_image_size:
        return trainable
    policy = "float32" if precision == "float32" else f"mixed_{precision}"
    with trainable.distribute_strategy.scope():  # its variables live where the model's do
        return models.with_compute_dtype(trainable, policy, float32_output=True, any_image_size=any_image_size,
                                         fused_batch_norm=True)


def augmenter(recipe: recipes.Recipe, classes: int):
    """The function drawing each training batch's views under ``recipe`` and their targets: fresh crops at its
    training size (or the cached views as they are), then CutMix or mixup if the recipe asks for one, with
    targets mixed over ``classes``; None where the batches train as they come."""
    if recipe.augmentation != "random" and not recipe.mixup:
        return None

    def views(inputs, labels):
        if recipe.augmentation == "random":
            inputs = augmentation.random_crop_flip_jitter(inputs, recipe.train_size or None)
        if recipe.cutmix:
            return augmentation.cutmix(inputs, labels, classes, recipe.cutmix)
        if recipe.mixup:
            return augmentation.mixup(inputs, labels, classes, recipe.mixup)
        return inputs, labels

    return views


def fit(trainable: keras.Model, recipe: recipes.Recipe, train_views, y_train, val_x, y_val, hp, seed,
        precision: str = "float32"):
    """Train a model (or the top part of one, sharing its layers) and keep the best epoch's weights.

    With ``precision`` bfloat16 a mixed-precision copy trains (float32 weights, bfloat16 arithmetic, a
    float32 softmax) and its weights are copied back: the stored model computes in float32 like any other.
    A recipe with a training size of its own trains a copy that takes images of any size on its crops, and
    validates it on the photos at the image size.
    """
    learner = learner_for(trainable, precision, any_image_size=bool(recipe.train_size))
    monitor = "val_loss" if len(y_val) else "loss"
    epoch_log = EpochLog()
    batches = view_batches(train_views, y_train, hp.batch_size, seed,
                           augment=augmenter(recipe, trainable.output_shape[-1]))
    validation = view_batches([val_x], y_val, hp.batch_size, seed, shuffle=False) if len(y_val) else None
    verbose = 1 if sys.stdout.isatty() else 2
    if recipe.head_epochs:
        # Linear probing, then fine-tuning (Kumar et al. 2022): the zero-initialised classifier learns on the
        # frozen features first, so that fine-tuning starts from a head that fits them instead of bending the
        # features toward a head that does not yet.
        frozen = [layer for layer in learner.layers if layer.trainable and layer.name != models.CLASSIFIER]
        for layer in frozen:
            layer.trainable = False
        compile_for_training(learner, recipe.head_phase())
        learner.fit(batches, validation_data=validation, epochs=recipe.head_epochs, shuffle=False,
                    callbacks=[epoch_log], verbose=verbose)
        for layer in frozen:
            layer.trainable = True
    compile_for_training(learner, recipe)
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=recipe.patience(hp.patience),
                                            restore_best_weights=True)
    learner.fit(
        batches,
        validation_data=validation,
        initial_epoch=recipe.head_epochs,  # the head's epochs count toward the budget
        epochs=recipe.epoch_budget(hp.epochs),
        shuffle=False,  # view_batches shuffles
        callbacks=[epoch_log, stopper, *recipe.callbacks(monitor)],
        verbose=verbose,
    )
    if learner is not trainable:
        trainable.set_weights(learner.get_weights())
    history = pd.DataFrame(epoch_log.rows)
    best_epoch = int(history[monitor].iloc[recipe.head_epochs:].idxmin()) + 1  # the epoch whose weights were kept
    return history, best_epoch


# ---------------------------------------------------------------- the whole run


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose ``reduce`` takes what Keras 3's ``fit`` gives it (keras-team/keras#20585):
    a nest of values (its first batch, to build the model) and scalars with ``axis=0`` (its per-step logs,
    which only need reducing across replicas)."""

    def reduce(self, reduce_op, value, axis=None):
        reduce_one = super().reduce

        def one(v):
            rank = self.experimental_local_results(v)[0].shape.rank
            return reduce_one(reduce_op, v, axis=None if rank == 0 else axis)

        return tf.nest.map_structure(one, value)


def resolve_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy by name. A multi-worker one must be made before TensorFlow runs anything
    (its collective ops are configured at startup), hence first thing in ``run``."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return MultiWorkerStrategy()
    if name != "default":
        raise ValueError(f"unknown strategy {name!r}: default, mirrored or multiworker")
    return tf.distribute.get_strategy()


def is_chief(dist: tf.distribute.Strategy) -> bool:
    """Whether this process writes the result set: the only process, the task named "chief", or worker 0
    where the cluster names no chief (TensorFlow's convention, as in its multi-worker Keras tutorial)."""
    resolver = dist.cluster_resolver
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def worker_folder(out, dist: tf.distribute.Strategy) -> Path:
    """Where this process writes: ``out`` for the chief; for another worker a folder beside it, which is
    deleted at the end. Every worker runs the same code (saving and evaluating included), as tf.distribute
    requires, but only the chief's writes are the result set."""
    if is_chief(dist):
        return Path(out)
    resolver = dist.cluster_resolver
    return Path(f"{Path(out)}.{resolver.task_type}{resolver.task_id}")


def leave_together(dist: tf.distribute.Strategy, timeout_minutes: int = 30) -> None:
    """Wait until every worker has got here. Worker 0 serves the others' last exchanges (and the cluster's
    coordination service): if it exited first, a worker still finishing one would fail with "Socket closed"."""
    if dist.cluster_resolver is not None:
        tf_context.context().wait_at_barrier("fruitveg-training-run-end", timeout_minutes * 60_000)


def true_on_every_worker(dist: tf.distribute.Strategy, flags: list[bool]) -> list[bool]:
    """Each flag and-ed over all workers (an all-reduce), so that every worker runs the same jobs in the
    same order: a worker that trained a model the others skip would wait for them forever."""
    if dist.cluster_resolver is None or not flags:
        return flags
    local = tf.constant(np.asarray(flags, np.int32))
    total = dist.reduce(tf.distribute.ReduceOp.SUM, dist.run(lambda: tf.identity(local)), axis=None)
    return [bool(v) for v in total.numpy() == dist.num_replicas_in_sync]


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
    trunk_precision: str = "auto",
    progress: bool = True,
    keep_cache: bool = False,
    recipe: str = recipes.STUDY,
    train_precision: str = "float32",
    recipe_changes: list[str] = (),
) -> dict[str, str]:
    """Train the models not yet complete in ``out``; returns model id -> "trained"/"done"/reason skipped.

    With ``seeds`` > 1 every model is also trained again from seeds ``hp.seed + 1`` ... (replicates, whose
    history, metrics and predictions are kept beside the model to show the spread that seeds alone cause).
    ``trunk_precision``: auto, float32 or bfloat16 (see ``resolve_precision``); ``train_precision``: the
    arithmetic of the trained parts (auto, float32 or bfloat16; see ``fit``). ``recipe``: how each
    model trains (``recipes.RECIPES``), recorded in the configuration and in each model's ``model.json``.
    Trunk outputs are cached on disk under ``out/.cache`` (core/cache.py), reused by a resumed run, and
    deleted when the run ends unless ``keep_cache``.
    """
    dist = resolve_strategy(strategy)
    precision = resolve_precision(trunk_precision)
    train_precision = resolve_precision(train_precision, TRAIN_PRECISIONS)
    timings = {}
    clock = time.perf_counter()
    chosen = recipes.with_changes({m: recipes.for_model(recipe, m) for m in MODEL_IDS}, list(recipe_changes))
    specs = trained_specs(chosen)
    plan = dataset.plan_splits(data_dir, split, hp.seed, progress=progress)
    timings["split_seconds"] = time.perf_counter() - clock
    class_names = plan.class_names
    groups = group_classes(class_names, group_overrides)
    config = {
        **asdict(hp),
        "split": split,
        "dataset": plan.fingerprint,
        "recipe": recipe,
        "learning_rates": {m: chosen[m].learning_rate for m in MODEL_IDS},
        # Per model: optimizer, weight decay, schedule, label smoothing (README: Recipes).
        "recipes": {m: chosen[m].to_json() for m in MODEL_IDS},
        "early_stopping": "val_loss",
        "resize": images.RESIZE_POLICY,
        "backbone_weights": "random (test only)" if random_backbones else "imagenet",
        "trunk_precision_train_views": precision,
        "train_precision": train_precision,
    }
    writer = artifacts.ResultSetWriter(worker_folder(out, dist), config)
    earlier = writer.previous_config.get("recipes", {})
    differ = [m for m in MODEL_IDS if m in earlier and recipes.Recipe.from_json(earlier[m]) != chosen[m]]
    if differ:
        raise artifacts.ResultSetError(f"{writer.root} holds a result set trained with other recipes for "
                                       f"{', '.join(differ)}; choose a new --out folder or delete that one")
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
    chief = is_chief(dist)
    status = {m: "done" for m in model_ids}
    candidates = [(m, hp.seed + k) for m in model_ids for k in range(seeds)]
    # The chief's result set says what is left to do; the other workers follow it (their folders are scratch).
    pending = [not (chief and _job_done(writer, m, seed, hp.seed)) for m, seed in candidates]
    weights = {}
    to_train = {m for (m, _), todo in zip(candidates, pending) if todo}
    for backbone in sorted({MODEL_SPECS[m].backbone for m in to_train} - {None}):
        try:
            weights[backbone] = "random" if random_backbones else models.imagenet_weights(backbone, weights_dir)
        except models.WeightsUnavailable as err:
            status.update({m: str(err) for m in to_train if MODEL_SPECS[m].backbone == backbone})
    able = [status[m] == "done" for m, _ in candidates]
    agreed = true_on_every_worker(dist, pending + able)
    pending, able_everywhere = agreed[: len(candidates)], agreed[len(candidates) :]
    for (m, _), todo, ok in zip(candidates, pending, able_everywhere):
        if todo and not ok and status[m] == "done":
            status[m] = "not trained: another worker lacks its backbone's weights"
    jobs = [job for job, todo, ok in zip(candidates, pending, able_everywhere) if todo and ok]
    if not jobs:
        _remove_scratch(writer, chief, keep_cache)
        leave_together(dist)
        return status
    # Grouped by backbone, so that a backbone's trunk cache can be freed after its last model.
    backbone_order = [None, *BACKBONES]
    jobs.sort(key=lambda job: (backbone_order.index(MODEL_SPECS[job[0]].backbone), MODEL_IDS.index(job[0]), job[1]))

    clock = time.perf_counter()
    index = {name: i for i, name in enumerate(class_names)}
    data = {}
    for name in dataset.SPLITS:
        photos, kept, skipped = dataset.load_images(data_dir, plan.files[name], hp.image_size, progress,
                                                    writer.root / cache.CACHE_FOLDER / "photos" / f"{name}.npy")
        data[name] = (photos, np.array([index[f.label] for f in kept], np.int64), kept)
    _write_samples(writer, data_dir, data["test"][2])
    train_views = make_views(data["train"][0], hp.views, hp.seed, writer.root / cache.CACHE_FOLDER / "photo-views")
    timings["load_seconds"] = time.perf_counter() - clock
    log.info("photos loaded and augmented: %s", {name: len(data[name][1]) for name in data})
    clean_mask = ~np.isin([f.path for f in data["test"][2]], plan.leaked["test"])

    caches: dict[str, dict] = {}
    for position, (model_id, run_seed) in enumerate(jobs):
        spec = specs[model_id]
        if status[model_id] not in ("done", "trained"):
            continue  # its first run failed; no replicate without it
        seed = run_seed * 1000 + MODEL_IDS.index(model_id)
        keras.utils.set_random_seed(seed)
        with dist.scope():
            try:
                model = models.build_model(
                    model_id, len(class_names), hp.image_size, hp.dropout, weights.get(spec.backbone),
                    spec.frozen_through,
                )
                trainable = models.trained_part(model, spec)
            except models.WeightsUnavailable as err:
                status[model_id] = str(err)
                continue
        clock = time.perf_counter()
        folder = spec.backbone and cache.cache_folder(
            writer.root, spec.backbone, dataset=plan.fingerprint, split=split, image_size=hp.image_size,
            views=hp.views, seed=hp.seed, precision=precision,
            # The trunk's weights by what they compute, not by their file's path (which a rerun may spell otherwise).
            trunk=models.trunk_signature(model, spec), trunk_output=spec.trunk_output,
        )
        inputs = _model_inputs(model, spec, chosen[model_id], train_views, data, caches, precision, timings,
                               progress, folder)
        history, best_epoch = fit(
            trainable, chosen[model_id], inputs["train"], data["train"][1],
            inputs["validation"], data["validation"][1], hp, seed, train_precision,
        )
        train_seconds = time.perf_counter() - clock
        log.info("%s, seed %d: %d epochs, best %d, %.0f s", model_id, run_seed, len(history), best_epoch, train_seconds)
        top_reads = caches[spec.backbone]["trunk"] if spec.backbone else {s: data[s][0] for s in ("validation", "test")}
        explain_inputs = top_reads["test"]
        fitted = calibration.fit(
            predict_in_batches(models.top_model(model, spec), top_reads["validation"], dtype=np.float32),
            data["validation"][1],
        ) if len(data["validation"][1]) else None
        if run_seed == hp.seed:
            _write_model(
                writer, model, spec, chosen[model_id], class_names, groups, history, best_epoch, train_seconds,
                explain_inputs, data["test"], clean_mask, weights.get(spec.backbone), hp, fitted,
            )
        else:
            _write_replicate(writer, model, spec, run_seed, class_names, groups, history, explain_inputs,
                             data["test"], clean_mask, fitted)
        status[model_id] = "trained"
        print(f"[{position + 1}/{len(jobs)}] {model_id} (seed {run_seed}) written to {writer.root / model_id}", flush=True)
        if spec.backbone and all(MODEL_SPECS[m].backbone != spec.backbone for m, _ in jobs[position + 1 :]):
            del caches[spec.backbone]
        del model, trainable, inputs, explain_inputs
        gc.collect()  # Keras models hold reference cycles, and with them their datasets
    writer.save_manifest(timings={**writer.manifest.get("timings", {}), **timings})
    caches.clear()
    _remove_scratch(writer, chief, keep_cache)
    leave_together(dist)
    return status


def _remove_scratch(writer, chief: bool, keep_cache: bool) -> None:
    """The trunk cache, unless kept; and a non-chief worker's folder, which holds nothing else of use."""
    if keep_cache:
        return
    cache.remove(writer.root)
    if not chief:
        shutil.rmtree(writer.root, ignore_errors=True)


def _model_inputs(model, spec, recipe, train_views, data, caches, precision, timings, progress, folder) -> dict:
    """What the trainable part of ``model`` reads, per split: photos, trunk output or frozen features."""
    photos = {"train": train_views, "validation": data["validation"][0], "test": data["test"][0]}
    if spec.backbone is None:
        # Fresh random views every epoch replace the cached ones (core/augmentation.py).
        return {**photos, "train": train_views[:1]} if recipe.augmentation == "random" else photos
    if recipe.augmentation != "views":
        raise ValueError(f"{spec.id} trains on cached trunk outputs: only the cached views can augment its photos")
    stored = caches.setdefault(spec.backbone, {})
    if "trunk" not in stored:
        clock = time.perf_counter()
        stored["trunk"] = precompute(models.trunk_model(model, spec), photos, precision, progress,
                                     f"{spec.backbone} trunk ({precision}), once per view", folder / "trunk")
        timings[f"{spec.backbone}_trunk_seconds"] = time.perf_counter() - clock
    if not spec.attention:
        return stored["trunk"]
    if "frozen" not in stored:
        stored["frozen"] = precompute(models.frozen_features_model(model, spec), stored["trunk"], precision,
                                      folder=folder / "frozen")
    return stored["frozen"]


def _write_model(writer, model, spec, recipe, class_names, groups, history, best_epoch, train_seconds,
                 explain_inputs, test_data, clean_mask, weights, hp, calibrated):
    photos, y_test, files = test_data
    clock = time.perf_counter()
    tested = evaluation.run_test_split(
        model, spec, explain_inputs, photos, y_test, class_names, [groups[c] for c in class_names], clean_mask
    )
    if calibrated:
        tested.metrics["calibration"] = calibration.on_test(calibrated, tested.probs, y_test)
    evaluation_seconds = time.perf_counter() - clock
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
                "learning_rate": recipe.learning_rate,
                "recipe": recipe.to_json(),
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
                "evaluation_seconds": float(evaluation_seconds),
                "backbone_weights": _weights_label(weights) if spec.backbone else None,
                "trunk_signature": models.trunk_signature(model, spec) if spec.backbone else None,
                "trunk_output": spec.trunk_output,
            },
        )


def _job_done(writer, model_id: str, seed: int, first_seed: int) -> bool:
    if not writer.is_complete(model_id):
        return False
    return seed == first_seed or artifacts.replicate_file(seed, artifacts.METRICS) in writer.manifest["models"][model_id]["files"]


def _write_replicate(writer, model, spec, seed, class_names, groups, history, explain_inputs, test_data, clean_mask,
                     calibrated):
    """Another seed's run of a model: its history, test metrics and predictions, added to the model's folder."""
    _, y_test, files = test_data
    probs = predict_in_batches(models.top_model(model, spec), explain_inputs, dtype=np.float32)
    metrics = evaluation.evaluate(probs, y_test, class_names, [groups[c] for c in class_names], clean_mask)
    if calibrated:
        metrics["calibration"] = calibration.on_test(calibrated, probs, y_test)
    metrics["best_epoch"] = int(history["val_loss" if "val_loss" in history else "loss"].idxmin()) + 1
    # A non-chief worker's scratch folder lacks the model's first run where the chief had it already.
    with writer.model_folder(spec.id, keep_existing=(writer.root / spec.id).is_dir()) as folder:
        artifacts.write_csv(folder / artifacts.replicate_file(seed, artifacts.HISTORY), history)
        artifacts.write_json(folder / artifacts.replicate_file(seed, artifacts.METRICS), metrics)
        artifacts.write_predictions(folder / artifacts.replicate_file(seed, artifacts.PREDICTIONS),
                                    [f.path for f in files], y_test, probs)


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
