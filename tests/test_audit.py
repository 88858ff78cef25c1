import json
import shutil
import subprocess
import sys
from math import comb

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT, SHARED_DATA, TINY_CLASSES, make_photo, needs_shared
from core import audit, dataset

SCRIPT = ROOT / "scripts" / "audit_data.py"


def distinct_photo(colour, rng) -> Image.Image:
    """A tiny-dataset photo under a random 8x8 light pattern.

    The plain photos differ only by their blob, and many pairs of them lie within 6 bits of each other by
    perceptual hash; the pattern puts unrelated photos 14 or more bits apart, so only planted copies pair.
    """
    photo = np.asarray(make_photo(colour, rng), np.float32)
    pattern = np.kron(rng.uniform(0.25, 1.0, (8, 8)), np.ones((10, 10)))[..., None]
    return Image.fromarray(np.clip(photo * pattern, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """4 classes x (4 train, 1 validation, 1 test) unrelated photos, plus three planted copies and a broken file."""
    root = tmp_path_factory.mktemp("audit") / "data"
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("validation", 1), ("test", 1)):
        for name, colour in TINY_CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                distinct_photo(colour, rng).save(folder / f"Image_{i}.jpg", quality=90)
    # 1. The same bytes in train and test: the test image is not unseen.
    shutil.copy(root / "train/apple/Image_0.jpg", root / "test/apple/Image_copy.jpg")
    # 2. A mirrored, enlarged, re-encoded copy in validation: different bytes, the same photo.
    mirrored = Image.open(root / "train/banana/Image_1.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mirrored.resize((120, 120)).save(root / "validation/banana/Image_mirror.png")
    # 3. One photo filed under two classes, both in train.
    shutil.copy(root / "train/carrot/Image_2.jpg", root / "train/peas/Image_carrot.jpg")
    (root / "train/apple/Image_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def _pairs(pairs):
    return [(p.a.path, p.b.path) for p in pairs]


def test_audit_finds_exactly_the_planted_copies(planted):
    result = audit.audit(planted)
    assert result.images == 4 * 6 + 3
    assert [path for path, _ in result.skipped] == ["train/apple/Image_broken.jpg"]
    assert result.counts.loc["apple"].to_dict() == {"train": 4, "validation": 1, "test": 2}
    assert result.counts.loc["peas"].to_dict() == {"train": 5, "validation": 1, "test": 1}

    # Sorted with the cross-class pair first.
    assert _pairs(result.exact_pairs) == [
        ("train/carrot/Image_2.jpg", "train/peas/Image_carrot.jpg"),
        ("train/apple/Image_0.jpg", "test/apple/Image_copy.jpg"),
    ]
    cross_class, leak = result.exact_pairs
    assert cross_class.cross_class and not cross_class.cross_split and cross_class.distance == 0
    assert leak.cross_split and not leak.cross_class
    [near] = result.near_pairs
    assert (near.a.path, near.b.path) == ("train/banana/Image_1.jpg", "validation/banana/Image_mirror.png")
    assert not near.exact and near.cross_split and not near.cross_class
    assert near.distance <= dataset.NEAR_DUPLICATE_BITS

    assert result.with_train_duplicate == {
        "validation": ["validation/banana/Image_mirror.png"],
        "test": ["test/apple/Image_copy.jpg"],
    }
    summary = result.to_json()
    assert {k: summary[k] for k in (
        "images", "skipped", "classes", "exact_duplicate_pairs", "near_duplicate_pairs", "distinct_images",
        "test_images", "test_with_train_duplicate", "validation_images", "validation_with_train_duplicate",
        "near_duplicate_bits",
    )} == {
        "images": 27, "skipped": 1, "classes": 4, "exact_duplicate_pairs": 2, "near_duplicate_pairs": 1,
        "distinct_images": 24, "test_images": 5, "test_with_train_duplicate": 1, "validation_images": 5,
        "validation_with_train_duplicate": 1, "near_duplicate_bits": dataset.NEAR_DUPLICATE_BITS,
    }
    assert summary["exact_breakdown"] == {"within_split": 1, "cross_split": 1, "same_class": 1, "cross_class": 1}
    assert summary["near_breakdown"] == {"within_split": 0, "cross_split": 1, "same_class": 1, "cross_class": 0}
    assert summary["splits"] == {"train": 17, "validation": 5, "test": 5}
    assert json.loads(json.dumps(summary)) == summary


def test_classes_sharing_a_byte_identical_photo_are_grouped(planted, tmp_path):
    # The planted photo under carrot and peas joins those two; a near copy across classes joins nothing.
    assert audit.audit(planted).classes_sharing_a_photo() == [["carrot", "peas"]]
    copy = tmp_path / "data"
    shutil.copytree(planted, copy)
    Image.open(copy / "train/apple/Image_1.jpg").save(copy / "train/banana/Image_apple.jpg", quality=70)
    shutil.copy(copy / "train/peas/Image_3.jpg", copy / "test/apple/Image_peas.jpg")
    assert audit.audit(copy).classes_sharing_a_photo() == [["apple", "carrot", "peas"]]


def test_near_duplicates_never_count_byte_identical_pairs(planted):
    # At 64 bits every pair is "near"; the byte-identical ones are still counted only as exact.
    result = audit.audit(planted, near_duplicate_bits=64)
    assert len(result.near_pairs) == comb(result.images, 2) - len(result.exact_pairs)
    assert not {frozenset(p) for p in _pairs(result.near_pairs)} & {frozenset(p) for p in _pairs(result.exact_pairs)}
    with pytest.raises(ValueError, match="0..64"):
        audit.audit(planted, near_duplicate_bits=65)


def test_class_folders_without_splits(planted, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(planted / "train", flat)
    result = audit.audit(flat)
    assert list(result.counts.columns) == [audit.ALL]
    assert result.split_size(audit.ALL) == 4 * 4 + 1
    assert result.test_with_train_duplicate == 0 and result.validation_with_train_duplicate == 0
    assert _pairs(result.exact_pairs) == [("carrot/Image_2.jpg", "peas/Image_carrot.jpg")]
    assert result.to_json()["test_images"] == 0


def test_script_json_is_the_last_line(planted):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(planted), "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert {"images", "exact_duplicate_pairs", "near_duplicate_pairs", "test_with_train_duplicate"} <= set(summary)
    assert (summary["images"], summary["exact_duplicate_pairs"], summary["near_duplicate_pairs"]) == (27, 2, 1)
    assert summary["test_with_train_duplicate"] == 1
    report = "\n".join(lines[:-1])
    assert "Test images with an exact or near duplicate in train: 1 of 5" in report
    assert "train/carrot/Image_2.jpg  =  train/peas/Image_carrot.jpg" in report


def test_script_fails_cleanly_on_a_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(missing)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: dataset folder not found: {missing}"]


def _page(tiny_results) -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / "data.py"), default_timeout=60)
    at.session_state["artifacts"] = str(tiny_results)
    return at.run()


def test_data_page_audits_the_folder_and_shows_pairs(tiny_results, planted):
    at = _page(tiny_results)
    assert not at.exception
    assert [s.value for s in at.subheader] == ["Images per split and class", "Sample photos", "Duplicate pairs"]
    assert at.slider[0].value == dataset.NEAR_DUPLICATE_BITS
    assert [t.label for t in at.tabs] == ["Chart", "Table"]  # each at the page's full width
    counts = at.tabs[1].dataframe[0].value
    assert list(counts.columns)[-1] == "total" and (counts["total"] == counts.drop(columns="total").sum(axis=1)).all()

    at.text_input[0].set_value(str(planted)).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Exact pairs"] == "2" and metrics["Near pairs"] == "1" and metrics["Test seen in train"] == "1/5"
    headers = [m.value for m in at.markdown if m.value.startswith("**Exact") or m.value.startswith("**Near")]
    assert len(headers) == 3
    [cross_class] = [c for c in at.checkbox if c.label == "Across classes only"]
    cross_class.check().run()
    headers = [m.value for m in at.markdown if m.value.startswith("**Exact") or m.value.startswith("**Near")]
    assert headers == ["**Exact copy (same bytes)** · :red[across classes]"]


def test_data_page_without_the_dataset_shows_what_the_result_set_records(tiny_results, tmp_path):
    at = _page(tiny_results)
    at.text_input[0].set_value(str(tmp_path / "moved away")).run()
    assert not at.exception
    assert "not on this machine" in at.info[0].value
    assert [s.value for s in at.subheader] == ["Images per split and class", "Sample photos"]
    assert {m.label for m in at.metric} >= {"Images in the split", "Copies dropped", "Leaked into validation / test"}


@needs_shared(SHARED_DATA)
def test_audit_of_the_real_copy():
    result = audit.audit(SHARED_DATA)
    assert result.images == 2349 and result.split_size("test") == 115
    assert result.test_with_train_duplicate >= 105
    cross_class = {(p.a.path, p.b.path) for p in result.exact_pairs if p.cross_class}
    assert ("train/bell pepper/Image_30.jpg", "train/capsicum/Image_4.jpg") in cross_class
    assert ("train/chilli pepper/Image_32.jpg", "train/jalepeno/Image_17.jpg") in cross_class
    assert result.classes_sharing_a_photo() == [["bell pepper", "capsicum"], ["chilli pepper", "jalepeno"]]
