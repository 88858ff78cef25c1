"""Testing one model: predictions, maps, metrics, speed and a sanity check of its Grad-CAM maps."""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from scipy.stats import spearmanr
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from core import artifacts, calibration, dataset, inference, models, stats
from core.explain import GRADCAM_TARGET, Explainer
from core.specs import ModelSpec

# Test images used for the Grad-CAM randomisation check; a few dozen give a stable mean correlation.
SANITY_IMAGES = 48
# Adebayo et al. (2018): maps that barely change when the weights are randomised do not explain the model.
# Above this mean rank correlation between the trained and the randomised model's maps, a map fails.
SANITY_MAX_CORRELATION = 0.5


@dataclass
class SplitResult:
    probs: np.ndarray
    maps: dict[str, np.ndarray]
    metrics: dict


def run_test_split(model: keras.Model, spec: ModelSpec, explain_inputs, photos, y_test, class_names, class_groups,
               clean_mask) -> SplitResult:
    """Everything the result set stores about a trained model's test split.

    ``explain_inputs`` is what the model's top reads: the cached trunk output, or the photos for the CNNs.
    """
    explanation = Explainer(model, spec).batched(explain_inputs)
    probs = explanation.probs
    rows = np.arange(len(y_test))
    maps = {
        "gradcam_pred": explanation.gradcam[rows, probs.argmax(axis=1)],
        "gradcam_true": explanation.gradcam[rows, y_test],
    }
    if explanation.attention is not None:
        maps["attention"] = explanation.attention
    metrics = evaluate(probs, y_test, class_names, class_groups, clean_mask)
    metrics["gradcam_target"] = GRADCAM_TARGET
    metrics["inference_ms"] = inference_ms(model, photos)
    metrics["sanity"] = randomisation_check(model, spec, explain_inputs[:SANITY_IMAGES],
                                            probs[:SANITY_IMAGES].argmax(axis=1))
    return SplitResult(probs, maps, metrics)


# What the randomisation check compares (``sanity["maps"]``; checks stored without it compared the maps as shown).
SANITY_MAPS = "signed"


def randomisation_check(model: keras.Model, spec: ModelSpec, explain_inputs, classes) -> dict:
    """Model-randomisation test (Adebayo et al. 2018): Grad-CAM of the same images and classes (``classes``: the
    trained model's answers) before and after the trained layers are re-drawn at random.

    The trained weights are put back afterwards. Reports the mean Spearman correlation between each image's
    trained and randomised map: near 1 means the map does not depend on what the model learnt. The maps are
    compared before Grad-CAM's ReLU (``SANITY_MAPS``): after it, a re-drawn model's map of the trained answer's
    class is zero everywhere for most photos (a re-drawn ResNet50 is so sure of another class that no region
    raises this one), which left 42-43 of 48 comparisons empty for three of the six models. The ReLU keeps the
    signed map's order where it is positive, so the signed maps differ wherever the shown ones do. Reported
    beside it: the correlation of their absolute values, whether the map is strong in the same places whatever
    its sign (the features a trained part reads decide that in part), as Adebayo et al. report both.
    """
    trained_maps = _signed_maps(model, spec, explain_inputs, classes)
    trained = models.trained_part(model, spec)
    saved = trained.get_weights()
    rng = np.random.default_rng(0)
    try:
        trained.set_weights([
            rng.normal(0, np.sqrt(2 / np.prod(w.shape[:-1])), w.shape).astype(w.dtype) if w.ndim > 1 else w
            for w in saved
        ])
        randomised_maps = _signed_maps(model, spec, explain_inputs, classes)
    finally:
        trained.set_weights(saved)
    correlation, images, flat = rank_agreement(trained_maps, randomised_maps)
    return {
        "gradcam_rank_correlation": correlation,
        "absolute_rank_correlation": rank_agreement(np.abs(trained_maps), np.abs(randomised_maps))[0],
        "maps": SANITY_MAPS,
        "images": images,
        "flat_randomised": flat,
        "passes": correlation < SANITY_MAX_CORRELATION,
        "threshold": SANITY_MAX_CORRELATION,
    }


