"""The open-set verdict: "none of the N classes this result set knows" for a photo unlike every known photo.

Method, in the pooled features of the frozen ImageNet backbones (``core.features``), each row L2-normalised:
the sum of two scores, each standardised (mean 0, spread 1) on the validation photos:

- relative Mahalanobis distance (Ren et al. 2021, "A simple fix to Mahalanobis distance for improving near-OOD
  detection"): in a PCA space fitted on the training photos, the smallest Mahalanobis distance to a known
  class's mean (one shared covariance, Lee et al. 2018) minus the distance to one Gaussian of all training
  photos, which takes out what is merely unusual about a photo, whatever its class;
- the energy score (Liu et al. 2020) of a linear probe: multinomial logistic regression fitted on the known
  classes' training photos (standardised features), score ``-logsumexp(logits)``.

The threshold keeps ``KEEP`` of the validation photos (data no model trained on). The trained models' own
probabilities are not used: they learned every class of the result set, so no held-out protocol can measure
them; the probe, fitted anew on the known classes of each fold, is measured instead.

Each VGG16 model reads the VGG16 features, each ResNet50 model the ResNet50 features; the two CNN models
have no ImageNet trunk and, like the ensemble, read both backbones' features side by side.

Measured by an open-set protocol without outside data (``held_out_protocol``): some classes are held out,
the detector is fitted on the other classes' training photos with its threshold on their validation photos,
and the held-out classes' photos must be flagged as unknown while known-class test photos are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from core.specs import BACKBONES

KEEP = 0.95
PCA_DIMS = 128
SHRINKAGE = 1e-3  # ridge added to each covariance, as a share of its mean variance: 1,400 photos, 128 dims
PROBE_C = 0.01  # inverse L2 strength of the probe
METHOD = (
    f"relative Mahalanobis distance (PCA-{PCA_DIMS}) + energy of a linear probe (logistic regression, C={PROBE_C}), "
    "each standardised on validation, on frozen ImageNet pooled features"
)
ENSEMBLE = "ensemble"
MODEL_BACKBONE = {"vgg16": "vgg16", "vgg16_attention": "vgg16", "resnet50": "resnet50", "resnet50_attention": "resnet50"}


def detector_backbones(backbones) -> dict[str, tuple[str, ...]]:
    """Which features each detector reads: each backbone alone, and the ensemble all of them side by side."""
    return {**{b: (b,) for b in backbones}, ENSEMBLE: tuple(backbones)}


def model_detector(model_id: str, detectors) -> str:
    """A model's own backbone's detector; the CNN models (no ImageNet trunk) use the ensemble's."""
    backbone = MODEL_BACKBONE.get(model_id)
    return backbone if backbone in detectors else ENSEMBLE


def detector_title(detector: str) -> str:
    """What a detector reads, in words: 'vgg16' -> 'VGG16 features', the ensemble's -> 'both backbones' features'."""
    if detector == ENSEMBLE:
        return "both backbones' features"
    return f"{BACKBONES[detector].title if detector in BACKBONES else detector} features"


