"""Loading a result set's models, and classifying photos with all of them at once.

The six models share work: the frozen trunk of VGG16 (and of ResNet50) is identical in both models of that
backbone, so it runs once per photo for the pair; each model then runs only its own top, with Grad-CAM for
every class and the attention map in the same compiled graph (see ``core.explain``). Loading shares too:
each ImageNet backbone is built and its weights read once for both of its models and the open-set features
(``models.build_backbone_models``). ``Predictor`` is the command line's lighter path: probabilities and the
open-set verdict only, uncompiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from core import artifacts, augmentation, calibration, images, models, openset
from core.explain import Explainer, Explanation
from core.specs import MODEL_IDS, MODEL_SPECS, ModelSpec


class ModelUnavailable(RuntimeError):
    """A model of the result set cannot be loaded; the message says why."""


class ChosenViews(NamedTuple):
    """The test-time views validation took for a model (``core.testtime``)."""

    option: str  # its name, a key of ``augmentation.TEST_VIEW_SETS``
    views: tuple[str, ...]  # the views whose probabilities are averaged
    temperature: float  # fitted on the validation photos' averages


@dataclass
class LoadedModels:
    """The models of a result set that loaded, why the others did not, and the pooled ImageNet features."""

    models: dict[str, keras.Model]  # in MODEL_IDS order
    problems: dict[str, str]
    # backbone -> model from its trunk output to the pooled ImageNet features (what the open-set verdict reads)
    pooled_features: dict[str, keras.Model]
    # model id -> the temperature its probabilities are scaled by (core.calibration; 1 where none was fitted)
    temperatures: dict[str, float] = field(default_factory=dict)
    # model id -> the model as its result set trained it (``ResultSet.spec``: where its trunk ends)
    specs: dict[str, ModelSpec] = field(default_factory=dict)
    # model id -> the test-time views validation took for it (``chosen_views``), where it took more than the
    # photo alone
    views: dict[str, ChosenViews] = field(default_factory=dict)


def load_models(result_set: artifacts.ResultSet, weights_dir=None, model_ids=None) -> LoadedModels:
    """Rebuild the result set's models (``model_ids``, default all): whole from a .keras file, or ImageNet
    backbone plus stored trained part, each backbone built once for both of its models
    (``models.build_backbone_models``)."""
    wanted = [m for m in MODEL_IDS if m in (model_ids or result_set.models)]
    problems = {m: p for m, p in result_set.problems.items() if model_ids is None or m in model_ids}
    loaded, pooled, families = {}, {}, {}
    for model_id in wanted:
        info = result_set.models[model_id]
        if not result_set.has_weights(model_id):
            problems[model_id] = (
                f"this result set carries no weights for it ({result_set.weights_path(model_id).name} was stripped: "
                "the set is kept for comparison)"
            )
        elif not info["backbone"]:
            path = result_set.weights_path(model_id)
            try:
                loaded[model_id] = keras.saving.load_model(path, compile=False, safe_mode=True)
            except (OSError, ValueError) as err:
                problems[model_id] = f"{path.name} cannot be loaded: {err}"
        else:
            key = (info["backbone"], info["backbone_weights"], info["num_classes"], info["image_size"],
                   result_set.spec(model_id).trunk_output)
            families.setdefault(key, []).append(model_id)
    for (backbone, backbone_weights, num_classes, image_size, trunk_output), family in families.items():
        if backbone in pooled:
            # One trunk per backbone is what the classifiers share: training never cuts a backbone twice in a set.
            problems.update({m: f"trained with its {backbone} trunk ending at {trunk_output}, unlike the set's other "
                                f"{backbone} model: the classifiers share one trunk per backbone" for m in family})
            continue
        try:
            weights = "random" if backbone_weights == "random" else models.imagenet_weights(backbone, weights_dir)
            dropouts = {m: result_set.models[m]["dropout"] for m in family}
            built, pooled_features = models.build_backbone_models(
                dropouts, num_classes, image_size, weights, result_set.spec(family[0]).frozen_through)
        except models.WeightsUnavailable as err:
            problems.update({m: str(err) for m in family})
            continue
        except (OSError, ValueError) as err:
            problems.update({m: f"the {backbone} backbone cannot be built: {err}" for m in family})
            continue
        # One trunk for the family, so one check of its weights against what each model was trained with.
        trunk_check = models.trunk_signature(built[family[0]], result_set.spec(family[0]))
        for model_id in family:
            expected = result_set.models[model_id]["trunk_signature"]
            path = result_set.weights_path(model_id)
            if not np.isclose(trunk_check, expected, rtol=1e-3, atol=1e-4):
                problems[model_id] = (
                    f"the {backbone} weights found differ from those it was trained with "
                    f"(trunk check {trunk_check:.4g} vs {expected:.4g})"
                )
                continue
            try:
                models.trained_part(built[model_id], result_set.spec(model_id)).load_weights(path)
            except (OSError, ValueError) as err:
                problems[model_id] = f"{path.name} cannot be loaded: {err}"
                continue
            loaded[model_id] = built[model_id]
            pooled[backbone] = pooled_features
    temperatures = {m: calibration.temperature(result_set.metrics(m)) for m in loaded}
    views = {m: chosen for m in loaded if (chosen := chosen_views(result_set.metrics(m)))}
    return LoadedModels({m: loaded[m] for m in MODEL_IDS if m in loaded}, problems, pooled, temperatures,
                        {m: result_set.spec(m) for m in loaded}, views)


def chosen_views(metrics: dict) -> ChosenViews | None:
    """The test-time views validation took for a model, from its stored metrics; None where none were measured
    or the photo alone was kept."""
    measured = metrics.get(artifacts.TEST_TIME_VIEWS)
    if not measured or measured["chosen"] == measured["baseline"]:
        return None
    chosen, figures = artifacts.chosen_option(metrics, artifacts.TEST_TIME_VIEWS)
    return ChosenViews(chosen, tuple(measured["views"][chosen]), figures["temperature"])


def load_model(result_set: artifacts.ResultSet, model_id: str, weights_dir=None) -> keras.Model:
    """One model of the result set; raises ModelUnavailable with the reason when it cannot be loaded."""
    loaded = load_models(result_set, weights_dir, [model_id])
    if model_id not in loaded.models:
        raise ModelUnavailable(loaded.problems[model_id])
    return loaded.models[model_id]


@dataclass
class Classification:
    """All models' answers for a batch of photos."""

    results: dict[str, Explanation]
    # The open-set verdict, {model id or "ensemble": (B,) bool}, True = none of the known classes; None
    # where the classifier has no verdict to apply.
    unknown: dict[str, np.ndarray] | None = None
    # model id -> the test-time views its probabilities average (``ChosenViews.option``); others: the photo alone
    views: dict[str, str] = field(default_factory=dict)

    def ensemble(self) -> np.ndarray:
        """Soft voting: the mean of the models' class probabilities, (B, C)."""
        return np.mean([r.probs for r in self.results.values()], axis=0)


