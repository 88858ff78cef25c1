"""The data audit: what a dataset folder holds, and which of its images are copies of one another.

:func:`audit` scans a folder (``root/<split>/<class>/<image>`` or ``root/<class>/<image>``), fingerprints
every readable image with :mod:`core.dataset` and reports

* the number of images per split and class;
* **exact duplicate pairs**: byte-identical files (same SHA-256);
* **near duplicate pairs**: files whose bytes differ but whose perceptual hashes lie within
  ``near_duplicate_bits`` of 64 bits under the best rotation/flip (re-encoded, resized, mirrored or
  rotated copies of one photo). Byte-identical pairs are *not* counted again here, so the two counts add
  up to all pairs of copies. The default threshold is :data:`core.dataset.NEAR_DUPLICATE_BITS` (6 bits),
  the one the split uses; its comment says what other values find on the real images;
* every pair as within-split or cross-split, same-class or cross-class;
* how many test (and validation) images have an exact or near duplicate in train, i.e. are not unseen.

A pair is counted directly, image against image; unlike :func:`core.dataset.plan_splits`, chains of
look-alikes (A near B near C) do not make A and C duplicates.

Without split folders every image has split ``None`` (shown as ``"all"``) and the train/test numbers are 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core import dataset

ALL = "all"  # the split name shown for a folder of class folders only
MIN_IMAGES_PER_CLASS = 5  # fewer in most folders: not a dataset of classes


@dataclass(frozen=True)
class DuplicatePair:
    """Two files that hold the same photo: ``a`` comes first in scan order (train before validation/test)."""

    a: dataset.ImageFile
    b: dataset.ImageFile
    distance: int  # perceptual-hash bits under the best rotation/flip; 0 for exact pairs
    exact: bool  # byte-identical

    @property
    def cross_split(self) -> bool:
        return self.a.folder_split != self.b.folder_split

    @property
    def cross_class(self) -> bool:
        return self.a.label != self.b.label


@dataclass
class Audit:
    """What :func:`audit` found in one dataset folder, at one near-duplicate threshold."""

    root: Path
    near_duplicate_bits: int
    files: list[dataset.ImageFile]  # the readable images, in scan order
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable files
    counts: pd.DataFrame  # class x split image counts (splits in dataset order, or the single "all")
    exact_pairs: list[DuplicatePair]
    near_pairs: list[DuplicatePair]
    distinct_images: int  # the images left when each group of copies (joined transitively) counts once
    with_train_duplicate: dict[str, list[str]]  # validation/test -> its paths with a copy in train

    @property
    def images(self) -> int:
        return len(self.files)

    def classes_sharing_a_photo(self) -> list[list[str]]:
        """Groups of two or more classes (joined transitively) that hold a byte-identical photo in common: one
        produce filed under two names (in the Kaggle dataset: bell pepper and capsicum, chilli pepper and
        jalepeno). Near duplicates do not join classes: at the split's threshold an unrelated product on a
        white background can match."""
        names = sorted({f.label for f in self.files})
        index = {name: i for i, name in enumerate(names)}
        group = dataset.connected_groups(len(names), [(index[p.a.label], index[p.b.label]) for p in self.exact_pairs])
        members = {}
        for name, root in zip(names, group):
            members.setdefault(root, []).append(name)
        return [m for m in members.values() if len(m) > 1]

    def not_a_dataset(self) -> str | None:
        """Why the folder does not look like a dataset of class folders, or None where it does.

        Any folder of folders scans without error, so the audit would otherwise present, say, /tmp as
        a dataset whose "classes" are its subfolders."""
        per_class = self.counts.sum(axis=1)
        if not self.images:
            return "it holds no readable image in class folders"
        if len(per_class) < 2:
            return f"it has {len(per_class)} class folder with images; a dataset has at least two"
        if len(self.skipped) > self.images:
            return f"more of its files are unreadable ({len(self.skipped)}) than readable images ({self.images})"
        if (per_class < MIN_IMAGES_PER_CLASS).mean() > 0.5:
            return (f"most of its {len(per_class)} folders hold fewer than {MIN_IMAGES_PER_CLASS} images, "
                    "so they are unlikely to be classes")
        return None

    @property
    def pairs(self) -> list[DuplicatePair]:
        return self.exact_pairs + self.near_pairs

    @property
    def test_with_train_duplicate(self) -> int:
        return len(self.with_train_duplicate["test"])

    @property
    def validation_with_train_duplicate(self) -> int:
        return len(self.with_train_duplicate["validation"])

    def split_size(self, split: str) -> int:
        return int(self.counts[split].sum()) if split in self.counts else 0

    def examples(self, label: str, n: int) -> list[dataset.ImageFile]:
        """Up to ``n`` images of one class, spread evenly over its files (so over its splits too)."""
        members = [f for f in self.files if f.label == label]
        if len(members) <= n:
            return members
        step = len(members) / n
        return [members[int(k * step)] for k in range(n)]

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "images": self.images,
            "skipped": len(self.skipped),
            "classes": len(self.counts.index),
            "splits": {split: int(self.counts[split].sum()) for split in self.counts.columns},
            "counts": {split: {c: int(n) for c, n in self.counts[split].items() if n} for split in self.counts.columns},
            "near_duplicate_bits": self.near_duplicate_bits,
            "exact_duplicate_pairs": len(self.exact_pairs),
            "near_duplicate_pairs": len(self.near_pairs),
            "exact_breakdown": breakdown(self.exact_pairs),
            "near_breakdown": breakdown(self.near_pairs),
            "distinct_images": self.distinct_images,
            "test_images": self.split_size("test"),
            "test_with_train_duplicate": self.test_with_train_duplicate,
            "validation_images": self.split_size("validation"),
            "validation_with_train_duplicate": self.validation_with_train_duplicate,
        }


def split_name(split: str | None) -> str:
    return ALL if split is None else split


def counts_table(counts: dict[str, dict[str, int]]) -> pd.DataFrame:
    """split -> class -> count as a class x split table of ints, splits in dataset order, classes sorted."""
    order = [s for s in dataset.SPLITS if s in counts] + sorted(s for s in counts if s not in dataset.SPLITS)
    table = pd.DataFrame({s: pd.Series(counts[s], dtype="int64") for s in order})
    table = table.reindex(sorted(table.index)).fillna(0).astype("int64")
    table.index.name = "class"
    return table


def breakdown(pairs: list[DuplicatePair]) -> dict[str, int]:
    return {
        "within_split": sum(not p.cross_split for p in pairs),
        "cross_split": sum(p.cross_split for p in pairs),
        "same_class": sum(not p.cross_class for p in pairs),
        "cross_class": sum(p.cross_class for p in pairs),
    }


def audit(root: str | Path, near_duplicate_bits: int = dataset.NEAR_DUPLICATE_BITS, progress: bool = False) -> Audit:
    """Scan and fingerprint ``root`` and audit it; raises FileNotFoundError when there are no images."""
    check_bits(near_duplicate_bits)  # before the slow part, not after it
    prints = dataset.fingerprint(root, dataset.scan(root), progress=progress)
    return from_fingerprints(root, prints, near_duplicate_bits)


def check_bits(near_duplicate_bits: int) -> None:
    if not 0 <= near_duplicate_bits <= 64:
        raise ValueError(f"the near-duplicate threshold must be 0..64 bits, not {near_duplicate_bits}")


def from_fingerprints(root: str | Path, prints: dataset.Fingerprints, near_duplicate_bits: int) -> Audit:
    """The audit of already fingerprinted files: fingerprinting is the slow part, a new threshold is not."""
    check_bits(near_duplicate_bits)
    files, sha = prints.files, prints.sha256
    exact = dataset.exact_duplicate_pairs(sha)
    near = dataset.near_duplicate_pairs(prints.phash, near_duplicate_bits)
    near = [(i, j, d) for i, j, d in near if sha[i] != sha[j]]  # byte-identical pairs are exact, not near
    groups = dataset.connected_groups(len(files), exact + near)
    exact_pairs = sorted((DuplicatePair(files[i], files[j], 0, True) for i, j in exact), key=_pair_order)
    near_pairs = sorted(
        (DuplicatePair(files[i], files[j], d, False) for i, j, d in near), key=lambda p: (p.distance, *_pair_order(p))
    )
    counts = {}
    for (split, label), n in Counter((split_name(f.folder_split), f.label) for f in files).items():
        counts.setdefault(split, {})[label] = n
    return Audit(
        root=Path(root),
        near_duplicate_bits=near_duplicate_bits,
        files=files,
        skipped=list(prints.skipped),
        counts=counts_table(counts),
        exact_pairs=exact_pairs,
        near_pairs=near_pairs,
        distinct_images=len(set(groups.tolist())),
        with_train_duplicate=_with_train_duplicate(exact_pairs + near_pairs),
    )


def _pair_order(pair: DuplicatePair) -> tuple:
    # Cross-class copies first (label noise), then cross-split ones (leakage), then the rest, by path.
    return (not pair.cross_class, not pair.cross_split, pair.a.path, pair.b.path)


def _with_train_duplicate(pairs: list[DuplicatePair]) -> dict[str, list[str]]:
    found = {split: set() for split in dataset.SPLITS[1:]}
    for pair in pairs:
        for held_out, other in ((pair.a, pair.b), (pair.b, pair.a)):
            if held_out.folder_split in found and other.folder_split == "train":
                found[held_out.folder_split].add(held_out.path)
    return {split: sorted(paths) for split, paths in found.items()}
