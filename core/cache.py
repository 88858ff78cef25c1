"""Frozen-trunk outputs on disk, so that training memory does not grow with every cached view.

Each array is one ``.npy`` file under ``<run folder>/.cache/<backbone>-<key>/``, written batch by batch
and then read back through ``np.memmap``: the operating system pages in the rows a training batch
gathers. The key hashes everything the outputs depend on (dataset, image size, views, seed, precision,
trunk weights), so the two models of a backbone and a resumed run reuse the files, and a changed run
never reads stale ones. A file is written under a temporary name and renamed when complete, so an
interrupted run leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

CACHE_FOLDER = ".cache"
CACHE_DTYPE = np.float16


def cache_folder(run_root: Path, backbone: str, **depends_on) -> Path:
    """The folder of one backbone's cached outputs for these settings."""
    key = hashlib.sha256(json.dumps(depends_on, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(run_root) / CACHE_FOLDER / f"{backbone}-{key}"


def predict_to_file(forward, output_shape, inputs: np.ndarray, path: Path, batch_size: int) -> np.ndarray:
    """``forward`` (a compiled model, see ``models.compiled_forward``) over ``inputs`` in batches, stored as
    float16 in ``path``; the file if it is already there. ``output_shape``: one output row's shape."""
    path = Path(path)
    shape = (len(inputs), *output_shape)
    if not len(inputs):
        return np.zeros(shape, CACHE_DTYPE)  # a memory map cannot be empty
    if path.exists():
        stored = np.load(path, mmap_mode="r")
        if stored.shape == shape:
            return stored
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=CACHE_DTYPE, shape=shape)
    for start in range(0, len(inputs), batch_size):
        batch = np.asarray(inputs[start : start + batch_size], np.float32)
        out[start : start + len(batch)] = np.asarray(forward(batch), np.float32).astype(CACHE_DTYPE)
    out.flush()
    del out
    partial.replace(path)
    return np.load(path, mmap_mode="r")


def remove(run_root: Path) -> None:
    """Delete every cached output of a run."""
    shutil.rmtree(Path(run_root) / CACHE_FOLDER, ignore_errors=True)