class OpenSetJudge:
    """A result set's stored open-set verdict, read on the pooled ImageNet features of the backbones its models
    were built around (``LoadedModels.pooled_features``), from the trunk outputs the models compute anyway: no
    backbone is built or run a second time for it."""

    def __init__(self, info: dict, arrays: dict[str, np.ndarray], pooled_features: dict[str, keras.Model]):
        self.info, self.detectors = info, openset.from_stored(info, arrays)
        self.pooled = {b: pooled_features[b] for b in info["detectors"][openset.ENSEMBLE]["backbones"]}

    @classmethod
    def for_models(cls, loaded: LoadedModels, stored: tuple[dict, dict] | None, image_size: int) -> OpenSetJudge | None:
        """None where the set has no verdict, or one these models cannot judge: another image size, or a
        backbone none of the loaded models has (the caller then falls back on ``core.features``)."""
        if stored is None:
            return None
        info, arrays = stored
        needed = set(info["detectors"][openset.ENSEMBLE]["backbones"])
        if info["image_size"] != image_size or not needed <= set(loaded.pooled_features):
            return None
        return cls(info, arrays, loaded.pooled_features)

    def __call__(self, trunk_outputs: dict, model_ids) -> dict[str, np.ndarray]:
        """Each backbone's trunk output -> ``{model id or "ensemble": (B,) bool}``, True = unknown."""
        features = {b: openset.normalise(np.asarray(p(trunk_outputs[b], training=False))) for b, p in self.pooled.items()}
        return openset.verdicts(self.info, self.detectors, features, model_ids)


