import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import make_dataset
from core import dataset, groups


def test_scan_reads_kaggle_layout_and_class_folders(tmp_path):
    kaggle = make_dataset(tmp_path / "kaggle", per_split=(("train", 3), ("test", 2)))
    (kaggle / "train" / "apple" / "Image_x.JPG").write_bytes((kaggle / "train" / "apple" / "Image_0.jpg").read_bytes())
    (kaggle / "train" / "apple" / "notes.txt").write_text("not an image")
    found = dataset.scan(kaggle)
    assert {f.folder_split for f in found} == {"train", "test"}
    assert len(found) == 4 * 3 + 1 + 4 * 2
    assert any(f.path.endswith("Image_x.JPG") for f in found)

    flat = tmp_path / "flat"
    shutil.copytree(kaggle / "train", flat)
    found = dataset.scan(flat)
    assert {f.folder_split for f in found} == {None}
    assert {f.label for f in found} == {"apple", "banana", "carrot", "peas"}


def test_scan_of_empty_folder_says_what_it_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images found"):
        dataset.scan(tmp_path)


def test_corrupt_files_are_skipped_and_reported(tmp_path):
    root = make_dataset(tmp_path / "d", per_split=(("train", 4),))
    (root / "train" / "apple" / "Image_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    plan = dataset.plan_splits(root, "clean", progress=False)
    assert [p for p, _ in plan.skipped] == ["train/apple/Image_broken.jpg"]
    assert sum(len(v) for v in plan.files.values()) == 16


def _plant_duplicates(root):
    """A byte copy and a mirrored, resized copy of one train photo, filed under test/."""
    source = root / "train" / "apple" / "Image_0.jpg"
    shutil.copy(source, root / "test" / "apple" / "Image_copy.jpg")
    mirrored = Image.open(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((120, 120))
    mirrored.save(root / "test" / "apple" / "Image_mirror.png")


def test_clean_split_keeps_duplicate_groups_in_one_split(tmp_path):
    root = make_dataset(tmp_path / "d", per_split=(("train", 20), ("test", 4)))
    _plant_duplicates(root)
    plan = dataset.plan_splits(root, "clean", seed=3, progress=False)
    where = {f.path: split for split, files in plan.files.items() for f in files}
    # The byte copy is dropped (same photo, same class); the mirrored copy stays with its original.
    assert ("test/apple/Image_copy.jpg", "train/apple/Image_0.jpg") in plan.dropped_copies or (
        "train/apple/Image_0.jpg", "test/apple/Image_copy.jpg") in plan.dropped_copies
    kept = "train/apple/Image_0.jpg" if "train/apple/Image_0.jpg" in where else "test/apple/Image_copy.jpg"
    assert where[kept] == where["test/apple/Image_mirror.png"]
    assert plan.leaked == {"validation": [], "test": []}
    counts = plan.counts()
    for label in ("apple", "banana"):
        assert counts["test"][label] >= 3 and counts["validation"][label] >= 3


def test_kaggle_split_keeps_folders_and_records_leakage(tmp_path):
    root = make_dataset(tmp_path / "d", per_split=(("train", 10), ("validation", 2), ("test", 2)))
    _plant_duplicates(root)
    plan = dataset.plan_splits(root, "kaggle", progress=False)
    assert all(f.path.startswith(split) for split, files in plan.files.items() for f in files)
    assert plan.leaked["test"] == ["test/apple/Image_copy.jpg", "test/apple/Image_mirror.png"]


def test_split_is_deterministic_and_round_trips(tmp_path):
    root = make_dataset(tmp_path / "d", per_split=(("train", 20),))
    a = dataset.plan_splits(root, "clean", seed=1, progress=False)
    b = dataset.plan_splits(root, "clean", seed=1, progress=False)
    c = dataset.plan_splits(root, "clean", seed=2, progress=False)
    assert a.to_json() == b.to_json()
    assert a.files != c.files
    restored = dataset.SplitPlan.from_json(json.loads(json.dumps(a.to_json())))
    assert restored.to_json() == a.to_json()


def test_near_duplicate_pairs_are_rotation_and_flip_invariant(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((128, 128))
    other = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((128, 128))
    hashes = np.stack([
        dataset.perceptual_hashes(photo),
        dataset.perceptual_hashes(photo.transpose(Image.Transpose.ROTATE_90)),
        dataset.perceptual_hashes(photo.transpose(Image.Transpose.FLIP_TOP_BOTTOM).resize((100, 100))),
        dataset.perceptual_hashes(other),
    ])
    pairs = {(i, j) for i, j, _ in dataset.near_duplicate_pairs(hashes)}
    assert pairs == {(0, 1), (0, 2), (1, 2)}


def test_grouping_follows_the_dataset_card_and_overrides(tmp_path, caplog):
    mapping = groups.group_classes(["apple", "tomato", "lemon", "chilli pepper", "durian"])
    assert mapping == {
        "apple": "fruit", "tomato": "vegetable", "lemon": "vegetable", "chilli pepper": "vegetable",
        "durian": "vegetable",
    }
    assert "durian" in caplog.text
    override = tmp_path / "groups.json"
    override.write_text(json.dumps({"Tomato": "fruit", "durian": "fruit"}))
    mapping = groups.group_classes(["apple", "tomato", "durian"], groups.load_overrides(override))
    assert mapping == {"apple": "fruit", "tomato": "fruit", "durian": "fruit"}
    assert len(groups.FRUITS) == 10 and len(groups.VEGETABLES) == 26
