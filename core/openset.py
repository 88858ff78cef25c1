"""The open-set verdict: "none of the N classes this result set knows" for a photo unlike every known photo.

Method: k-nearest-neighbour cosine distance (Sun et al. 2022) in the pooled features of the frozen ImageNet
backbones (``core.features``), projected by PCA fitted on the training photos and L2-normalised again. The
score of a photo is its distance to the k-th nearest training photo; the threshold keeps ``KEEP`` of the
validation photos (data no model trained on). Class probabilities are not used: the fine-tuned tops learned
only the known classes and give confident answers to photos of other produce (issue 14).

Each VGG16 model reads the VGG16 features, each ResNet50 model the ResNet50 features; the two CNN models
have no ImageNet trunk and, like the ensemble, read both backbones' features side by side.

Measured by an open-set protocol without outside data (``held_out_protocol``): some classes are held out,
the detector is fitted on the other classes' training photos with its threshold on their validation photos,
and the held-out classes' photos must be flagged as unknown while known-class test photos are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

K = 10
KEEP = 0.95
PCA_DIMS = 128
ENSEMBLE = "ensemble"
MODEL_BACKBONE = {"vgg16": "vgg16", "vgg16_attention": "vgg16", "resnet50": "resnet50", "resnet50_attention": "resnet50"}


def detector_backbones(backbones) -> dict[str, tuple[str, ...]]:
    """Which features each detector reads: each backbone alone, and the ensemble all of them side by side."""
    return {**{b: (b,) for b in backbones}, ENSEMBLE: tuple(backbones)}


def model_detector(model_id: str, detectors) -> str:
    """A model's own backbone's detector; the CNN models (no ImageNet trunk) use the ensemble's."""
    backbone = MODEL_BACKBONE.get(model_id)
    return backbone if backbone in detectors else ENSEMBLE