def calibrated(explanation: Explanation, temperature: float) -> Explanation:
    """The model's answer with its probabilities temperature-scaled (``core.calibration``); maps unchanged."""
    return explanation if temperature == 1 else replace(explanation, probs=calibration.scale(explanation.probs, temperature))


def answers_with_views(results: dict[str, Explanation], photos: np.ndarray, views: dict[str, ChosenViews],
                       specs: dict[str, ModelSpec], trunks: dict, tops: dict) -> tuple[dict[str, Explanation], dict[str, str]]:
    """``results`` (the photo's answers) with each model in ``views`` answering instead with its views'
    probabilities averaged and scaled by their temperature, as ``core.testtime`` measured them (maps kept),
    and ``{model id: the views' name}`` (``Classification.views``). ``trunks`` (by backbone) and ``tops`` (by
    model) are the callables the caller runs photos with. All the views a backbone's models take go through
    its trunk as one batch, and each model's top reads the rows of its own views."""
    count = len(photos)
    needed = {}  # backbone (None: the CNNs, which read the views themselves) -> the views its models take
    for model_id, chosen in views.items():
        needed.setdefault(specs[model_id].backbone, {}).update(dict.fromkeys(chosen.views))
    made = {name: augmentation.test_time_view(photos, name).astype(np.float32)
            for name in dict.fromkeys(name for names in needed.values() for name in names)}
    outputs = {}
    for backbone, names in needed.items():
        stacked = tf.convert_to_tensor(np.concatenate([made[name] for name in names]))
        outputs[backbone] = trunks[backbone](stacked) if backbone else stacked
    averaged = {}
    for model_id, (_, chosen, temperature) in views.items():
        backbone = specs[model_id].backbone
        order = list(needed[backbone])
        rows = np.concatenate([order.index(name) * count + np.arange(count) for name in chosen])
        probs = np.asarray(tops[model_id](tf.gather(outputs[backbone], rows))).reshape(len(chosen), count, -1)
        averaged[model_id] = replace(results[model_id], probs=calibration.scale(probs.mean(axis=0), temperature))
    return {**results, **averaged}, {model_id: chosen.option for model_id, chosen in views.items()}


class Classifier:
    """Several trained models of one result set, sharing each backbone's trunk, compiled once, and the
    open-set verdict on those same trunks (``judge``, optional). Probabilities are temperature-scaled by
    ``temperatures`` (model id -> T, ``LoadedModels.temperatures``; none given: as the models output them).
    ``specs``: where each model's trunk ends (``LoadedModels.specs``; none given: at its backbone's usual cut).
    ``views``: the test-time views each model may average (``LoadedModels.views``), on request."""

    def __init__(self, loaded: dict[str, keras.Model], judge: OpenSetJudge | None = None,
                 temperatures: dict[str, float] | None = None, specs: dict[str, ModelSpec] | None = None,
                 views: dict[str, ChosenViews] | None = None):
        self.model_ids = [m for m in MODEL_IDS if m in loaded]
        self.temperatures = temperatures or {}
        self.views = {m: chosen for m, chosen in (views or {}).items() if m in self.model_ids}
        self.specs = {m: (specs or {}).get(m, MODEL_SPECS[m]) for m in self.model_ids}
        first = next(iter(loaded.values()))
        self.image_size = int(first.input.shape[1])
        self.explainers = {m: Explainer(loaded[m], self.specs[m]) for m in self.model_ids}
        self.judge = judge
        self.trunks = {}
        for model_id, spec in self.specs.items():
            if spec.backbone and spec.backbone not in self.trunks:
                self.trunks[spec.backbone] = models.compiled_forward(models.trunk_model(loaded[model_id], spec))
        self.tops = {m: models.compiled_forward(models.top_model(loaded[m], self.specs[m])) for m in self.views}

    def classify(self, photos: np.ndarray, with_views: bool = False) -> Classification:
        """``photos``: (B, size, size, 3) uint8, resized by ``images.to_array``. ``with_views``: each model in
        ``views`` answers with the average of its views' probabilities, scaled by their temperature, as
        ``core.testtime`` measured it; its maps and the open-set verdict stay the photo's."""
        x = tf.convert_to_tensor(photos, tf.float32)
        trunk_outputs = {name: trunk(x) for name, trunk in self.trunks.items()}
        results = {m: calibrated(e(trunk_outputs.get(self.specs[m].backbone, x)), self.temperatures.get(m, 1.0))
                   for m, e in self.explainers.items()}
        taken = {}
        if with_views:
            results, taken = answers_with_views(results, photos, self.views, self.specs, self.trunks, self.tops)
        return Classification(results, None if self.judge is None else self.judge(trunk_outputs, self.model_ids), taken)

    def classify_image(self, image, with_views: bool = False) -> Classification:
        """One validated PIL image (see ``images.read_image``)."""
        return self.classify(images.to_array(image, self.image_size)[None], with_views)


