"""Fresh random augmentation for the models that train on photos (the CNNs), drawn anew every epoch.

The backbone models train on cached trunk outputs and so can only see a fixed set of views per photo
(``training.make_views``); a CNN reads the photos themselves, and a model learnt from scratch on about a
thousand photos needs every epoch to look different (Krizhevsky et al. 2012; He et al. 2016 for the
crop scales). Applied to a float32 batch of 0-255 pixels, inside the tf.data pipeline; CutMix, where a
recipe asks for it, then mixes the batch's images and their labels.

Test-time augmentation, by contrast, is a fixed set of views of each photo (its mirror image, crops), whose
answers are averaged (``core.testtime`` measures them; the Classify page can use them).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

# Random resized crops (Szegedy et al. 2015, as torchvision's RandomResizedCrop): the crop covers this share
# of the photo's area, with an aspect ratio between 3:4 and 4:3. Photos of produce are mostly a whole item
# or a pile of them, so crops much smaller than a quarter cut away what tells the class.
CROP_AREA = (0.25, 1.0)
CROP_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
# Colour jitter: brightness, contrast and saturation each scaled by a factor in this range. Hue is left
# alone: it is what tells a red from a green pepper, or an orange from a lemon.
JITTER = (0.75, 1.25)


def random_crop_flip_jitter(batch: tf.Tensor, size: int | None = None) -> tf.Tensor:
    """Each image of ``batch`` (float32, N x H x W x 3, 0-255) cropped at random, resized to ``size`` x ``size``
    (default: back to the batch's own size), mirrored half the time and colour-jittered."""
    count = tf.shape(batch)[0]
    size = tf.shape(batch)[1:3] if size is None else (size, size)

    def uniform(low, high, shape=None):
        return tf.random.uniform(shape if shape is not None else [count], low, high)

    area, ratio = uniform(*CROP_AREA), tf.exp(uniform(*CROP_LOG_RATIO))
    width = tf.minimum(tf.sqrt(area * ratio), 1.0)
    height = tf.minimum(tf.sqrt(area / ratio), 1.0)
    top, left = uniform(0.0, 1.0) * (1 - height), uniform(0.0, 1.0) * (1 - width)
    # crop_and_resize mirrors a box whose x1 > x2.
    mirror = uniform(0.0, 1.0) < 0.5
    x1, x2 = tf.where(mirror, left + width, left), tf.where(mirror, left, left + width)
    boxes = tf.stack([top, x1, top + height, x2], axis=1)
    images = tf.image.crop_and_resize(batch, boxes, tf.range(count), size)

    factor_shape = [count, 1, 1, 1]
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * uniform(*JITTER, factor_shape) + mean
    images = images * uniform(*JITTER, factor_shape)
    grey = tf.reduce_mean(images, axis=-1, keepdims=True)
    images = grey + (images - grey) * uniform(*JITTER, factor_shape)
    return tf.clip_by_value(images, 0.0, 255.0)


def cutmix(images: tf.Tensor, labels: tf.Tensor, classes: int, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix (Yun et al. 2019): a box of each image of the batch replaced by the same box of another image of
    the batch, and its target the two labels weighted by the areas they show.

    As in the paper's code, one box per batch: its share of the area drawn from Beta(``alpha``, ``alpha``), its
    centre uniform over the image, clipped at the edges (the targets follow the clipped area). Returns the
    images and the targets (N x ``classes``, each row summing to 1).
    """
    count, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    partner = tf.random.shuffle(tf.range(count))
    first, second = tf.random.gamma([], alpha), tf.random.gamma([], alpha)
    side = tf.sqrt(second / (first + second))  # the box's side over the image's: area share ~ Beta(alpha, alpha)

    def span(size):
        size_f = tf.cast(size, tf.float32)
        centre = tf.random.uniform([], 0.0, size_f)
        low = tf.cast(tf.clip_by_value(centre - side * size_f / 2, 0.0, size_f), tf.int32)
        high = tf.cast(tf.clip_by_value(centre + side * size_f / 2, 0.0, size_f), tf.int32)
        inside = (tf.range(size) >= low) & (tf.range(size) < high)
        return inside, tf.cast(high - low, tf.float32) / size_f

    rows, row_share = span(height)
    columns, column_share = span(width)
    box = (rows[:, None] & columns[None, :])[None, :, :, None]
    mixed = tf.where(box, tf.gather(images, partner), images)
    pasted = row_share * column_share
    own = tf.one_hot(tf.cast(labels, tf.int32), classes)
    return mixed, (1 - pasted) * own + pasted * tf.gather(own, partner)


def mixup(inputs: tf.Tensor, labels: tf.Tensor, classes: int, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup (Zhang et al. 2018): each item of the batch blended with another item of the batch, and its target
    the two labels by the same weights.

    As in the paper's code, one weight per batch, drawn from Beta(``alpha``, ``alpha``). The inputs may be
    photos or a frozen trunk's cached outputs, which mixes the trained part's input (Verma et al. 2019,
    "Manifold Mixup"; the fine-tuned models read cached trunk outputs). Returns the inputs and the targets
    (N x ``classes``, each row summing to 1).
    """
    partner = tf.random.shuffle(tf.range(tf.shape(inputs)[0]))
    first, second = tf.random.gamma([], alpha), tf.random.gamma([], alpha)
    weight = first / (first + second)  # ~ Beta(alpha, alpha)
    mixed = weight * inputs + (1 - weight) * tf.gather(inputs, partner)
    own = tf.one_hot(tf.cast(labels, tf.int32), classes)
    return mixed, weight * own + (1 - weight) * tf.gather(own, partner)


# Crops of this share of the photo's side, resized back to the image size: the produce shown 1.25 times
# larger, as models trained on zoomed-in crops saw it (Touvron et al. 2019), from five places.
TEST_CROP_SIDE = 0.8
TEST_CROPS = {  # name -> (top, left) of the crop, as shares of the photo's side
    "centre crop": ((1 - TEST_CROP_SIDE) / 2, (1 - TEST_CROP_SIDE) / 2),
    "top-left crop": (0.0, 0.0),
    "top-right crop": (0.0, 1 - TEST_CROP_SIDE),
    "bottom-left crop": (1 - TEST_CROP_SIDE, 0.0),
    "bottom-right crop": (1 - TEST_CROP_SIDE, 1 - TEST_CROP_SIDE),
}
# The sets of views whose probabilities are averaged; the first, the photo alone, is what the others are
# measured against. The five crops are Krizhevsky et al.'s (2012) without their mirrors.
TEST_VIEW_SETS = {
    "photo": ("photo",),
    "photo + mirror": ("photo", "mirror"),
    "five crops": tuple(TEST_CROPS),
    "photo + mirror + five crops": ("photo", "mirror", *TEST_CROPS),
}


def test_time_view(photos: np.ndarray, name: str) -> np.ndarray:
    """One view of each photo (N, H, W, 3): the photo itself, its mirror image or one of ``TEST_CROPS``."""
    if name == "photo":
        return photos
    if name == "mirror":
        return np.ascontiguousarray(photos[:, :, ::-1])
    top, left = TEST_CROPS[name]
    box = np.array([[top, left, top + TEST_CROP_SIDE, left + TEST_CROP_SIDE]], np.float32)
    return tf.image.crop_and_resize(photos.astype(np.float32), np.tile(box, (len(photos), 1)), np.arange(len(photos)),
                                    photos.shape[1:3]).numpy()
