"""Several result sets side by side: which ones are shipped, what to call them, and how to compare them.

A result set is named by what sets it apart from the others (split policy, recipe, image size, seed count),
read from its manifest, so two folders trained the same way on different splits read "kaggle split" and
"clean split" rather than two paths. Accuracies of two sets are compared per model: paired (McNemar and a
paired bootstrap) when both were tested on the same photos, unpaired (Newcombe's interval for a difference
of two independent proportions) otherwise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import artifacts, stats
from core.specs import MODEL_IDS, MODEL_SPECS

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_FOLDERS = (ROOT / "artifacts", ROOT / "results")
STUDY_SPLIT = "kaggle"  # the study's own train/validation/test folders, copies and all
CLEAN_SPLIT = "clean"
DEFAULT_RECIPE = "study"  # result sets written before the manifest recorded a recipe used the study's


def discover(folders=SHIPPED_FOLDERS) -> list[Path]:
    """Result-set folders shipped with the project: artifacts/ itself and every result set under results/."""
    found = []
    for folder in map(Path, folders):
        candidates = [folder] if (folder / artifacts.MANIFEST).is_file() else sorted(folder.glob("*"))
        found += [c for c in candidates if (c / artifacts.MANIFEST).is_file()]
    return found


def split_policy(rs: artifacts.ResultSet) -> str:
    return rs.config.get("split", CLEAN_SPLIT)


def recipe(rs: artifacts.ResultSet) -> str:
    return rs.config.get("recipe") or DEFAULT_RECIPE


def seed_count(rs: artifacts.ResultSet) -> int:
    """Runs per model (main run plus replicates), the most any model of the set has."""
    return max((1 + len(rs.replicate_seeds(m)) for m in rs.models), default=1)


def _traits(rs: artifacts.ResultSet) -> dict[str, str]:
    seeds = seed_count(rs)
    return {
        "split": f"{split_policy(rs)} split",
        "recipe": f"{recipe(rs)} recipe",
        "size": f"{rs.config.get('image_size')} px",
        "seeds": f"{seeds} seed{'s' if seeds > 1 else ''}",
    }


def names(sets: list[artifacts.ResultSet]) -> list[str]:
    """A name per set from what differs among them; split and recipe are always said.

    Sets that still read alike (trained the same way twice) get their folder's name added in brackets.
    """
    traits = [_traits(rs) for rs in sets]
    varying = [k for k in ("size", "seeds") if len({t[k] for t in traits}) > 1]
    labels = [" · ".join(t[k] for k in ("split", "recipe", *varying)) for t in traits]
    return [
        f"{label} ({rs.root.name})" if labels.count(label) > 1 else label for label, rs in zip(labels, sets)
    ]


@dataclass
class Catalogue:
    """The chosen result sets with their names; folders that are not result sets, with the reason."""

    sets: dict[str, artifacts.ResultSet]  # name -> set, in the order chosen
    rejected: dict[str, str]  # folder -> why it is not a result set


def open_sets(folders, opener=artifacts.open_result_set) -> Catalogue:
    """Open the folders (``opener`` may be a cached one) and name them; duplicates count once."""
    opened, rejected = [], {}
    seen = set()
    for folder in folders:
        path = Path(folder).expanduser()
        key = os.path.realpath(path)
        if key in seen:
            continue
        seen.add(key)
        try:
            opened.append(opener(path))
        except artifacts.ResultSetError as err:
            rejected[str(folder)] = str(err)
    return Catalogue(dict(zip(names(opened), opened)), rejected)


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for p1 - p2 of two independent proportions (Newcombe's hybrid score method 10)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = stats.wilson_interval(k1, n1, confidence)
    l2, u2 = stats.wilson_interval(k2, n2, confidence)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def paired_bootstrap_interval(correct_a, correct_b, confidence=0.95, resamples=2000, seed=0) -> tuple[float, float]:
    """Percentile interval of acc(a) - acc(b), resampling the shared test photos together."""
    diff = np.asarray(correct_a, float) - np.asarray(correct_b, float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def accuracy_table(sets: dict[str, artifacts.ResultSet], confidence: float = 0.95) -> pd.DataFrame:
    """One row per (model, result set): accuracy on its test photos with a Wilson interval."""
    rows = []
    for name, rs in sets.items():
        for model_id in rs.models:
            correct = rs.predictions(model_id).correct
            k, n = int(correct.sum()), int(correct.size)
            low, high = stats.wilson_interval(k, n, confidence)
            rows.append(
                dict(model=model_id, result_set=name, correct=k, n=n, accuracy=k / n, low=low, high=high,
                     split=split_policy(rs), test_classes=len(set(rs.predictions(model_id).y_true.tolist())))
            )
    return pd.DataFrame(rows, columns=["model", "result_set", "correct", "n", "accuracy", "low", "high", "split",
                                       "test_classes"])


def pivot(table: pd.DataFrame, with_study: bool = True) -> pd.DataFrame:
    """Models x result sets of accuracy, plus the study's published figure as a column."""
    wide = table.pivot(index="model", columns="result_set", values="accuracy")
    wide = wide.reindex([m for m in MODEL_IDS if m in wide.index])[list(dict.fromkeys(table["result_set"]))]
    if with_study:
        wide.insert(0, "study (published)", [MODEL_SPECS[m].reference_accuracy for m in wide.index])
    return wide