def normalise(features: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (cosine similarity becomes a dot product)."""
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def joined(features: dict[str, np.ndarray], backbones) -> np.ndarray:
    """Each backbone's unit-length features side by side (each backbone weighs the same)."""
    return np.concatenate([normalise(features[b]) for b in backbones], axis=1)


@dataclass
class KnnDetector:
    """Reference photos in a PCA space; a photo's score is its cosine distance to the k-th nearest one."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (D, P)
    reference: np.ndarray  # (N, P), unit length
    k: int
    threshold: float = np.inf

    @classmethod
    def fit(cls, train: np.ndarray, k: int = K, dims: int = PCA_DIMS) -> "KnnDetector":
        mean = train.mean(axis=0)
        # PCA keeps the stored reference small (< 1 MB) and drops directions of noise.
        _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
        components = vt[: min(dims, len(vt))].T.astype(np.float32)
        detector = cls(mean.astype(np.float32), components, np.zeros((0, components.shape[1]), np.float32), k)
        detector.reference = detector.project(train)
        return detector

    def project(self, features: np.ndarray) -> np.ndarray:
        return normalise((np.asarray(features, np.float32) - self.mean) @ self.components)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Higher = less like the reference photos."""
        similarity = self.project(features) @ self.reference.T
        k = min(self.k, self.reference.shape[0])
        kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
        return 1.0 - kth

    def set_threshold(self, validation: np.ndarray, keep: float = KEEP) -> float:
        self.threshold = float(np.quantile(self.scores(validation), keep))
        return self.threshold

    def unknown(self, features: np.ndarray) -> np.ndarray:
        return self.scores(features) > self.threshold


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Probability that an unknown photo scores above a known one (ties count half)."""
    known, unknown = np.asarray(known_scores), np.asarray(unknown_scores)
    greater = (unknown[:, None] > known[None, :]).mean()
    ties = (unknown[:, None] == known[None, :]).mean()
    return float(greater + 0.5 * ties)


def fit_detectors(features: dict[str, dict[str, np.ndarray]], k: int = K, keep: float = KEEP) -> dict[str, KnnDetector]:
    """``features[split][backbone]``: fit on train, threshold on validation, one per ``detector_backbones``."""
    detectors = {}
    for name, backbones in detector_backbones(list(features["train"])).items():
        detector = KnnDetector.fit(joined(features["train"], backbones), k)
        detector.set_threshold(joined(features["validation"], backbones), keep)
        detectors[name] = detector
    return detectors


def held_out_folds(num_classes: int, folds: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Disjoint groups of class indices, each held out once."""
    order = np.random.default_rng(seed).permutation(num_classes)
    return [np.sort(part) for part in np.array_split(order, folds)]


def held_out_protocol(
    features: dict[str, dict[str, np.ndarray]],
    labels: dict[str, np.ndarray],
    num_classes: int,
    folds: int = 5,
    seed: int = 0,
    k: int = K,
    keep: float = KEEP,
) -> dict[str, dict]:
    """Per detector: AUROC, unknown photos accepted and known test photos kept, pooled over folds.

    In each fold the held-out classes' photos of every split are unknown; the detector sees only the other
    classes' training photos and sets its threshold on their validation photos.
    """
    chosen = detector_backbones(list(features["train"]))
    pooled = {name: {"known": [], "unknown": [], "known_kept": [], "unknown_accepted": []} for name in chosen}
    for held in held_out_folds(num_classes, folds, seed):
        is_known = {s: ~np.isin(labels[s], held) for s in labels}
        part = {s: {b: f[is_known[s]] for b, f in features[s].items()} for s in ("train", "validation", "test")}
        unknown = {b: np.concatenate([features[s][b][~is_known[s]] for s in labels]) for b in features["test"]}
        for name, detector in fit_detectors(part, k, keep).items():
            backbones = chosen[name]
            known_scores = detector.scores(joined(part["test"], backbones))
            unknown_scores = detector.scores(joined(unknown, backbones))
            pooled[name]["known"].append(known_scores)
            pooled[name]["unknown"].append(unknown_scores)
            pooled[name]["known_kept"].append(known_scores <= detector.threshold)
            pooled[name]["unknown_accepted"].append(unknown_scores <= detector.threshold)
    report = {}
    for name, p in pooled.items():
        report[name] = {
            # AUROC per fold then averaged: each fold has its own reference set and scale.
            "auroc": float(np.mean([auroc(kn, un) for kn, un in zip(p["known"], p["unknown"])])),
            "known_test_kept": float(np.concatenate(p["known_kept"]).mean()),
            "unknown_accepted": float(np.concatenate(p["unknown_accepted"]).mean()),
            "known_test_photos": int(sum(len(x) for x in p["known"])),
            "unknown_photos": int(sum(len(x) for x in p["unknown"])),
        }
    return report


def to_stored(detectors: dict[str, KnnDetector], protocol: dict, image_size: int) -> tuple[dict, dict[str, np.ndarray]]:
    """The verdict as the result set stores it (``artifacts.write_openset``): settings JSON and float16 arrays."""
    backbones = detector_backbones([n for n in detectors if n != ENSEMBLE])
    info = {
        "method": f"kNN cosine distance (k={K}) on PCA-{PCA_DIMS} frozen ImageNet pooled features",
        "keep": KEEP,
        "image_size": int(image_size),
        "detectors": {
            name: {"backbones": list(backbones[name]), "k": d.k, "threshold": d.threshold} for name, d in detectors.items()
        },
        "held_out_protocol": protocol,
    }
    arrays = {}
    for name, d in detectors.items():
        arrays |= {f"{name}.mean": d.mean, f"{name}.components": d.components.astype(np.float16)}
        arrays[f"{name}.reference"] = d.reference.astype(np.float16)
    return info, arrays


def from_stored(info: dict, arrays: dict[str, np.ndarray]) -> dict[str, KnnDetector]:
    return {
        name: KnnDetector(
            arrays[f"{name}.mean"].astype(np.float32),
            arrays[f"{name}.components"].astype(np.float32),
            arrays[f"{name}.reference"].astype(np.float32),
            int(d["k"]),
            float(d["threshold"]),
        )
        for name, d in info["detectors"].items()
    }


def verdicts(info: dict, detectors: dict[str, KnnDetector], features: dict[str, np.ndarray], model_ids) -> dict[str, np.ndarray]:
    """``{model id or ENSEMBLE: (B,) bool}``, True where the photo is unlike every class the set knows."""
    flags = {
        name: d.unknown(joined(features, info["detectors"][name]["backbones"])) for name, d in detectors.items()
    }
    return {**{m: flags[model_detector(m, detectors)] for m in model_ids}, ENSEMBLE: flags[ENSEMBLE]}


def mark_unknown(summary: dict, flags: dict[str, bool] | None) -> dict:
    """Add ``"unknown"`` to each model's and the ensemble's answer (None: the result set has no verdict)."""
    for model_id, answer in summary["models"].items():
        answer["unknown"] = None if flags is None else flags[model_id]
    summary["ensemble"]["unknown"] = None if flags is None else flags[ENSEMBLE]
    return summary
