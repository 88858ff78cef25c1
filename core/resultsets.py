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
STUDY_COLUMN = "study (published)"  # the figures the study reports, on its own split
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


def seed_counts(rs: artifacts.ResultSet) -> tuple[int, int]:
    """Runs per model (main run plus replicates): the fewest and the most any model of the set has."""
    runs = [1 + len(rs.replicate_seeds(m)) for m in rs.models] or [1]
    return min(runs), max(runs)


def seeds_label(fewest: int, most: int) -> str:
    """'3 seeds'; '1–3 seeds' where the models differ (a set with one model run three times is no 3-seed set)."""
    return f"{fewest}–{most} seeds" if fewest != most else f"{most} seed{'s' if most > 1 else ''}"


def weights(rs: artifacts.ResultSet) -> str:
    """'' when every model can classify new photos; a set kept for comparison only says so."""
    carrying = sum(rs.has_weights(m) for m in rs.models)
    return "" if carrying == len(rs.models) else "no weights" if carrying == 0 else "some weights"


def _traits(rs: artifacts.ResultSet) -> dict[str, str]:
    return {
        "split": f"{split_policy(rs)} split",
        "recipe": f"{recipe(rs)} recipe",
        "size": f"{rs.config.get('image_size')} px",
        "seeds": seeds_label(*seed_counts(rs)),
        "weights": weights(rs),
    }


def names(sets: list[artifacts.ResultSet]) -> list[str]:
    """A name per set from what differs among them; split and recipe are always said.

    Sets that still read alike (trained the same way twice) get their folder's name added in brackets.
    """
    traits = [_traits(rs) for rs in sets]
    varying = [k for k in ("size", "seeds", "weights") if len({t[k] for t in traits}) > 1]
    labels = [" · ".join(t[k] for k in ("split", "recipe", *varying) if t[k]) for t in traits]
    return [
        f"{label} ({rs.root.name})" if labels.count(label) > 1 else label for label, rs in zip(labels, sets)
    ]


@dataclass
class Catalogue:
    """The chosen result sets with their names; folders that are not result sets, with the reason."""

    sets: dict[str, artifacts.ResultSet]  # name -> set, in the order chosen
    rejected: dict[str, str]  # chosen folder -> why it is not a result set
    offered: dict[str, artifacts.ResultSet]  # every set one may choose (shipped and chosen), same names


def open_sets(folders, opener=artifacts.open_result_set, offered=()) -> Catalogue:
    """Open the chosen folders (``opener`` may be a cached one) and name them.

    The names are made among the chosen and the ``offered`` folders together (the shipped ones), so a set
    reads the same in the chooser and in every table. Duplicates count once; an offered folder that does
    not open is left out silently (only a chosen one is reported).
    """
    opened, rejected, chosen = {}, {}, []
    for folder, is_chosen in [*((f, True) for f in folders), *((f, False) for f in offered)]:
        path = Path(folder).expanduser()
        key = os.path.realpath(path)
        if key not in opened:
            try:
                opened[key] = opener(path)
            except artifacts.ResultSetError as err:
                if is_chosen:
                    rejected[str(folder)] = str(err)
                continue
        if is_chosen and key not in chosen:
            chosen.append(key)
    named = dict(zip(opened, names(list(opened.values()))))
    return Catalogue(
        sets={named[k]: opened[k] for k in chosen},
        rejected=rejected,
        offered={named[k]: rs for k, rs in opened.items()},
    )


@dataclass(frozen=True)
class Coverage:
    """What a set's test split covers: the study's own split tests only some of its classes."""

    photos: int
    classes_tested: int
    classes: int

    def __str__(self) -> str:
        some = f"only {self.classes_tested} of its {self.classes}" if self.classes_tested < self.classes else (
            f"all {self.classes}")
        return f"{self.photos} test photos covering {some} classes"


def coverage(rs: artifacts.ResultSet) -> Coverage:
    """From a model's predictions, or the set's dataset record while no model has finished."""
    if rs.models:
        y_true = rs.predictions(next(iter(rs.models))).y_true
        photos, tested = int(y_true.size), len(set(y_true.tolist()))
    else:
        test = rs.dataset()["files"].get("test", [])
        photos, tested = len(test), len({label for _, label in test})
    return Coverage(photos, tested, len(rs.class_names))


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


