import json
import shutil

import pytest

from core import artifacts


@pytest.fixture
def copy_of_results(tiny_results, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_results, target)
    return target


def test_removed_model_folder_is_named_and_the_rest_loads(copy_of_results):
    shutil.rmtree(copy_of_results / "vgg16")
    rs = artifacts.open_result_set(copy_of_results)
    assert "vgg16" not in rs.models and "is missing" in rs.problems["vgg16"]
    assert len(rs.models) == 5


def test_the_photos_are_where_the_set_was_trained_unless_told_otherwise(tiny_data, tiny_results, tmp_path):
    rs = artifacts.open_result_set(tiny_results)
    assert rs.data_root() == str(tiny_data) and rs.data_root(tmp_path) == str(tmp_path)
    assert artifacts.ResultSet(tmp_path, {}).data_root() is None


def test_truncated_or_altered_files_mark_only_that_model(copy_of_results):
    weights = copy_of_results / "resnet50" / artifacts.TOP_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    metrics = copy_of_results / "cnn" / artifacts.METRICS
    metrics.write_text(metrics.read_text().replace('"n"', '"n" ', 1))
    rs = artifacts.open_result_set(copy_of_results)
    assert "top.weights.h5 is damaged" in rs.problems["resnet50"]
    assert "metrics.json is damaged" in rs.problems["cnn"]
    assert sorted(rs.models) == ["cnn_attention", "resnet50_attention", "vgg16", "vgg16_attention"]


def test_folders_that_are_not_result_sets_are_refused(tmp_path, copy_of_results):
    with pytest.raises(artifacts.ResultSetError, match="not a folder"):
        artifacts.open_result_set(tmp_path / "nowhere")
    with pytest.raises(artifacts.ResultSetError, match="no manifest.json"):
        artifacts.open_result_set(tmp_path)
    manifest = copy_of_results / artifacts.MANIFEST
    manifest.write_text("{not json")
    with pytest.raises(artifacts.ResultSetError, match="cannot be read"):
        artifacts.open_result_set(copy_of_results)
    manifest.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(artifacts.ResultSetError, match="schema version 99"):
        artifacts.open_result_set(copy_of_results)


def test_atomic_write_leaves_old_content_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "file.json"
    artifacts.write_json(target, {"v": 1})

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts.os, "replace", fail)
    with pytest.raises(OSError):
        artifacts.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_unwritable_output_folder_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(artifacts.ResultSetError, match="cannot write to"):
        artifacts.ResultSetWriter(blocker / "out", {})
