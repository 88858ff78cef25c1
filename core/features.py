"""Pooled features of the frozen ImageNet backbones, the ground on which the open-set verdict stands.

The fine-tuned models' own layers learned only the result set's classes, so a photo of something else can
land confidently on one of them; the untouched ImageNet backbones (VGG16, ResNet50 with their ImageNet
weights) describe any photo, and distance in their pooled feature space says how unlike the known photos a
new one is (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors").
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np

from core import images, models
from core.artifacts import write_npz
from core.openset import normalise

FEATURE_BACKBONES = ("vgg16", "resnet50")


class FeatureExtractor:
    """Global-average-pooled last feature map of each frozen ImageNet backbone, L2-normalised per backbone."""

    def __init__(self, image_size: int, weights_dir=None, backbones=FEATURE_BACKBONES):
        self.image_size = int(image_size)
        self.backbones = tuple(backbones)
        self.nets = {}
        for name in self.backbones:
            inputs = keras.Input((self.image_size, self.image_size, 3))
            x = models.CaffePreprocess()(inputs)
            net = models._APPLICATIONS[name](
                include_top=False, weights=models.imagenet_weights(name, weights_dir), input_tensor=x, pooling="avg"
            )
            self.nets[name] = keras.Model(inputs, net.output)

    def __call__(self, photos: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """``photos``: (B, size, size, 3) uint8 -> {backbone: (B, D) float32, unit length}."""
        out = {}
        for name, net in self.nets.items():
            parts = [
                np.asarray(net(photos[i : i + batch_size].astype(np.float32), training=False))
                for i in range(0, len(photos), batch_size)
            ]
            out[name] = normalise(np.concatenate(parts) if parts else np.zeros((0, net.output.shape[-1])))
        return out


def dataset_features(
    extractor: FeatureExtractor, data_dir, files: list[str], cache_dir=None, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Features of ``files`` (paths relative to ``data_dir``), cached as a .npz keyed by the file list."""
    key = hashlib.sha256(("\n".join(files) + f"|{extractor.image_size}|{extractor.backbones}").encode()).hexdigest()
    cache = Path(cache_dir) / f"features-{key[:16]}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as stored:
            return {name: stored[name] for name in extractor.backbones}
    photos = np.stack([images.to_array(images.read_image(Path(data_dir) / f), extractor.image_size) for f in files])
    feats = extractor(photos, batch_size)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_npz(cache, **feats)
    return feats