def pivot(table: pd.DataFrame, order=None, with_study: bool = True) -> pd.DataFrame:
    """Models x result sets (``order``: every chosen name, also of a set with no model yet) of accuracy,
    plus the study's published figure as a column."""
    wide = table.pivot(index="model", columns="result_set", values="accuracy")
    order = list(order or dict.fromkeys(table["result_set"]))
    wide = wide.reindex(index=[m for m in MODEL_IDS if m in wide.index], columns=order)
    if with_study:
        wide.insert(0, STUDY_COLUMN, [MODEL_SPECS[m].reference_accuracy for m in wide.index])
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


def ordered(sets: dict[str, artifacts.ResultSet]) -> dict[str, artifacts.ResultSet]:
    """As the comparison reads: the study's split first, then the clean split with the study's recipe,
    then the rest (other recipes); the chosen order within each."""
    def rank(rs):
        return 0 if split_policy(rs) == STUDY_SPLIT else 1 if recipe(rs) == DEFAULT_RECIPE else 2

    return dict(sorted(sets.items(), key=lambda item: rank(item[1])))


def reference(sets: dict[str, artifacts.ResultSet]) -> str:
    """What the others are measured against: the clean split with the study's recipe, when chosen (among
    the sets with a finished model, when there are any)."""
    sets = {n: rs for n, rs in sets.items() if rs.models} or sets
    clean = [n for n, rs in sets.items() if split_policy(rs) == CLEAN_SPLIT]
    plain = [n for n in clean if recipe(sets[n]) == DEFAULT_RECIPE]
    return (plain or clean or list(sets))[0]


def differences(sets: dict[str, artifacts.ResultSet], against: str | None = None,
                confidence: float = 0.95) -> pd.DataFrame:
    """Every other set minus ``against`` (by default the reference), per model both hold."""
    rows = []
    if len(sets) > 1:
        against = against or reference(sets)
        for name, rs in sets.items():
            rows += [
                difference(m, name, rs, against, sets[against], confidence).__dict__
                for m in MODEL_IDS
                if name != against and m in rs.models and m in sets[against].models
            ]
    return pd.DataFrame(rows, columns=[f for f in Difference.__dataclass_fields__])


def leak_pair(sets: dict[str, artifacts.ResultSet]) -> tuple[str, str] | None:
    """The first study-split set and the clean-split reference, if both are chosen."""
    study = [n for n, rs in sets.items() if split_policy(rs) == STUDY_SPLIT and recipe(rs) == DEFAULT_RECIPE]
    study = study or [n for n, rs in sets.items() if split_policy(rs) == STUDY_SPLIT]
    clean = reference(sets)
    return (study[0], clean) if study and split_policy(sets[clean]) == CLEAN_SPLIT else None


def leak_headline(sets: dict[str, artifacts.ResultSet], confidence: float = 0.95) -> pd.DataFrame | None:
    """Per model: accuracy on the study's split minus accuracy on the clean split (None without both):
    how much the copies between its training and test photos flatter each model."""
    pair = leak_pair(sets)
    if pair is None:
        return None
    study, clean = pair
    return differences({study: sets[study], clean: sets[clean]}, against=clean, confidence=confidence)


def tested_classes(rs: artifacts.ResultSet, model_id: str) -> set[str]:
    return {rs.class_names[i] for i in set(rs.predictions(model_id).y_true.tolist())}


def confusion_difference(rs_a, rs_b, model_id: str) -> tuple[list[str], list[str], np.ndarray]:
    """Row-normalised confusion of set a minus set b for one model: rows are the true classes both sets
    test, columns every class both sets hold (a photo may be taken for any of them)."""
    shared = [c for c in rs_a.class_names if c in set(rs_b.class_names)]
    rows = [c for c in shared if c in tested_classes(rs_a, model_id) & tested_classes(rs_b, model_id)]

    def normalised(rs):
        p = rs.predictions(model_id)
        row_of, column_of = ({rs.class_names.index(c): i for i, c in enumerate(names_)} for names_ in (rows, shared))
        counts = np.zeros((len(rows), len(shared)))
        for t, q in zip(p.y_true.tolist(), p.y_pred.tolist()):
            if t in row_of and q in column_of:
                counts[row_of[t], column_of[q]] += 1
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)

    return rows, shared, normalised(rs_a) - normalised(rs_b)