def normalise(features: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (cosine similarity becomes a dot product)."""
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def joined(features: dict[str, np.ndarray], backbones) -> np.ndarray:
    """Each backbone's unit-length features side by side (each backbone weighs the same)."""
    return np.concatenate([normalise(features[b]) for b in backbones], axis=1)


def _half(a: np.ndarray) -> np.ndarray:
    """Rounded to float16, as stored: the detector measures with exactly what the result set keeps."""
    return np.asarray(a, np.float16).astype(np.float32)


def _precision(centred: np.ndarray) -> np.ndarray:
    covariance = centred.T @ centred / len(centred)
    covariance += SHRINKAGE * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
    return np.linalg.inv(covariance).astype(np.float32)


def _squared_distance(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance squared of each row of ``x`` (N, P) to ``mean`` (P,) or each of ``mean`` (C, P)."""
    d = x[:, None, :] - np.atleast_2d(mean)[None]
    return np.einsum("ncp,pq,ncq->nc", d, precision, d)


@dataclass
class Detector:
    """Relative Mahalanobis distance plus a linear probe's energy, standardised and summed (module docstring)."""

    mean: np.ndarray  # (D,) PCA centre
    components: np.ndarray  # (D, P) PCA directions (float16 values)
    class_means: np.ndarray  # (C, P) unit-length projected training photos' mean per known class
    precision: np.ndarray  # (P, P) inverse of the covariance shared by the classes
    background_mean: np.ndarray  # (P,) all training photos as one Gaussian
    background_precision: np.ndarray  # (P, P)
    feature_mean: np.ndarray  # (D,) the probe's standardisation
    feature_scale: np.ndarray  # (D,)
    weights: np.ndarray  # (D, C) the probe (float16 values)
    bias: np.ndarray  # (C,)
    standardise: np.ndarray  # (2, 2) mean and spread of both scores on the validation photos
    threshold: float = np.inf

    @classmethod
    def fit(cls, train: np.ndarray, labels: np.ndarray, validation: np.ndarray, keep: float = KEEP) -> Detector:
        """Fitted on ``train`` (N, D) of the known classes ``labels``; standardised and thresholded on
        ``validation`` photos of the same classes."""
        # scikit-learn only loads for fitting: the app and the command line just apply a stored detector.
        from sklearn.linear_model import LogisticRegression

        train = np.asarray(train, np.float32)
        mean = train.mean(axis=0)
        _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
        components = _half(vt[: min(PCA_DIMS, len(vt))].T)
        z = normalise((train - mean) @ components)
        classes = np.unique(labels)
        class_means = np.stack([z[labels == c].mean(axis=0) for c in classes])
        background_mean = z.mean(axis=0)
        feature_mean, feature_scale = train.mean(axis=0), np.maximum(train.std(axis=0), 1e-6)
        probe = LogisticRegression(C=PROBE_C, max_iter=3000).fit((train - feature_mean) / feature_scale, labels)
        detector = cls(
            mean, components, class_means,
            _precision(z - class_means[np.searchsorted(classes, labels)]),
            background_mean, _precision(z - background_mean),
            feature_mean, feature_scale, _half(probe.coef_.T), probe.intercept_.astype(np.float32),
            np.array([[0.0, 1.0], [0.0, 1.0]], np.float32),
        )
        parts = detector.parts(validation)
        detector.standardise = np.stack([parts.mean(axis=0), np.maximum(parts.std(axis=0), 1e-6)], axis=1)
        detector.threshold = float(np.quantile(detector.scores(validation), keep))
        return detector

    def parts(self, features: np.ndarray) -> np.ndarray:
        """(N, 2): relative Mahalanobis distance and energy, raw; higher = less like the known classes."""
        features = np.asarray(features, np.float32)
        z = normalise((features - self.mean) @ self.components)
        relative = _squared_distance(z, self.class_means, self.precision).min(axis=1) - _squared_distance(
            z, self.background_mean, self.background_precision
        )[:, 0]
        logits = ((features - self.feature_mean) / self.feature_scale) @ self.weights + self.bias
        top = logits.max(axis=1)
        energy = -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))
        return np.stack([relative, energy], axis=1)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Higher = less like the known classes; the sum of both standardised parts."""
        return ((self.parts(features) - self.standardise[:, 0]) / self.standardise[:, 1]).sum(axis=1)

    def unknown(self, features: np.ndarray) -> np.ndarray:
        return self.scores(features) > self.threshold


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Probability that an unknown photo scores above a known one (ties count half)."""
    known, unknown = np.asarray(known_scores), np.asarray(unknown_scores)
    greater = (unknown[:, None] > known[None, :]).mean()
    ties = (unknown[:, None] == known[None, :]).mean()
    return float(greater + 0.5 * ties)


def fit_detectors(
    features: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray], keep: float = KEEP
) -> dict[str, Detector]:
    """``features[split][backbone]``, ``labels[split]``: fit on train, standardise and threshold on validation,
    one detector per ``detector_backbones``."""
    return {
        name: Detector.fit(joined(features["train"], backbones), labels["train"], joined(features["validation"], backbones), keep)
        for name, backbones in detector_backbones(list(features["train"])).items()
    }


def held_out_folds(class_names: list[str], folds: int = 5, seed: int = 0, together=()) -> list[np.ndarray]:
    """Disjoint groups of class indices, each held out once, in a fixed random order. The classes of each group
    in ``together`` (lists of class names) are held out in one fold, the fold of the group's class that the
    order puts first, so that the other folds stay as they were."""
    order = np.random.default_rng(seed).permutation(len(class_names))
    fold_of = {int(c): f for f, part in enumerate(np.array_split(order, folds)) for c in part}
    for group in together:
        indices = [class_names.index(name) for name in group if name in class_names]
        first = min(indices, key=lambda c: np.flatnonzero(order == c)[0], default=None)
        for c in indices:
            fold_of[c] = fold_of[first]
    return [np.array(sorted(c for c, f in fold_of.items() if f == fold)) for fold in range(folds)]