def _signed_maps(model: keras.Model, spec: ModelSpec, explain_inputs, classes) -> np.ndarray:
    """Each input's Grad-CAM map of its class in ``classes``, before the ReLU."""
    return Explainer(model, spec, signed=True).batched(explain_inputs).gradcam[np.arange(len(classes)), classes]


def rank_agreement(trained_maps, randomised_maps) -> tuple[float, int, int]:
    """The mean Spearman correlation of each trained map with its randomised one, over the trained maps that are
    not flat, how many those are, and how many of their randomised maps are flat. A flat randomised map (a
    re-drawn model whose answer is the trained answer, so sure of it that its log-probability has no gradient)
    keeps nothing of the trained map's order and counts as 0. The mean is 1 (no sign that the maps depend on
    the weights) when no trained map has any structure."""
    pairs = [(a, b) for a, b in zip(trained_maps, randomised_maps) if np.ptp(a) > 0]
    flat = [np.ptp(b) == 0 for _, b in pairs]
    correlations = [0.0 if is_flat else spearmanr(a.ravel(), b.ravel()).statistic for (a, b), is_flat in zip(pairs, flat)]
    return (float(np.mean(correlations)) if correlations else 1.0), len(pairs), int(sum(flat))


def inference_ms(model: keras.Model, photos: np.ndarray, repeats: int = 20) -> float:
    """Mean milliseconds for one photo through the whole model, compiled, batch of one."""
    run = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    run(photos[:1].astype(np.float32))
    start = time.perf_counter()
    for i in range(repeats):
        run(photos[i % len(photos)][None].astype(np.float32))
    return (time.perf_counter() - start) / repeats * 1000


