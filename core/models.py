"""The six models of the study, defined in one place.

Every model is one flat functional graph from raw RGB pixels (0-255) to class probabilities, with its
preprocessing inside the graph, so whoever loads it cannot feed it differently from how it was trained.
The backbone layers sit directly in the graph (no nested ``keras.applications`` sub-model), so Grad-CAM
and the trunk cache can cut the graph at any named layer.

Each model is two parts around a named boundary:

* the **trunk**: layers that never train (the ImageNet backbone up to ``ModelSpec.trunk_output``: the
  backbone's usual cut, or an earlier layer where a recipe fine-tunes deeper); its output is computed once
  per image and cached, in training and in the app;
* the **top**: the rest, trained on the cached trunk output. For the fine-tuned models this is the
  backbone above the cut (its last block, by default) plus the head; for the attention models the whole
  backbone is frozen and only the attention head trains. The plain CNNs have no trunk.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from core.specs import BACKBONES, MODEL_SPECS, Backbone, ModelSpec

CNN_FILTERS = (16, 32, 64, 128, 256)
CLASSIFIER = "logits"  # the last Dense layer of every model: what a linear probe would fit
ATTENTION_UNITS = 128
_APPLICATIONS = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}


@keras.saving.register_keras_serializable(package="fruitveg")
class CaffePreprocess(layers.Layer):
    """ImageNet 'caffe' preprocessing (RGB to BGR, ImageNet mean subtracted) as a graph layer."""

    def call(self, inputs):
        return keras.applications.imagenet_utils.preprocess_input(inputs, mode="caffe")


@keras.saving.register_keras_serializable(package="fruitveg")
class FusedBatchNormalization(layers.BatchNormalization):
    """``BatchNormalization`` computed by TensorFlow's fused kernel: same weights, same statistics.

    Keras 3's layer upcasts a bfloat16 input to float32 and normalises it with separate reductions and
    element-wise operations, forward and backward; at the CNNs' full-resolution maps that took more than
    their convolutions (README: Time for one seed). The fused kernel reads the bfloat16 input once and keeps
    its statistics in float32. The moving variance is updated with the biased batch variance, as Keras does
    (the kernel returns the unbiased one). Falls back to Keras' computation where the kernel does not apply.
    """

    def call(self, inputs, training=None, mask=None):
        channels_last = self.axis in (-1, len(inputs.shape) - 1)
        if mask is not None or self.renorm or len(inputs.shape) != 4 or not channels_last:
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones(channels)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros(channels)
        if training and self.trainable:
            outputs, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
            count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
            variance = unbiased * (count - 1) / count
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, self.moving_mean, self.moving_variance, epsilon=self.epsilon, is_training=False)
        return tf.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="fruitveg")
class SpatialAttention(layers.Layer):
    """Soft attention pooling over the positions of a feature map.

    A 1x1 convolution scores every position, a softmax over all positions turns the scores into the
    attention map (it sums to 1), and the output is the map-weighted sum of the feature vectors. The layer
    returns ``(pooled, attention_map)`` so that the map can be read off the graph and shown on the photo.
    """

    def __init__(self, units: int = ATTENTION_UNITS, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = layers.Conv2D(units, 1, activation="tanh", name="hidden")
        self.score = layers.Conv2D(1, 1, name="score")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.score.build((*input_shape[:-1], self.units))

    def call(self, features):
        scores = self.score(self.hidden(features))[..., 0]  # (batch, h, w)
        shape = ops.shape(scores)
        weights = ops.softmax(ops.reshape(scores, (shape[0], -1)), axis=-1)
        attention = ops.reshape(weights, shape)
        pooled = ops.einsum("bhw,bhwc->bc", attention, features)
        return pooled, attention

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1]), tuple(input_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class WeightsUnavailable(RuntimeError):
    """ImageNet weights could not be obtained; the message says how to provide them."""


def imagenet_weights(backbone: str, weights_dir: str | os.PathLike | None) -> str:
    """Where to load a backbone's ImageNet weights from: a local file, or Keras' own download.

    ``weights_dir`` (or the environment variable FRUITVEG_WEIGHTS_DIR) names a folder holding
    ``vgg16_notop.weights.h5`` / ``resnet50_notop.weights.h5``; without one, Keras downloads them.
    """
    weights_dir = weights_dir or os.environ.get("FRUITVEG_WEIGHTS_DIR")
    if not weights_dir:
        return "imagenet"
    path = Path(weights_dir) / BACKBONES[backbone].weights_file
    if not path.is_file():
        raise WeightsUnavailable(f"{path} not found: the weights folder must hold {BACKBONES[backbone].weights_file}")
    return str(path)


def build_model(
    model_id: str,
    num_classes: int,
    image_size: int,
    dropout: float = 0.3,
    weights: str | None = "imagenet",
    frozen_through: str = "",
) -> keras.Model:
    """Build one of the six models, untrained above its frozen trunk.

    ``weights`` is for the backbone: "imagenet" (Keras' download), a ``.weights.h5`` path, or "random"
    (tests only: seeded, so that a model trained on it can be rebuilt exactly). ``frozen_through``: the last
    frozen backbone layer, where not the usual one (``ModelSpec.cut_at``).
    """
    spec = MODEL_SPECS[model_id].cut_at(frozen_through)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    if spec.backbone:
        features = _backbone_features(spec, inputs, weights)
    else:
        features = _cnn_features(inputs)
    return keras.Model(inputs, _head(features, spec, num_classes, dropout), name=model_id)


def _head(features, spec: ModelSpec, num_classes: int, dropout: float):
    """Pooling (attention or average), dropout and the classifier, on the last feature map."""
    if spec.attention:
        pooled, _ = SpatialAttention(name="attention")(features)
    else:
        pooled = layers.GlobalAveragePooling2D(name="pool")(features)
    x = layers.Dropout(dropout, name="dropout")(pooled)
    # Zero-initialised so that every model starts at uniform probabilities: backbone features are large,
    # and a random head on them starts confidently wrong, which the small learning rates of the study
    # (1e-5 for VGG16) take many epochs to undo.
    logits = layers.Dense(num_classes, kernel_initializer="zeros", name=CLASSIFIER)(x)
    return layers.Activation("softmax", dtype="float32", name="probs")(logits)


def build_backbone_models(
    dropouts: dict[str, float], num_classes: int, image_size: int, weights: str | None = "imagenet",
    frozen_through: str = "",
) -> tuple[dict[str, keras.Model], keras.Model]:
    """The models of one backbone (``dropouts``: model id -> dropout rate) around a single ImageNet build,
    their trunk ending at ``frozen_through`` (where not at the backbone's usual cut).

    For loading trained weights: each model has the graph, layers and names ``build_model`` gives it (so
    ``trained_part`` reads its stored weights), but they share layers. The frozen trunk is one for all; the
    frozen block above it, with its ImageNet weights, serves the attention model and the pooled ImageNet
    features (``keras.applications``' ``pooling="avg"``, what the open-set verdict reads); the fine-tuned
    model gets a copy of that block for its own weights. One backbone built and one weights file read,
    instead of one per model and another for the features.

    Returns the models and a model from the trunk output to the pooled ImageNet features.
    """
    backbone = BACKBONES[MODEL_SPECS[next(iter(dropouts))].backbone]
    inputs = keras.Input((image_size, image_size, 3), name="image")
    net = imagenet_backbone(backbone, inputs, weights)
    trunk_output = net.get_layer(frozen_through or backbone.trunk_output).output
    imagenet_map = net.get_layer(backbone.last_conv).output
    built = {}
    for model_id, dropout in dropouts.items():
        spec = MODEL_SPECS[model_id]
        if spec.backbone != backbone.name:
            raise ValueError(f"{model_id} is not a {backbone.title} model")
        features = _copy_between(trunk_output, imagenet_map) if spec.finetuned else imagenet_map
        built[model_id] = keras.Model(inputs, _head(features, spec, num_classes, dropout), name=model_id)
    return built, keras.Model(trunk_output, layers.GlobalAveragePooling2D()(net.output))


def _copy_between(start, end):
    """``end`` computed again from ``start`` by new layers of the same configuration (names included).

    ``clone_model`` computes exactly that, but hands it back wrapped in a model of its own, detached from
    ``start``; the tensors its layers produce on ``start`` are kept here as they are made. The last one is
    the output: layers are called in order of depth and the output alone is at depth 0.
    """
    made = []

    def call(layer, *args, **kwargs):
        made.append(layer(*args, **kwargs))
        return made[-1]

    keras.models.clone_model(keras.Model(start, end), input_tensors=start, call_function=call)
    return made[-1]


def _cnn_features(inputs):
    """A small VGG-style CNN: conv-BN-ReLU blocks; the first convolution has stride 2, the next blocks but the
    last are followed by 2x2 max pooling.

    Few filters and a strided first convolution keep an epoch affordable on a CPU (full-resolution
    BatchNorm and pooling cost more than the convolutions there); the last map has the same resolution
    (image size / 16) as VGG16's, so the heatmaps of all models are comparably coarse.
    """
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for block, filters in enumerate(CNN_FILTERS, start=1):
        last = block == len(CNN_FILTERS)
        stride = 2 if block == 1 else 1
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"conv{block}")(x)
        x = layers.BatchNormalization(name=f"bn{block}")(x)
        x = layers.ReLU(name="last_conv" if last else f"relu{block}")(x)
        if 1 < block < len(CNN_FILTERS):
            x = layers.MaxPooling2D(name=f"pool{block}")(x)
    return x


def _backbone_features(spec: ModelSpec, inputs, weights):
    backbone = BACKBONES[spec.backbone]
    net = imagenet_backbone(backbone, inputs, weights)
    trainable_from = net.get_layer(spec.trunk_output)
    below = True
    for layer in net.layers:
        # The trunk never trains; the fine-tuned models train the block above it, the attention models don't.
        layer.trainable = not below and spec.finetuned and not isinstance(layer, layers.BatchNormalization)
        if layer is trainable_from:
            below = False
    return net.get_layer(backbone.last_conv).output


def imagenet_backbone(backbone: Backbone, inputs, weights) -> keras.Model:
    """The ``keras.applications`` backbone (no top) on the preprocessed ``inputs``, with ``weights``
    ("imagenet", a ``.weights.h5`` path, or "random"); ``WeightsUnavailable`` where the download fails."""
    x = CaffePreprocess(name="preprocess")(inputs)
    try:
        net = _APPLICATIONS[backbone.name](
            include_top=False, weights=None if weights == "random" else weights, input_tensor=x
        )
    except Exception as err:
        if weights == "imagenet":
            raise WeightsUnavailable(
                f"could not download the ImageNet weights of {backbone.title} ({type(err).__name__}); offline, "
                f"pass --weights-dir DIR or set FRUITVEG_WEIGHTS_DIR to a folder with {backbone.weights_file}"
            ) from err
        raise
    if weights == "random":
        _seeded_random_weights(net)
    return net


def _seeded_random_weights(net: keras.Model) -> None:
    """He-normal kernels from a fixed seed; Keras' own initialisers draw from the global seed instead."""
    rng = np.random.default_rng(0)
    for layer in net.layers:
        values = [
            rng.normal(0, np.sqrt(2 / np.prod(w.shape[:-1])), w.shape).astype("float32") if len(w.shape) > 1
            else keras.ops.convert_to_numpy(w)
            for w in layer.weights
        ]
        if values:
            layer.set_weights(values)


def with_compute_dtype(model: keras.Model, policy: str, float32_output: bool = False,
                       any_image_size: bool = False, fused_batch_norm: bool = False) -> keras.Model:
    """A copy of ``model`` computing in another dtype policy (e.g. "mixed_bfloat16"), with the same weights.

    The variables stay float32; only the arithmetic changes, so outputs differ by rounding. With
    ``float32_output`` the last layer (the softmax of a model being trained) stays float32, as Keras'
    mixed-precision guide advises for the loss's sake. With ``any_image_size`` the copy takes images of any
    height and width (a convolutional model with global pooling computes the same layers on them). With
    ``fused_batch_norm`` its trained BatchNormalization layers compute with TensorFlow's fused kernel
    (``FusedBatchNormalization``); frozen ones, which compute little, stay as they are.
    """
    last = model.layers[-1]

    def clone(layer):
        dtype = "float32" if float32_output and layer is last else policy
        kind = layer.__class__
        if fused_batch_norm and kind is layers.BatchNormalization and layer.trainable:
            kind = FusedBatchNormalization
        return kind.from_config({**layer.get_config(), "dtype": dtype})

    inputs = keras.Input((None, None, model.input_shape[-1]), name=model.input.name) if any_image_size else None
    copy = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def compiled_forward(model: keras.Model):
    """``model``'s inference as one traced TensorFlow graph, for float32 batches of any size (one per model,
    traced on its first call, and kept as long as the model).

    Called eagerly, a functional Keras model dispatches layer by layer and keeps every layer's output until
    the call returns: ResNet50's trunk over a batch of 64 photos at 224 px then peaks at 5.5 GB, which
    TensorFlow's CPU allocator keeps for the rest of the process. Traced, each intermediate is freed as
    soon as its last consumer has run: 1.3 GB for the same batch, and 2-3 times faster (README: Memory).
    """
    forward = model.__dict__.get(_FORWARD_ATTRIBUTE)
    if forward is None:
        signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)]
        forward = tf.function(lambda x: model(x, training=False), input_signature=signature)
        # Set past Keras' attribute tracking: the function is no part of the model's state. The model and its
        # function refer to each other, a cycle the garbage collector frees with the model.
        object.__setattr__(model, _FORWARD_ATTRIBUTE, forward)
    return forward


_FORWARD_ATTRIBUTE = "_fruitveg_compiled_forward"


def trunk_signature(model: keras.Model, spec: ModelSpec) -> float:
    """A number that changes when the frozen trunk's weights change: mean trunk output on a fixed image.

    Stored with each backbone model and checked on loading, because the trunk is rebuilt from ImageNet
    weights that the result set does not hold.
    """
    size = model.input.shape[1]
    ramp = np.linspace(0, 255, size * size * 3, dtype="float32").reshape(1, size, size, 3)
    return float(np.mean(trunk_model(model, spec)(ramp, training=False)))


def top_model(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """The part of ``model`` above its trunk (the whole model for the CNNs), sharing its layers."""
    if spec.trunk_output is None:
        return model
    return keras.Model(model.get_layer(spec.trunk_output).output, model.output, name=f"{spec.id}_top")


def trunk_model(model: keras.Model, spec: ModelSpec) -> keras.Model | None:
    """Raw pixels to the cache boundary (None for the CNNs, which have no frozen trunk)."""
    if spec.trunk_output is None:
        return None
    return keras.Model(model.input, model.get_layer(spec.trunk_output).output, name=f"{spec.backbone}_trunk")


def frozen_features_model(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """For an attention model: trunk output to the (frozen) last conv map, the input of its head."""
    return keras.Model(model.get_layer(spec.trunk_output).output, model.get_layer(spec.last_conv).output)


def head_model(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """For an attention model: the trainable head, from the frozen last conv map to the probabilities."""
    return keras.Model(model.get_layer(spec.last_conv).output, model.output, name=f"{spec.id}_head")


def trained_part(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """The layers training changed, which is all a result set stores of a backbone model."""
    if spec.backbone is None:
        return model
    return head_model(model, spec) if spec.attention else top_model(model, spec)