def held_out_protocol(
    features: dict[str, dict[str, np.ndarray]],
    labels: dict[str, np.ndarray],
    class_names: list[str],
    folds: int = 5,
    seed: int = 0,
    keep: float = KEEP,
    together=(),
) -> dict[str, dict]:
    """Per detector: AUROC, unknown photos accepted and known test photos kept, pooled over folds, and the
    AUROC of each held-out class (its photos against the known test photos of its fold).

    In each fold the held-out classes' photos of every split are unknown; the detector sees only the other
    classes' training photos and sets its threshold on their validation photos. ``together``: groups of
    classes held out in one fold (``held_out_folds``): one produce under two names is not unknown while its
    other name is known, least of all when the two hold the same photos.
    """
    chosen = detector_backbones(list(features["train"]))
    pooled = {name: {"known": [], "unknown": [], "per_class": {}} for name in chosen}
    for held in held_out_folds(class_names, folds, seed, together):
        is_known = {s: ~np.isin(labels[s], held) for s in labels}
        part = {s: {b: f[is_known[s]] for b, f in features[s].items()} for s in labels}
        known_labels = {s: labels[s][is_known[s]] for s in labels}
        unknown = {b: np.concatenate([features[s][b][~is_known[s]] for s in labels]) for b in features["test"]}
        unknown_labels = np.concatenate([labels[s][~is_known[s]] for s in labels])
        for name, detector in fit_detectors(part, known_labels, keep).items():
            known_scores = detector.scores(joined(part["test"], chosen[name])) - detector.threshold
            unknown_scores = detector.scores(joined(unknown, chosen[name])) - detector.threshold
            pooled[name]["known"].append(known_scores)
            pooled[name]["unknown"].append(unknown_scores)
            for c in held:
                pooled[name]["per_class"][class_names[c]] = auroc(known_scores, unknown_scores[unknown_labels == c])
    report = {}
    for name, p in pooled.items():
        report[name] = {
            # AUROC per fold then averaged: each fold has its own detector and scale.
            "auroc": float(np.mean([auroc(kn, un) for kn, un in zip(p["known"], p["unknown"])])),
            "known_test_kept": float((np.concatenate(p["known"]) <= 0).mean()),
            "unknown_accepted": float((np.concatenate(p["unknown"]) <= 0).mean()),
            "known_test_photos": int(sum(len(x) for x in p["known"])),
            "unknown_photos": int(sum(len(x) for x in p["unknown"])),
            "class_auroc": dict(sorted(p["per_class"].items(), key=lambda item: item[1])),
        }
    return report


EACH_ALONE = "each class alone"
TOGETHER = "classes sharing a photo together"


def measure(features: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray], class_names: list[str],
            image_size: int, together=()) -> tuple[dict, dict[str, np.ndarray], dict[str, dict]]:
    """Fit the verdict on all known classes and measure it by the held-out protocol, both with each class held
    out alone and with ``together``'s groups held out together (the one stored). Returns the stored form
    (``to_stored``) and both protocols' figures, by ``EACH_ALONE`` and ``TOGETHER``."""
    protocols = {grouping: held_out_protocol(features, labels, class_names, together=groups)
                 for grouping, groups in ((EACH_ALONE, ()), (TOGETHER, together))}
    info, arrays = to_stored(fit_detectors(features, labels), protocols[TOGETHER], image_size, together)
    return info, arrays, protocols


# Stored in float16 (their values were rounded to it in ``Detector.fit``); the others in float32.
HALF_FIELDS = ("components", "weights")


def to_stored(detectors: dict[str, Detector], protocol: dict, image_size: int, together=()) -> tuple[dict, dict[str, np.ndarray]]:
    """The verdict as the result set stores it (``artifacts.write_openset``): settings JSON and arrays.
    ``together``: the class groups the protocol held out together."""
    backbones = detector_backbones([n for n in detectors if n != ENSEMBLE])
    info = {
        "method": METHOD,
        "keep": KEEP,
        "image_size": int(image_size),
        "detectors": {name: {"backbones": list(backbones[name]), "threshold": d.threshold} for name, d in detectors.items()},
        "held_out_protocol": protocol,
        "held_out_together": [list(group) for group in together],
    }
    arrays = {
        f"{name}.{f.name}": getattr(d, f.name).astype(np.float16 if f.name in HALF_FIELDS else np.float32)
        for name, d in detectors.items()
        for f in fields(Detector)
        if f.name != "threshold"
    }
    return info, arrays


def from_stored(info: dict, arrays: dict[str, np.ndarray]) -> dict[str, Detector]:
    return {
        name: Detector(
            **{f.name: arrays[f"{name}.{f.name}"].astype(np.float32) for f in fields(Detector) if f.name != "threshold"},
            threshold=float(d["threshold"]),
        )
        for name, d in info["detectors"].items()
    }


def verdicts(info: dict, detectors: dict[str, Detector], features: dict[str, np.ndarray], model_ids) -> dict[str, np.ndarray]:
    """``{model id or ENSEMBLE: (B,) bool}``, True where the photo is unlike every class the set knows."""
    flags = {
        name: d.unknown(joined(features, info["detectors"][name]["backbones"])) for name, d in detectors.items()
    }
    return {**{m: flags[model_detector(m, detectors)] for m in model_ids}, ENSEMBLE: flags[ENSEMBLE]}


def first_photo(flags: dict[str, np.ndarray] | None) -> dict[str, bool] | None:
    """``verdicts`` of a batch -> the first photo's ``{model id or ENSEMBLE: unknown?}`` (None stays None)."""
    return None if flags is None else {name: bool(f[0]) for name, f in flags.items()}


def mark_unknown(summary: dict, flags: dict[str, bool] | None) -> dict:
    """Add ``"unknown"`` to each model's and the ensemble's answer (None: the result set has no verdict)."""
    for model_id, answer in summary["models"].items():
        answer["unknown"] = None if flags is None else flags[model_id]
    summary["ensemble"]["unknown"] = None if flags is None else flags[ENSEMBLE]
    return summary
