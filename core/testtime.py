"""Test-time options: more than one look at each photo (its mirror image, crops of it) or the photo at another
size than the model trained at. Each is measured on the validation photos, which alone choose whether to take
it, and on the test photos, counting what it fixes and breaks against the photo as the model trained on it.
The stored predictions stay the photo alone, and so do the pages unless asked (the Classify and Statistics
pages' "test-time views" switches read the views taken): an option is a measured figure, not the model."""

from __future__ import annotations

import numpy as np

from core import artifacts, augmentation, calibration, evaluation, models, stats

SPLITS = ("validation", "test")


def option_figures(by_option: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray], baseline: str) -> dict:
    """Figures of test-time options (``by_option[option][split]``: probabilities; ``baseline`` among them, the
    photo as the model trained on it): accuracy and loss on validation, which chooses, and test, with the exact
    McNemar test of the photos each option fixes and breaks against the baseline and its 95 % Wilson interval.

    Each option's probabilities are scaled by a temperature fitted on its own validation photos, as the stored
    one was on the baseline's: a model is more or less sure of an average of views or a photo at another size,
    and one temperature for all would charge the others a calibration loss the baseline's own fit does not pay.
    """
    temperatures = {option: calibration.fit_temperature(probs["validation"], labels["validation"])
                    for option, probs in by_option.items()}
    scaled = {option: {split: calibration.scale(probs[split], temperatures[option]) for split in SPLITS}
              for option, probs in by_option.items()}
    right = {option: {split: p.argmax(1) == labels[split] for split, p in probs.items()} for option, probs in scaled.items()}
    options = {}
    for option in by_option:
        options[option] = {"temperature": temperatures[option],
                           **{split: {"n": int(len(labels[split])), "accuracy": float(right[option][split].mean()),
                                      "loss": stats.negative_log_likelihood(scaled[option][split], labels[split])}
                              for split in SPLITS}}
        paired = stats.mcnemar_exact(right[option]["test"], right[baseline]["test"])
        options[option]["test"].update({
            "fixed": paired.only_a, "broken": paired.only_b, "p_value": paired.p_value,
            "accuracy_interval": list(stats.wilson_interval(int(right[option]["test"].sum()), len(labels["test"]))),
        })
    # Chosen on validation only: the most photos right, then the lower loss; the baseline unless another
    # option does better.
    chosen = max(options, key=lambda option: (options[option]["validation"]["accuracy"],
                                              -options[option]["validation"]["loss"], option == baseline))
    return {"baseline": baseline, "options": options, "chosen": chosen}


def _recorded_splits(result_set, data_dir, progress):
    """The recorded validation and test photos at the image size, their labels, and the test files."""
    loaded = {split: evaluation.recorded_split(result_set, split, data_dir, progress) for split in SPLITS}
    return ({split: photos for split, (photos, _, _) in loaded.items()},
            {split: y for split, (_, y, _) in loaded.items()}, [f.path for f in loaded["test"][2]])


def _stored_test_probs(result_set, model_id: str, test_files: list[str]) -> np.ndarray:
    """The model's stored test probabilities: the baseline on test, if they are of the recorded test photos."""
    stored = result_set.predictions(model_id)
    if list(stored.files) != test_files:
        raise artifacts.ResultSetError(f"{model_id}'s stored predictions are not of the recorded test photos; "
                                       "run scripts/evaluate.py first")
    return stored.probs


def _store(result_set, model_id: str, key: str, figures: dict, view_predictions: tuple | None = None) -> None:
    """The figures into the model's metrics under ``key``; for the views, also the test predictions with the
    views taken (``view_predictions``: files, labels, probabilities; None: the photo alone was kept)."""
    metrics = result_set.metrics(model_id)
    metrics[key] = figures
    writer = artifacts.ResultSetWriter(result_set.root, result_set.config)
    with writer.model_folder(model_id, keep_existing=True) as folder:
        artifacts.write_json(folder / artifacts.METRICS, metrics)
        if key == artifacts.TEST_TIME_VIEWS:
            (folder / artifacts.VIEW_PREDICTIONS).unlink(missing_ok=True)
            if view_predictions is not None:
                artifacts.write_predictions(folder / artifacts.VIEW_PREDICTIONS, *view_predictions)


