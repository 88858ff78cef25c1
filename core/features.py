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

from core import images, models, openset
from core.artifacts import write_npz
from core.openset import normalise
from core.specs import BACKBONES

FEATURE_BACKBONES = ("vgg16", "resnet50")


class FeatureExtractor:
    """Global-average-pooled last feature map of each frozen ImageNet backbone, L2-normalised per backbone."""

    def __init__(self, image_size: int, weights_dir=None, backbones=FEATURE_BACKBONES):
        self.image_size = int(image_size)
        self.backbones = tuple(backbones)
        self.nets = {}
        for name in self.backbones:
            inputs = keras.Input((self.image_size, self.image_size, 3))
            net = models.imagenet_backbone(BACKBONES[name], inputs, models.imagenet_weights(name, weights_dir))
            # keras.applications' pooling="avg": the global average of the last feature map.
            self.nets[name] = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(net.output))

    def __call__(self, photos: np.ndarray, batch_size: int = 32, backbones=None) -> dict[str, np.ndarray]:
        """``photos``: (B, size, size, 3) uint8 -> {backbone: (B, D) float32, unit length}."""
        out = {}
        for name in backbones or self.backbones:
            net = self.nets[name]
            forward = models.compiled_forward(net)
            parts = [
                np.asarray(forward(photos[i : i + batch_size].astype(np.float32)))
                for i in range(0, len(photos), batch_size)
            ]
            out[name] = normalise(np.concatenate(parts) if parts else np.zeros((0, net.output.shape[-1])))
        return out


def dataset_features(
    extractor: FeatureExtractor, data_dir, files: list[str], cache_dir=None, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Features of ``files`` (paths relative to ``data_dir``), each backbone cached as a .npz keyed by the list."""
    key = hashlib.sha256(("\n".join(files) + f"|{extractor.image_size}").encode()).hexdigest()[:16]
    caches = {name: Path(cache_dir) / f"{name}-{key}.npz" for name in extractor.backbones} if cache_dir else {}
    out = {}
    for name, cache in caches.items():
        if cache.exists():
            with np.load(cache) as stored:
                out[name] = stored["features"]
    missing = [name for name in extractor.backbones if name not in out]
    if missing:
        photos = np.stack([images.to_array(images.read_image(Path(data_dir) / f), extractor.image_size) for f in files])
        for name in missing:
            out[name] = extractor(photos, batch_size, backbones=(name,))[name]
            if name in caches:
                caches[name].parent.mkdir(parents=True, exist_ok=True)
                write_npz(caches[name], features=out[name])
    return out


def split_features(result_set, data_dir=None, weights_dir=None, cache_dir=None, backbones=FEATURE_BACKBONES):
    """Features and class indices of the result set's recorded train/validation/test photos."""
    data_dir = result_set.data_root(data_dir)
    plan = result_set.dataset()
    index = {c: i for i, c in enumerate(plan["class_names"])}
    splits = ("train", "validation", "test")
    files = [f for s in splits for f, _ in plan["files"][s]]
    extractor = FeatureExtractor(result_set.config["image_size"], weights_dir, backbones)
    everything = dataset_features(extractor, data_dir, files, cache_dir)
    features, labels, start = {}, {}, 0
    for s in splits:
        n = len(plan["files"][s])
        features[s] = {b: f[start : start + n] for b, f in everything.items()}
        labels[s] = np.array([index[c] for _, c in plan["files"][s]])
        start += n
    return features, labels


def one_blas_thread():
    """A context in which NumPy's and scikit-learn's BLAS run one thread, for fitting on these features: the
    matrices are small, and OpenBLAS's threads spin waiting for each other on a busy machine (the open-set
    verdict beside a training run on 2 cores: 41 s with one thread, over 6 min with two)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class OpenSetVerdict:
    """The stored open-set verdict of a result set, with the frozen backbones it needs, ready for photos."""

    def __init__(self, result_set, weights_dir=None):
        stored = result_set.openset()
        if stored is None:
            raise FileNotFoundError("this result set has no open-set verdict (scripts/evaluate.py --openset)")
        self.info, arrays = stored
        self.detectors = openset.from_stored(self.info, arrays)
        backbones = self.info["detectors"][openset.ENSEMBLE]["backbones"]
        self.extractor = FeatureExtractor(self.info["image_size"], weights_dir, backbones)

    def __call__(self, photos: np.ndarray, model_ids) -> dict[str, np.ndarray]:
        """``photos``: (B, size, size, 3) uint8 -> ``{model id or "ensemble": (B,) bool}``, True = unknown."""
        return openset.verdicts(self.info, self.detectors, self.extractor(photos), model_ids)

    def for_image(self, image, model_ids) -> dict[str, bool]:
        """One validated PIL image -> ``{model id or "ensemble": unknown?}``."""
        photo = images.to_array(image, self.info["image_size"])[None]
        return openset.first_photo(self(photo, model_ids))


def load_verdict(result_set, weights_dir=None) -> OpenSetVerdict | None:
    """The result set's open-set verdict, or None where it has none or the backbone weights are missing."""
    try:
        return OpenSetVerdict(result_set, weights_dir)
    except (FileNotFoundError, models.WeightsUnavailable):
        return None