def evaluate(
    probs: np.ndarray,
    y_true: np.ndarray,
    class_names: list[str],
    class_groups: list[str],
    clean_mask: np.ndarray | None = None,
) -> dict:
    """Every figure the dashboard shows for one model, as plain JSON-able values.

    ``clean_mask`` marks the test images without a (near) duplicate in training; the accuracy on those
    alone is what the model does on images it has not seen.
    """
    n, num_classes = probs.shape
    y_pred = probs.argmax(axis=1)
    correct = y_pred == y_true
    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    clean_mask = np.ones(n, bool) if clean_mask is None else np.asarray(clean_mask, bool)
    return {
        "n": int(n),
        "accuracy": float(correct.mean()),
        "accuracy_interval": stats.wilson_interval(int(correct.sum()), n),
        "loss": stats.negative_log_likelihood(probs, y_true),
        "loss_interval": stats.bootstrap_interval(
            lambda p, y: stats.negative_log_likelihood(p, y), probs, y_true
        ),
        "top5_accuracy": stats.top_k_accuracy(probs, y_true, min(5, num_classes)),
        "group_accuracy": stats.group_accuracy(probs, y_true, class_groups),
        "group_accuracy_interval": stats.bootstrap_interval(
            lambda p, y: stats.group_accuracy(p, y, class_groups), probs, y_true
        ),
        "clean_n": int(clean_mask.sum()),
        "clean_accuracy": float(correct[clean_mask].mean()) if clean_mask.any() else None,
        "clean_accuracy_interval": stats.wilson_interval(int(correct[clean_mask].sum()), int(clean_mask.sum())),
        "ece": stats.expected_calibration_error(probs, y_true, n_bins=10),
        "reliability": stats.reliability_bins(probs, y_true, n_bins=10).to_json(),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def recorded_split(result_set, split: str, data_dir=None, progress: bool = True, size: int | None = None):
    """The photos of one split as the result set recorded it: (photos, class indices, kept files); at ``size``
    pixels instead of the set's image size if given."""
    plan = dataset.SplitPlan.from_json(result_set.dataset())
    data_dir = result_set.data_root(data_dir)
    photos, kept, skipped = dataset.load_images(data_dir, plan.files[split], size or result_set.config["image_size"],
                                                progress)
    if skipped or not kept:
        raise FileNotFoundError(f"{len(skipped)} {split} images of the recorded split are missing or unreadable in {data_dir}")
    return photos, np.array([result_set.class_names.index(f.label) for f in kept]), kept


def top_inputs(model: keras.Model, spec: ModelSpec, photos: np.ndarray) -> np.ndarray:
    """What the model's top reads (``models.top_model``): the trunk's output, or the photos for the CNNs."""
    if spec.backbone is None:
        return photos
    return models.trunk_model(model, spec).predict(photos.astype(np.float32), batch_size=32, verbose=0)


def loadable(result_set, model_ids, weights_dir, status: dict):
    """Each of the result set's models (``model_ids``, default all) that loads, as (id, model, spec); why each
    other one does not goes into ``status``."""
    for model_id in model_ids or list(result_set.models):
        try:
            model = inference.load_model(result_set, model_id, weights_dir)
        except inference.ModelUnavailable as err:
            status[model_id] = str(err)
            continue
        yield model_id, model, result_set.spec(model_id)


def reevaluate(result_set, data_dir=None, weights_dir=None, model_ids=None, progress: bool = True) -> dict[str, str]:
    """Test a result set's models again on its recorded test split and rewrite their test files.

    For a result set made by an older version, or to add what a newer version measures; the split comes
    from the result set, so the images are the same ones. A model's calibration, fitted on validation, is
    kept (its test figures are measured again on the new predictions).
    """
    photos, y_test, kept = recorded_split(result_set, "test", data_dir, progress)
    plan = dataset.SplitPlan.from_json(result_set.dataset())
    clean_mask = ~np.isin([f.path for f in kept], plan.leaked["test"])
    writer = artifacts.ResultSetWriter(result_set.root, result_set.config)
    status = {}
    for model_id, model, spec in loadable(result_set, model_ids, weights_dir, status):
        tested = run_test_split(model, spec, top_inputs(model, spec, photos), photos, y_test, result_set.class_names,
                                result_set.class_groups, clean_mask)
        earlier = result_set.metrics(model_id)
        if earlier.get("calibration"):
            tested.metrics["calibration"] = calibration.on_test(earlier["calibration"], tested.probs, y_test)
        # Test-time options measured with the same weights on the same photos stay as measured.
        tested.metrics.update({key: earlier[key] for key in artifacts.TEST_TIME_OPTIONS if key in earlier})
        with writer.model_folder(model_id, keep_existing=True) as folder:
            artifacts.write_test_files(folder, [f.path for f in kept], y_test, tested.probs, tested.maps, tested.metrics)
        status[model_id] = "evaluated"
    return status


def probabilities(model: keras.Model, spec: ModelSpec, photos: np.ndarray) -> np.ndarray:
    """The model's probabilities for a batch of photos, through the trunk and the top it was stored as."""
    return models.top_model(model, spec).predict(top_inputs(model, spec, photos), batch_size=32, verbose=0)


def calibrate(result_set, data_dir=None, weights_dir=None, model_ids=None, progress: bool = True) -> dict[str, str]:
    """Fit each model's temperature on the result set's validation photos and store it in its metrics, with
    what it changes on the stored test predictions (``core.calibration``). Training does the same for the
    runs it makes; this is for sets made before, and needs the models' weights."""
    photos, y_val, _ = recorded_split(result_set, "validation", data_dir, progress)
    writer = artifacts.ResultSetWriter(result_set.root, result_set.config)
    status = {}
    for model_id, model, spec in loadable(result_set, model_ids, weights_dir, status):
        val_probs = probabilities(model, spec, photos)
        test = result_set.predictions(model_id)
        metrics = {**result_set.metrics(model_id),
                   "calibration": calibration.on_test(calibration.fit(val_probs, y_val), test.probs, test.y_true)}
        with writer.model_folder(model_id, keep_existing=True) as folder:
            artifacts.write_json(folder / artifacts.METRICS, metrics)
        status[model_id] = "calibrated"
    return status