def measure_views(result_set, data_dir=None, weights_dir=None, model_ids=None, progress: bool = True) -> dict[str, str]:
    """Measure each of ``augmentation.TEST_VIEW_SETS`` (the views' probabilities averaged) for each model with
    weights and store the figures (``option_figures``) in its metrics under ``artifacts.TEST_TIME_VIEWS``, and
    the test predictions with the views taken (``artifacts.VIEW_PREDICTIONS``, for the ensembles). One view of
    the two splits is in memory at a time, beside the photos."""
    photos, labels, test_files = _recorded_splits(result_set, data_dir, progress)
    views = list(dict.fromkeys(name for names in augmentation.TEST_VIEW_SETS.values() for name in names))
    status = {}
    for model_id, model, spec in evaluation.loadable(result_set, model_ids, weights_dir, status):
        by_view = {"test": {"photo": _stored_test_probs(result_set, model_id, test_files)}, "validation": {}}
        for split in SPLITS:
            for name in views:
                if name not in by_view[split]:
                    by_view[split][name] = evaluation.probabilities(
                        model, spec, augmentation.test_time_view(photos[split], name))
        by_option = {option: {split: np.mean([by_view[split][name] for name in names], axis=0) for split in SPLITS}
                     for option, names in augmentation.TEST_VIEW_SETS.items()}
        figures = option_figures(by_option, labels, baseline="photo")
        figures["method"] = (f"the views' probabilities averaged (crops of {augmentation.TEST_CROP_SIDE:.0%} of the "
                             "side, resized to the image size), scaled by a temperature fitted on the validation "
                             "photos with those views")
        figures["views"] = {option: list(names) for option, names in augmentation.TEST_VIEW_SETS.items()}
        chosen = figures["chosen"]
        _store(result_set, model_id, artifacts.TEST_TIME_VIEWS, figures,
               None if chosen == "photo" else (test_files, labels["test"], by_option[chosen]["test"]))
        status[model_id] = "views measured"
    return status


def measure_sizes(result_set, sizes, data_dir=None, weights_dir=None, model_ids=None,
                  progress: bool = True) -> dict[str, str]:
    """Measure each model with weights on the photos resized to each of ``sizes`` (pixels) besides the image
    size it trained at, and store the figures (``option_figures``, options named by their size in pixels) in
    its metrics under ``artifacts.TEST_TIME_SIZES``. Models trained on zoomed-in crops see objects larger than
    a whole photo shows them, and may answer better on photos shown larger (Touvron et al. 2019, "Fixing the
    train-test resolution discrepancy"). One size's photos are in memory at a time."""
    image_size = result_set.config["image_size"]
    status, loaded, by_size, labels = {}, {}, {}, {}
    for model_id, model, spec in evaluation.loadable(result_set, model_ids, weights_dir, status):
        # A copy taking photos of any size: convolutional layers and global pooling compute on any of them.
        loaded[model_id] = models.with_compute_dtype(model, "float32", any_image_size=True)
        by_size[model_id] = {}
    for size in sorted({image_size, *sizes}):
        for split in SPLITS:
            photos, labels[split], kept = evaluation.recorded_split(result_set, split, data_dir, progress, size)
            for model_id, model in loaded.items():
                probs = (_stored_test_probs(result_set, model_id, [f.path for f in kept])
                         if size == image_size and split == "test"
                         else model.predict(photos.astype(np.float32), batch_size=32, verbose=0))
                by_size[model_id].setdefault(str(size), {})[split] = probs
            del photos
    for model_id in loaded:
        figures = option_figures(by_size[model_id], labels, baseline=str(image_size))
        figures["method"] = ("each photo resized to the size; probabilities scaled by a temperature fitted on the "
                             "validation photos at that size")
        _store(result_set, model_id, artifacts.TEST_TIME_SIZES, figures)
        status[model_id] = "sizes measured"
    return status