class Predictor:
    """Class probabilities, and the open-set verdict, without maps, run layer by layer: for a command that
    answers a few photos and exits.

    The same layers as ``Classifier``, shared the same way (each backbone's trunk once per photo), but not
    compiled: tracing and optimising a graph per model costs more than it saves over a few photos, and the
    Grad-CAM Jacobians are not needed. The open-set features come from the ImageNet backbone the models were
    built around, so no backbone is built again for them.
    """

    def __init__(self, loaded: LoadedModels, openset_stored: tuple[dict, dict] | None):
        self.model_ids = list(loaded.models)
        self.temperatures = loaded.temperatures
        self.views = loaded.views
        self.specs = {m: loaded.specs.get(m, MODEL_SPECS[m]) for m in self.model_ids}
        self.image_size = int(next(iter(loaded.models.values())).input.shape[1])
        self.trunks, self.tops = {}, {}
        for model_id, spec in self.specs.items():
            model = loaded.models[model_id]
            if spec.backbone and spec.backbone not in self.trunks:
                self.trunks[spec.backbone] = models.trunk_model(model, spec)
            self.tops[model_id] = models.top_model(model, spec)
        self.judge = OpenSetJudge.for_models(loaded, openset_stored, self.image_size)

    @property
    def judges_open_set(self) -> bool:
        """Whether the result set's open-set verdict comes with the answers (else None where it has one)."""
        return self.judge is not None

    def __call__(self, photos: np.ndarray, with_views: bool = False) -> tuple[Classification, dict[str, np.ndarray] | None]:
        """``photos``: (B, size, size, 3) uint8 -> the models' probabilities (no maps) and the open-set flags
        ``{model id or "ensemble": (B,) bool}`` (None without a verdict). ``with_views``: as ``Classifier``."""
        x = tf.convert_to_tensor(photos, tf.float32)
        trunk_outputs = {b: trunk(x, training=False) for b, trunk in self.trunks.items()}
        results = {}
        for model_id, top in self.tops.items():
            probs = top(trunk_outputs.get(self.specs[model_id].backbone, x), training=False)
            results[model_id] = calibrated(Explanation(np.asarray(probs), None, None), self.temperatures.get(model_id, 1.0))
        taken = {}
        if with_views:
            results, taken = answers_with_views(results, photos, self.views, self.specs, self.trunks, self.tops)
        flags = self.judge(trunk_outputs, self.model_ids) if self.judges_open_set else None
        return Classification(results, views=taken), flags

    def classify_image(self, image, with_views: bool = False) -> tuple[Classification, dict[str, bool] | None]:
        """One validated PIL image (see ``images.read_image``)."""
        classification, flags = self(images.to_array(image, self.image_size)[None], with_views)
        return classification, openset.first_photo(flags)


def load_classifier(result_set: artifacts.ResultSet, weights_dir=None) -> tuple[Classifier | None, dict[str, str]]:
    """Every model of the result set that loads, with the set's open-set verdict where they can judge it
    (``OpenSetJudge.for_models``), and the reasons of those that do not load."""
    loaded = load_models(result_set, weights_dir)
    if not loaded.models:
        return None, loaded.problems
    image_size = int(next(iter(loaded.models.values())).input.shape[1])
    judge = OpenSetJudge.for_models(loaded, result_set.openset(), image_size)
    return Classifier(loaded.models, judge, loaded.temperatures, loaded.specs, loaded.views), loaded.problems