def same_test_files(a: artifacts.Predictions, b: artifacts.Predictions) -> bool:
    """Paired comparison is sound only when both sets were tested on exactly the same photos."""
    return a.files.size == b.files.size and set(a.files.tolist()) == set(b.files.tolist())


@dataclass(frozen=True)
class Difference:
    model: str
    a: str
    b: str
    difference: float  # accuracy(a) - accuracy(b)
    low: float
    high: float
    paired: bool
    method: str
    p_value: float | None  # McNemar, paired only


def difference(model_id: str, name_a: str, rs_a, name_b: str, rs_b, confidence: float = 0.95) -> Difference:
    pa, pb = rs_a.predictions(model_id), rs_b.predictions(model_id)
    if same_test_files(pa, pb):
        order_b = pd.Series(np.arange(pb.files.size), index=pb.files)[pa.files].to_numpy()
        ca, cb = pa.correct, pb.correct[order_b]
        low, high = paired_bootstrap_interval(ca, cb, confidence)
        p = stats.mcnemar_exact(ca, cb).p_value
        return Difference(model_id, name_a, name_b, float(ca.mean() - cb.mean()), low, high, True,
                          "paired: same test photos (paired bootstrap interval, exact McNemar test)", p)
    ka, na, kb, nb = int(pa.correct.sum()), pa.correct.size, int(pb.correct.sum()), pb.correct.size
    low, high = newcombe_interval(ka, na, kb, nb, confidence)
    return Difference(model_id, name_a, name_b, ka / na - kb / nb, low, high, False,
                      "unpaired: different test photos (Newcombe interval for two independent proportions)", None)


def differences(sets: dict[str, artifacts.ResultSet], confidence: float = 0.95) -> pd.DataFrame:
    """Every later set against the first chosen one, per model both hold."""
    items = list(sets.items())
    if len(items) < 2:
        return pd.DataFrame(columns=[f for f in Difference.__dataclass_fields__])
    (name_a, rs_a), rows = items[0], []
    for name_b, rs_b in items[1:]:
        for model_id in MODEL_IDS:
            if model_id in rs_a.models and model_id in rs_b.models:
                rows.append(difference(model_id, name_b, rs_b, name_a, rs_a, confidence).__dict__)
    return pd.DataFrame(rows, columns=[f for f in Difference.__dataclass_fields__])


def leak_pair(sets: dict[str, artifacts.ResultSet]) -> tuple[str, str] | None:
    """The first study-split set and the first clean-split set chosen with the study's recipe, if both are."""
    def first(split):
        picks = [n for n, rs in sets.items() if split_policy(rs) == split and recipe(rs) == DEFAULT_RECIPE]
        picks = picks or [n for n, rs in sets.items() if split_policy(rs) == split]
        return picks[0] if picks else None

    study, clean = first(STUDY_SPLIT), first(CLEAN_SPLIT)
    return (study, clean) if study and clean else None


def leak_headline(sets: dict[str, artifacts.ResultSet], confidence: float = 0.95) -> pd.DataFrame | None:
    """Per model: accuracy on the study's split minus accuracy on the clean split (None without both)."""
    pair = leak_pair(sets)
    if pair is None:
        return None
    study, clean = pair
    rows = [
        difference(m, study, sets[study], clean, sets[clean], confidence).__dict__
        for m in MODEL_IDS
        if m in sets[study].models and m in sets[clean].models
    ]
    return pd.DataFrame(rows, columns=[f for f in Difference.__dataclass_fields__])


def confusion_difference(rs_a, rs_b, model_id: str) -> tuple[list[str], np.ndarray]:
    """Row-normalised confusion of set a minus set b for one model, over the classes both sets hold."""
    shared = [c for c in rs_a.class_names if c in set(rs_b.class_names)]

    def normalised(rs):
        p = rs.predictions(model_id)
        index = {c: i for i, c in enumerate(shared)}
        names_ = np.asarray(rs.class_names)
        true, pred = names_[p.y_true], names_[p.y_pred]
        counts = np.zeros((len(shared), len(shared)))
        for t, q in zip(true, pred):
            if t in index and q in index:
                counts[index[t], index[q]] += 1
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)

    return shared, normalised(rs_a) - normalised(rs_b)
