"""Arrays on disk (decoded photos, their views, frozen-trunk outputs), so that training memory does not grow
with the number of photos.

Each array is one ``.npy`` file, written block by block through a plain file and read back a few rows at a
time with positioned reads (``StoredArray``), never memory-mapped: the pages of a memory map count in the
process's resident memory for as long as it is open, so an epoch that reads every cached row would show
(and, for the system, hold) the whole cache; read, the rows pass through the kernel's page cache, which is
shared and reclaimable. Trunk outputs live under ``<run folder>/.cache/<backbone>-<key>/``; the key
hashes everything they depend on (dataset, image size, views, seed, precision, the trunk's weights), so the two
models of a backbone and a resumed run reuse the files, and a changed run never reads stale ones. A file is
written under a temporary name and renamed when complete, so an interrupted run leaves nothing that looks
finished.
"""

from __future__ import annotations

import hashlib
import json
import operator
import shutil
from pathlib import Path

import numpy as np

CACHE_FOLDER = ".cache"
CACHE_DTYPE = np.float16


def cache_folder(run_root: Path, backbone: str, **depends_on) -> Path:
    """The folder of one backbone's cached outputs for these settings."""
    key = hashlib.sha256(json.dumps(depends_on, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(run_root) / CACHE_FOLDER / f"{backbone}-{key}"


class StoredArray:
    """A read-only ``.npy`` file indexed like an array along its first axis (an int, a slice, or an array of
    row numbers), each access one read of the rows it asks for."""

    def __init__(self, path, rows: int | None = None):
        """``rows``: only the first ``rows`` rows (those ``write_rows`` was given)."""
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, self.dtype = read_header(f)
            self._offset = f.tell()
        if fortran_order:
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not read by rows")
        self.shape = (shape[0] if rows is None else min(rows, shape[0]), *shape[1:])
        self._row_bytes = self.dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype=None, copy=None):
        return self[:] if dtype is None else self[:].astype(dtype)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self._read_run(start, max(stop - start, 0))
            index = np.arange(start, stop, step)
        if isinstance(index, tuple):
            raise TypeError("a StoredArray is indexed by rows only; index the rows it returns")
        if np.ndim(index) == 0:
            row = operator.index(index)
            return self._read_run(int(self._checked(np.array([row]))[0]), 1)[0]
        rows = self._checked(np.asarray(index, np.int64).ravel())
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        with open(self.path, "rb", buffering=0) as f:
            for k, row in enumerate(rows):
                self._read_into(f, int(row), out[k : k + 1])
        return out

    def _checked(self, rows: np.ndarray) -> np.ndarray:
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        return rows

    def _read_run(self, start: int, count: int) -> np.ndarray:
        out = np.empty((count, *self.shape[1:]), self.dtype)
        if count:
            with open(self.path, "rb", buffering=0) as f:
                self._read_into(f, start, out)
        return out

    def _read_into(self, f, start: int, out: np.ndarray) -> None:
        f.seek(self._offset + start * self._row_bytes)
        if f.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise OSError(f"{self.path} is shorter than its header says")


def write_rows(path, shape: tuple, dtype, blocks) -> StoredArray:
    """Write an ``.npy`` file of ``shape`` from ``blocks`` (arrays of consecutive rows, in order) and return it
    as a ``StoredArray`` of the rows written (rows never given are stored as zeros)."""
    path, dtype = Path(path), np.dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    written = 0
    with open(partial, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        np.lib.format.write_array_header_1_0(f, header)
        data_start = f.tell()
        for block in blocks:
            block = np.ascontiguousarray(block, dtype)
            f.write(memoryview(block).cast("B"))
            written += len(block)
        f.truncate(data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    partial.replace(path)
    return StoredArray(path, rows=written)


def predict_to_file(forward, output_shape, inputs, path: Path, batch_size: int):
    """``forward`` (a compiled model, see ``models.compiled_forward``) over ``inputs`` in batches, stored as
    float16 in ``path``; the file if it is already there. ``output_shape``: one output row's shape."""
    path = Path(path)
    shape = (len(inputs), *output_shape)
    if not len(inputs):
        return np.zeros(shape, CACHE_DTYPE)
    if path.exists():
        stored = StoredArray(path)
        if stored.shape == shape:
            return stored
    return write_rows(path, shape, CACHE_DTYPE, forward_blocks(forward, inputs, batch_size))


def forward_blocks(forward, inputs, batch_size: int, dtype=CACHE_DTYPE):
    """``forward`` over ``inputs`` (an array or a ``StoredArray``), ``batch_size`` rows at a time: one output
    block per batch, as ``dtype``, so that neither the inputs nor the outputs are ever all in memory."""
    for start in range(0, len(inputs), batch_size):
        yield np.asarray(forward(np.asarray(inputs[start : start + batch_size], np.float32))).astype(dtype)


def remove(run_root: Path) -> None:
    """Delete every cached output of a run."""
    shutil.rmtree(Path(run_root) / CACHE_FOLDER, ignore_errors=True)
