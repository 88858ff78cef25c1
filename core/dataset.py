"""The image dataset: scanning the Kaggle folder layout, content fingerprints, duplicate groups, splits.

Two split policies:

* ``clean`` (default) pools every image of every folder, drops byte-identical copies of the same class,
  groups the rest by content (exact SHA-256, and near duplicates by a flip/rotation-invariant perceptual
  hash) and assigns whole groups to train/validation/test, stratified by class, deterministically for a
  seed. No image has a (near) duplicate in another split.
* ``kaggle`` keeps the dataset's own train/validation/test folders, as the study did, and records how many
  validation and test images also appear in training.

Either way the seed, the policy and the exact file lists are recorded, so a run can be reproduced image
for image.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from tqdm import tqdm

from core import cache, images

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = frozenset(images.PHOTO_SUFFIXES)
POLICIES = ("clean", "kaggle")
# Hamming distance (of 64 bits) of the DCT perceptual hash, under the best rotation/flip, up to which two
# images count as near duplicates. On the real images, re-encoded or resized copies of a photo lie at 0-4
# bits; at 6 there were 11 pairs, 8 of them flipped/cropped copies of one photo and 3 unrelated products on
# white backgrounds; at 8 unrelated pairs dominate (18 of 19 across classes). For splitting, a look-alike
# merged into a group costs nothing (the group stays in one split) while a missed copy leaks, hence 6.
NEAR_DUPLICATE_BITS = 6
# Rotations by 90 degrees and mirror images: some copies of the dataset hold flipped or rotated duplicates.
_DIHEDRAL = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)


@dataclass(frozen=True)
class ImageFile:
    """One image file: its path relative to the dataset root, its class and the folder split it came from."""

    path: str
    label: str
    folder_split: str | None


@dataclass
class Fingerprints:
    """Content fingerprints of a list of files (parallel arrays)."""

    files: list[ImageFile]
    sha256: list[str]
    phash: np.ndarray  # (N, 8) uint64: the hash of each dihedral transform, identity first
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class SplitPlan:
    """Which file is in which split, and everything needed to reproduce and audit that choice."""

    policy: str
    seed: int
    class_names: list[str]
    files: dict[str, list[ImageFile]]
    skipped: list[tuple[str, str]]
    dropped_copies: list[tuple[str, str]]  # (dropped path, kept path) byte-identical copies of one class
    leaked: dict[str, list[str]]  # split -> its images with an exact or near duplicate in train
    fingerprint: str
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS

    def counts(self) -> dict[str, dict[str, int]]:
        return {split: dict(Counter(f.label for f in files)) for split, files in self.files.items()}

    def to_json(self) -> dict:
        return {
            "policy": self.policy,
            "seed": self.seed,
            "near_duplicate_bits": self.near_duplicate_bits,
            "fingerprint": self.fingerprint,
            "class_names": self.class_names,
            "files": {s: [[f.path, f.label] for f in files] for s, files in self.files.items()},
            "skipped": [list(x) for x in self.skipped],
            "dropped_copies": [list(x) for x in self.dropped_copies],
            "leaked": self.leaked,
        }

    @classmethod
    def from_json(cls, data: dict) -> "SplitPlan":
        return cls(
            policy=data["policy"],
            seed=data["seed"],
            near_duplicate_bits=data["near_duplicate_bits"],
            fingerprint=data["fingerprint"],
            class_names=list(data["class_names"]),
            files={s: [ImageFile(p, label, None) for p, label in files] for s, files in data["files"].items()},
            skipped=[tuple(x) for x in data["skipped"]],
            dropped_copies=[tuple(x) for x in data["dropped_copies"]],
            leaked={s: list(v) for s, v in data["leaked"].items()},
        )


def scan(root: str | Path) -> list[ImageFile]:
    """List the images under ``root``: ``root/<split>/<class>/<image>`` or ``root/<class>/<image>``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    parents = [(d, d.name) for d in split_dirs] if split_dirs else [(root, None)]
    found = []
    for parent, split in parents:
        for class_dir in sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for file in sorted(class_dir.iterdir()):
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(ImageFile(file.relative_to(root).as_posix(), class_dir.name, split))
    if not found:
        raise FileNotFoundError(
            f"no images found in {root}: expected {root}/train/<class>/<image> or {root}/<class>/<image>"
        )
    return found


