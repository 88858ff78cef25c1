"""Where a model looked: Grad-CAM for every class and the native attention map, in one compiled graph.

Follows the keras-io Grad-CAM example (gradient of the class score with respect to the last convolutional
map, averaged per channel, weighting the map), with the class's log-probability as its score (see
``GRADCAM_TARGET``), computed for all classes at once with a batch Jacobian:
the part of each model above its last convolution is small, so all classes cost little more than one, and
a different target class later is a lookup instead of another pass through the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from core import models
from core.specs import ModelSpec


# What each map is the gradient of. Not the class's logit, as in the Grad-CAM paper: the ResNet50 models
# predict half (fine-tuned) and nearly all (+ attention) of the test photos' classes with a negative logit (the
# class wins by being least suppressed), and a logit's map is then negative everywhere, so zero after the ReLU:
# flat for 34 and 60 of the 309 test photos of `artifacts/`. The log-probability, z_c - logsumexp(z), weighs
# the class against the others as the model does (for a linear top over pooled maps its sum over positions is
# z_c minus the probability-weighted mean logit, positive for the predicted class): 0 and 5 flat maps.
GRADCAM_TARGET = "log-probability"


class _OneTracePerExplainer(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about ``Explainer._explain``.

    TensorFlow counts traces per code object, which every Explainer's function shares: each model traced once
    (a fixed input signature) adds up to "5 out of the last 9 calls triggered retracing" once a run explains
    five models. A model traced more than once still shows in ``Explainer.traces``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "Explainer._explain" in message)


tf.get_logger().addFilter(_OneTracePerExplainer())


@dataclass
class Explanation:
    """A batch of predictions with their maps, all at the model's feature-map resolution."""

    probs: np.ndarray  # (B, C)
    # (B, C, h, w) in [0, 1], one map per class; None: classified without maps. An Explainer made with
    # ``signed=True`` gives the maps before Grad-CAM's ReLU and scaling instead (any real values).
    gradcam: np.ndarray | None
    attention: np.ndarray | None  # (B, h, w) in [0, 1]; None for models without attention


class Explainer:
    """One model, from its trunk output (the raw image for the CNNs) to probabilities and maps."""

    def __init__(self, model: keras.Model, spec: ModelSpec, signed: bool = False):
        self.spec, self.signed = spec, signed
        start = model.input if spec.trunk_output is None else model.get_layer(spec.trunk_output).output
        conv = model.get_layer(spec.last_conv).output
        logits = model.get_layer(models.CLASSIFIER).output
        attention = model.get_layer("attention").output[1] if spec.attention else None
        self.to_conv = keras.Model(start, conv)
        # Named outputs: a one-output Keras model returns a bare tensor, not a one-element list.
        self.from_conv = keras.Model(conv, {"logits": logits, **({"attention": attention} if spec.attention else {})})
        self.input_shape = tuple(start.shape[1:])
        signature = [tf.TensorSpec((None, *self.input_shape), tf.float32)]
        self._compiled = tf.function(self._explain, input_signature=signature)

    def _explain(self, inputs):
        conv = self.to_conv(inputs, training=False)
        with tf.GradientTape() as tape:
            tape.watch(conv)
            outputs = self.from_conv(conv, training=False)
            logits = outputs["logits"]
            scores = tf.nn.log_softmax(logits)  # GRADCAM_TARGET
        jacobian = tape.batch_jacobian(scores, conv)  # (B, C, h, w, k)
        channel_weights = tf.reduce_mean(jacobian, axis=(2, 3))  # (B, C, k)
        cams = tf.einsum("bhwk,bck->bchw", conv, channel_weights)
        if not self.signed:
            cams = tf.nn.relu(cams)
            cams = cams / (tf.reduce_max(cams, axis=(2, 3), keepdims=True) + 1e-12)
        probs = tf.nn.softmax(logits)
        if self.spec.attention:
            attention = outputs["attention"]
            attention = attention / (tf.reduce_max(attention, axis=(1, 2), keepdims=True) + 1e-12)
            return probs, cams, attention
        return probs, cams

    @property
    def traces(self) -> int:
        """How many graphs this Explainer has traced: 1 once it has run (its input signature is fixed)."""
        return self._compiled.experimental_get_tracing_count()

    def __call__(self, inputs) -> Explanation:
        result = self._compiled(tf.convert_to_tensor(inputs, tf.float32))
        attention = result[2].numpy() if self.spec.attention else None
        return Explanation(result[0].numpy(), result[1].numpy(), attention)

    def batched(self, inputs: np.ndarray, batch_size: int = 32) -> Explanation:
        """``inputs``: an array or an on-disk cache, converted to float32 one batch at a time."""
        parts = [self(np.asarray(inputs[i : i + batch_size], np.float32)) for i in range(0, len(inputs), batch_size)]
        return Explanation(
            np.concatenate([p.probs for p in parts]),
            np.concatenate([p.gradcam for p in parts]),
            np.concatenate([p.attention for p in parts]) if self.spec.attention else None,
        )


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a [0, 1] map to (width, height) with bilinear interpolation."""
    image = Image.fromarray(np.asarray(heatmap, np.float32), mode="F")
    return np.clip(np.asarray(image.resize(size, Image.Resampling.BILINEAR)), 0.0, 1.0)


def overlay(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.45, colormap: str = "jet") -> Image.Image:
    """The photo with the heatmap drawn over it in colour."""
    import matplotlib  # here, not at the top: the command line never draws, and pays for no plotting import

    heat = upsample(heatmap, image.size)
    colours = (matplotlib.colormaps[colormap](heat)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(colours), float(opacity))
