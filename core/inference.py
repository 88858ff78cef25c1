"""Loading a result set's models, and classifying photos with all of them at once.

The six models share work: the frozen trunk of VGG16 (and of ResNet50) is identical in both models of that
backbone, so it runs once per photo for the pair; each model then runs only its own top, with Grad-CAM for
every class and the attention map in the same compiled graph (see ``core.explain``).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from core import artifacts, images, models
from core.explain import Explainer, Explanation
from core.specs import MODEL_IDS, MODEL_SPECS


class ModelUnavailable(RuntimeError):
    """A model of the result set cannot be loaded; the message says why."""


def load_model(result_set: artifacts.ResultSet, model_id: str, weights_dir=None) -> keras.Model:
    """Rebuild a trained model: whole from its .keras file, or ImageNet trunk plus stored top."""
    info = result_set.models[model_id]
    path = result_set.weights_path(model_id)
    if not result_set.has_weights(model_id):
        raise ModelUnavailable(
            f"this result set carries no weights for it ({path.name} was stripped: the set is kept for comparison)"
        )
    try:
        if not info["backbone"]:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        spec = MODEL_SPECS[model_id]
        weights = "random" if info["backbone_weights"] == "random" else models.imagenet_weights(info["backbone"], weights_dir)
        model = models.build_model(model_id, info["num_classes"], info["image_size"], info["dropout"], weights)
        models.trained_part(model, spec).load_weights(path)
    except models.WeightsUnavailable as err:
        raise ModelUnavailable(str(err)) from err
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"{path.name} cannot be loaded: {err}") from err
    expected = info["trunk_signature"]
    actual = models.trunk_signature(model, spec)
    if not np.isclose(actual, expected, rtol=1e-3, atol=1e-4):
        raise ModelUnavailable(
            f"the {info['backbone']} weights found differ from those it was trained with "
            f"(trunk check {actual:.4g} vs {expected:.4g})"
        )
    return model


@dataclass
class Classification:
    """All models' answers for a batch of photos."""

    results: dict[str, Explanation]

    def ensemble(self) -> np.ndarray:
        """Soft voting: the mean of the models' class probabilities, (B, C)."""
        return np.mean([r.probs for r in self.results.values()], axis=0)


class Classifier:
    """Several trained models of one result set, sharing each backbone's trunk, compiled once."""

    def __init__(self, loaded: dict[str, keras.Model]):
        self.model_ids = [m for m in MODEL_IDS if m in loaded]
        first = next(iter(loaded.values()))
        self.image_size = int(first.input.shape[1])
        self.explainers = {m: Explainer(loaded[m], MODEL_SPECS[m]) for m in self.model_ids}
        self.trunks = {}
        for model_id in self.model_ids:
            spec = MODEL_SPECS[model_id]
            if spec.backbone and spec.backbone not in self.trunks:
                trunk = models.trunk_model(loaded[model_id], spec)
                signature = [tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.float32)]
                self.trunks[spec.backbone] = tf.function(lambda x, t=trunk: t(x, training=False), input_signature=signature)

    def classify(self, photos: np.ndarray) -> Classification:
        """``photos``: (B, size, size, 3) uint8, resized by ``images.to_array``."""
        x = tf.convert_to_tensor(photos, tf.float32)
        trunk_outputs = {name: trunk(x) for name, trunk in self.trunks.items()}
        return Classification(
            {m: e(trunk_outputs.get(MODEL_SPECS[m].backbone, x)) for m, e in self.explainers.items()}
        )

    def classify_image(self, image) -> Classification:
        """One validated PIL image (see ``images.read_image``)."""
        return self.classify(images.to_array(image, self.image_size)[None])


def load_classifier(result_set: artifacts.ResultSet, weights_dir=None) -> tuple[Classifier | None, dict[str, str]]:
    """Every model of the result set that loads, and the reasons of those that do not."""
    loaded, problems = {}, dict(result_set.problems)
    for model_id in result_set.models:
        try:
            loaded[model_id] = load_model(result_set, model_id, weights_dir)
        except ModelUnavailable as err:
            problems[model_id] = str(err)
    return (Classifier(loaded) if loaded else None), problems