def perceptual_hashes(image: Image.Image) -> np.ndarray:
    """pHash of the image under each of the 8 rotations/flips, as uint64 (identity first)."""
    # pHash shrinks to 32x32 grey first; doing that once and transforming the thumbnail is equivalent.
    small = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    hashes = []
    for op in _DIHEDRAL:
        bits = imagehash.phash(small if op is None else small.transpose(op)).hash
        hashes.append(int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big"))
    return np.array(hashes, dtype=np.uint64)


def fingerprint(root: str | Path, files: list[ImageFile], progress: bool = True) -> Fingerprints:
    """Hash every file; unreadable or corrupt files are skipped and reported, never fatal."""
    root = Path(root)
    kept, sha, hashes, skipped = [], [], [], []
    for f in tqdm(files, desc="fingerprinting images", unit="img", disable=not progress):
        try:
            data = (root / f.path).read_bytes()
            image = images.read_image(data)
        except (OSError, images.ImageError) as err:
            skipped.append((f.path, str(err)))
            continue
        kept.append(f)
        sha.append(hashlib.sha256(data).hexdigest())
        hashes.append(perceptual_hashes(image))
    if skipped:
        log.warning("skipped %d unreadable image(s): %s", len(skipped), ", ".join(p for p, _ in skipped[:10]))
    table = np.stack(hashes) if hashes else np.zeros((0, len(_DIHEDRAL)), np.uint64)
    return Fingerprints(kept, sha, table, skipped)


def near_duplicate_pairs(phash: np.ndarray, max_bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[int, int, int]]:
    """Index pairs (i < j) whose hashes differ by at most ``max_bits`` under some rotation/flip."""
    n = len(phash)
    pairs = []
    for start in range(0, n, 256):
        block = phash[start : start + 256, :1]  # identity hash of each row image
        distance = np.bitwise_count(block[:, :, None] ^ phash.T[None, :, :]).min(axis=1)
        for i, j in zip(*np.nonzero(distance <= max_bits)):
            if start + i < j:
                pairs.append((int(start + i), int(j), int(distance[i, j])))
    return pairs


def exact_duplicate_pairs(sha256: list[str]) -> list[tuple[int, int]]:
    """Index pairs (i < j) of byte-identical files."""
    by_hash = defaultdict(list)
    for i, h in enumerate(sha256):
        by_hash[h].append(i)
    return [(a, b) for idx in by_hash.values() for k, a in enumerate(idx) for b in idx[k + 1 :]]


def connected_groups(n: int, pairs) -> np.ndarray:
    """Group id per item, joining every pair (union-find); ids are the smallest member index."""
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, *_ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


def plan_splits(
    root: str | Path,
    policy: str = "clean",
    seed: int = 0,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS,
    progress: bool = True,
) -> SplitPlan:
    """Scan, fingerprint and split a dataset folder according to ``policy``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown split policy {policy!r}; choose one of {', '.join(POLICIES)}")
    prints = fingerprint(root, scan(root), progress=progress)
    if not prints.files:
        raise ValueError(f"no readable images in {root}")
    class_names = sorted({f.label for f in prints.files})
    pairs = exact_duplicate_pairs(prints.sha256) + [
        (i, j) for i, j, _ in near_duplicate_pairs(prints.phash, near_duplicate_bits)
    ]
    groups = connected_groups(len(prints.files), pairs)
    if policy == "kaggle":
        if not any(f.folder_split == "train" for f in prints.files):
            raise ValueError(f"--split kaggle needs a train/ folder in {root}; use --split clean")
        assignment = [f.folder_split for f in prints.files]
        dropped = []
    else:
        keep, dropped = _drop_identical_copies(prints)
        assignment = [None] * len(prints.files)
        for i, split in _assign_groups(prints, groups, keep, seed, validation_fraction, test_fraction).items():
            assignment[i] = split
    files = {s: [] for s in SPLITS}
    for f, split in zip(prints.files, assignment):
        if split is not None:
            files[split].append(f)
    train_groups = {groups[i] for i, s in enumerate(assignment) if s == "train"}
    leaked = {
        s: sorted(prints.files[i].path for i, a in enumerate(assignment) if a == s and groups[i] in train_groups)
        for s in SPLITS[1:]
    }
    digest = hashlib.sha256(
        "\n".join(sorted(f"{f.path}\t{h}" for f, h in zip(prints.files, prints.sha256))).encode()
    ).hexdigest()
    return SplitPlan(
        policy=policy,
        seed=seed,
        class_names=class_names,
        files={s: sorted(v, key=lambda f: f.path) for s, v in files.items()},
        skipped=prints.skipped,
        dropped_copies=dropped,
        leaked=leaked,
        fingerprint=digest,
        near_duplicate_bits=near_duplicate_bits,
    )


def _drop_identical_copies(prints: Fingerprints) -> tuple[set[int], list[tuple[str, str]]]:
    """Keep one file per (bytes, class): the same photo twice in a split would count twice."""
    first, keep, dropped = {}, set(), []
    for i, (f, h) in enumerate(zip(prints.files, prints.sha256)):
        key = (h, f.label)
        if key in first:
            dropped.append((f.path, prints.files[first[key]].path))
        else:
            first[key] = i
            keep.add(i)
    return keep, dropped


def _assign_groups(prints, groups, keep, seed, validation_fraction, test_fraction) -> dict[int, str]:
    """Assign whole duplicate groups to splits, per class, filling test, then validation, then train."""
    members = defaultdict(list)
    for i in sorted(keep):
        members[groups[i]].append(i)
    by_class = defaultdict(list)
    for gid, idx in members.items():
        # A group that spans classes (the same photo filed under two names) goes with its first member.
        by_class[prints.files[idx[0]].label].append(gid)
    rng = np.random.default_rng(seed)
    assignment = {}
    for label in sorted(by_class):
        # Sort by content before shuffling, so the result does not depend on file names or scan order.
        gids = sorted(by_class[label], key=lambda g: prints.sha256[members[g][0]])
        gids = [gids[k] for k in rng.permutation(len(gids))]
        total = sum(len(members[g]) for g in gids)
        targets = {"test": round(test_fraction * total), "validation": round(validation_fraction * total)}
        filled = Counter()
        for gid in gids:
            split = next((s for s in ("test", "validation") if filled[s] < targets[s]), "train")
            filled[split] += len(members[gid])
            for i in members[gid]:
                assignment[i] = split
    return assignment


def load_images(root, files: list[ImageFile], size: int, progress: bool = True, path: Path | None = None):
    """Decode and resize files to (N, size, size, 3) uint8; unreadable ones are dropped and reported.

    With ``path``, each photo is written as it is decoded into an ``.npy`` file there, returned as a
    ``cache.StoredArray``: the photos then take page cache the system can reclaim, not memory of their own.
    """
    kept, skipped = [], []

    def decoded():
        for f in tqdm(files, desc=f"loading images at {size}px", unit="img", disable=not progress):
            try:
                photo = images.load_for_model(f"{root}/{f.path}", size)[1]
            except (OSError, images.ImageError) as err:
                skipped.append((f.path, str(err)))
                continue
            kept.append(f)
            yield photo[None]

    shape = (len(files), size, size, 3)
    if path is None or not files:
        photos = np.zeros(shape, np.uint8)
        for row, photo in enumerate(decoded()):
            photos[row] = photo[0]
        return photos[: len(kept)], kept, skipped
    return cache.write_rows(path, shape, np.uint8, decoded()), kept, skipped
