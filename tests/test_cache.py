"""On-disk arrays: what a StoredArray reads is what was written, indexed like the array it stands for."""

import numpy as np
import pytest

from core import cache


def written(tmp_path, array, blocks=3, name="a.npy"):
    return cache.write_rows(tmp_path / name, array.shape, array.dtype, np.array_split(array, blocks))


def test_a_stored_array_reads_back_rows_slices_and_gathers_as_numpy_would(tmp_path):
    array = np.random.default_rng(0).normal(size=(11, 4, 3)).astype(np.float16)
    stored = written(tmp_path, array)
    assert stored.shape == array.shape and len(stored) == 11 and stored.ndim == 3 and stored.dtype == np.float16
    assert np.array_equal(np.load(tmp_path / "a.npy"), array)  # a plain .npy file, for numpy too
    for index in (0, 10, -1, np.int64(3)):
        assert np.array_equal(stored[index], array[index])
    for index in (slice(None), slice(2, 7), slice(-3, None), slice(1, 10, 3), slice(8, 2), [4, 0, 4, -2], np.array([9, 1])):
        assert np.array_equal(stored[index], array[index])
    assert np.array_equal(np.asarray(stored, np.float32), array.astype(np.float32))
    with pytest.raises(IndexError):
        stored[11]
    with pytest.raises(IndexError):
        stored[[0, -12]]
    with pytest.raises(TypeError):
        stored[0, 1]


def test_rows_never_written_are_not_part_of_the_array(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(6, 2)
    stored = cache.write_rows(tmp_path / "b.npy", (10, 2), np.uint8, [array[:4], array[4:]])
    assert stored.shape == (6, 2) and np.array_equal(stored[:], array)
    assert np.load(tmp_path / "b.npy").shape == (10, 2)  # the file keeps its full shape, zeros after


def test_an_interrupted_write_leaves_no_file_that_looks_finished(tmp_path):
    def failing():
        yield np.zeros((2, 3), np.float16)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.write_rows(tmp_path / "c.npy", (4, 3), np.float16, failing())
    assert not (tmp_path / "c.npy").exists()
