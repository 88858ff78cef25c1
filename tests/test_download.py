import sys
import types

import pytest

from conftest import make_dataset
from core import download


def test_offline_download_fails_with_one_line_naming_the_alternative(monkeypatch, tmp_path):
    def offline(handle):
        raise ConnectionError("Max retries exceeded with url ... NameResolutionError")

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=offline))
    with pytest.raises(download.DownloadFailed) as caught:
        download.download(tmp_path / "out")
    message = str(caught.value)
    assert "\n" not in message and "--data-dir" in message and download.KAGGLE_DATASET in message


def test_download_copies_the_kaggle_layout(monkeypatch, tmp_path):
    cache = make_dataset(tmp_path / "cache" / "versions" / "1", per_split=(("train", 2), ("test", 1)))
    monkeypatch.setitem(sys.modules, "kagglehub",
                        types.SimpleNamespace(dataset_download=lambda handle: str(tmp_path / "cache")))
    out = download.download(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["test", "train"]
    assert len(list((out / "train" / "apple").iterdir())) == 2
    assert cache.exists()
