"""The linear-probe reference: C chosen on validation only, stored in the result set, shown on the pages.

The frozen backbones are replaced by a stand-in feature extractor (colour statistics of the photos), so the
test needs no ImageNet weights; everything after the features (split loading, cache, fit, storage, the
paired tests, the pages) is the real code.
"""

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import ROOT
from test_pages import page
from core import artifacts, features, probe
from core.specs import MODEL_IDS

sys.path.insert(0, str(ROOT / "scripts"))
import evaluate  # noqa: E402


class ColourStatistics:
    """Stands in for the frozen backbones: mean colour per cell of a grid (VGG16 4x4, ResNet50 2x2)."""

    GRID = {"vgg16": 4, "resnet50": 2}

    def __init__(self, image_size, weights_dir=None, backbones=features.FEATURE_BACKBONES):
        self.image_size, self.backbones = int(image_size), tuple(backbones)

    def __call__(self, photos, batch_size=32, backbones=None):
        out = {}
        for name in backbones or self.backbones:
            g = self.GRID[name]
            cells = photos.reshape(len(photos), g, self.image_size // g, g, self.image_size // g, 3).mean(axis=(2, 4))
            out[name] = cells.reshape(len(photos), -1).astype(np.float32)
        return out


@pytest.fixture(scope="module")
def probed(tiny_results, tiny_data, tmp_path_factory):
    """A copy of the tiny result set with a linear probe added by ``scripts/evaluate.py --linear-probe``."""
    copy = tmp_path_factory.mktemp("probed") / "out"
    shutil.copytree(tiny_results, copy)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features, "FeatureExtractor", ColourStatistics)
        cache = copy.parent / "cache"
        assert evaluate.main(["--artifacts", str(copy), "--data-dir", str(tiny_data), "--linear-probe",
                              "--cache-dir", str(cache)]) == 0
    assert len(list(cache.glob("*.npz"))) == 2  # both backbones' features cached for the next run
    return copy


def clusters(rng, centres, per_class, spread):
    labels = np.repeat(np.arange(len(centres)), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), centres.shape[1])), labels


def test_c_is_chosen_by_validation_loss_and_the_test_split_never_changes_it():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 20))
    split = {s: clusters(rng, centres, n, 1.5) for s, n in (("train", 30), ("validation", 20), ("test", 20))}
    feats, labels = {s: x for s, (x, _) in split.items()}, {s: y for s, (_, y) in split.items()}
    grid = (1e-4, 1e-2, 1.0, 100.0)
    probs, choice = probe.fit(feats, labels, 6, grid)
    losses = [t["loss"] for t in choice["grid"]]
    assert choice["C"] == grid[int(np.argmin(losses))] and len(set(losses)) == 4
    assert probs.shape == (100, 6) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs[:, 5] == 0).all()  # a class without training photos
    assert (probs.argmax(axis=1) == labels["test"]).mean() > 0.8
    shuffled = {**feats, "test": rng.permutation(feats["test"])}
    assert probe.fit(shuffled, labels, 6, grid)[1] == choice


def test_probe_is_stored_read_back_and_paired_with_every_model(probed):
    rs = artifacts.open_result_set(probed)
    assert {artifacts.PROBE, artifacts.PROBE_ARRAYS} <= set(rs.manifest["files"])
    info, predictions = rs.linear_probe()
    assert info["version"] == artifacts.PROBE_VERSION and set(predictions) == {"vgg16", "resnet50"}
    test_files = rs.predictions("cnn").files
    for backbone, preds in predictions.items():
        np.testing.assert_array_equal(preds.files, test_files)
        assert info["backbones"][backbone]["metrics"]["accuracy"] == pytest.approx(preds.correct.mean())
        assert info["backbones"][backbone]["C"] in probe.C_GRID
    table = probe.reference_table(rs)
    assert list(table["model"]) == ["Linear probe (VGG16)", "Linear probe (ResNet50)"]
    assert (table["accuracy_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["accuracy_high"]).all()
    assert table["accuracy"].min() > 0.9  # colours are easy: the stand-in features separate the 4 classes
    tests = probe.paired_tests(rs)
    assert len(tests) == 12 and sorted(tests[tests["own_backbone"]]["id"]) == sorted(
        ["vgg16", "vgg16_attention", "resnet50", "resnet50_attention"]
    )
    assert len(probe.flags(tests)) == 4 and all(line.startswith("⚠") for line in probe.flags(tests))
    only_resnet = probe.flags(tests[tests["backbone"] == "resnet50"])
    assert sum("not compared: this result set has no VGG16 probe" in line for line in only_resnet) == 2


def test_with_seeds_a_model_beats_its_probe_only_by_a_mean_margin_beyond_their_spread(probed):
    tests = probe.paired_tests(artifacts.open_result_set(probed))
    assert (tests["seed_runs"] == 1).all() and (tests["seed_sd"] == 0).all()  # one run: no spread known
    row = tests[(tests["id"] == "resnet50") & tests["own_backbone"]].assign(beats_probe=True, seed_runs=3, seed_sd=0.02)
    (within,) = probe.flags(row.assign(seed_margin=0.015))
    (beyond,) = probe.flags(row.assign(seed_margin=0.03))
    assert within.startswith("⚠") and "+1.5 points, not more than their spread (SD 2.0 points)" in within
    assert not beyond.startswith("⚠") and "+3.0 points, more than their spread" in beyond
    # Beyond the seeds' spread but not significant on the stored run's paired photos: flagged, and said so.
    (unpaired,) = probe.flags(row.assign(seed_margin=0.03, beats_probe=False))
    assert unpaired.startswith("⚠") and "above its backbone's linear probe over its seeds, but not significantly" in unpaired


def test_a_damaged_or_newer_probe_reads_as_none_and_the_set_still_opens(probed, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(probed, copy)
    info = json.loads((copy / artifacts.PROBE).read_text())
    manifest = json.loads((copy / artifacts.MANIFEST).read_text())
    (copy / artifacts.PROBE).write_text(json.dumps({**info, "version": artifacts.PROBE_VERSION + 1}))
    manifest["files"][artifacts.PROBE] = artifacts.sha256_file(copy / artifacts.PROBE)
    (copy / artifacts.MANIFEST).write_text(json.dumps(manifest))
    rs = artifacts.open_result_set(copy)
    assert rs.linear_probe() is None and set(rs.models) == set(MODEL_IDS)
    (copy / artifacts.PROBE_ARRAYS).write_bytes(b"damaged")
    assert artifacts.open_result_set(copy).linear_probe() is None


def test_overview_and_statistics_show_the_probe_as_a_reference_not_a_model(probed):
    at = page("overview", probed)
    assert not at.exception
    assert len(at.dataframe[0].value) == 6  # the models' table: no seventh row
    reference = next(d.value for d in at.dataframe if "Reference" in d.value.columns)
    assert list(reference["Reference"]) == ["Linear probe (VGG16)", "Linear probe (ResNet50)"]
    text = " ".join(m.value for m in at.markdown)
    assert text.count("beat its backbone's linear probe") == 4

    at = page("statistics", probed)
    assert not at.exception
    grid = next(d.value for d in at.dataframe if "Linear probe (VGG16)" in d.value.columns)
    assert len(grid) == 6 and list(grid.columns) == ["Model", "Linear probe (ResNet50)", "Linear probe (VGG16)"]
    assert all(" vs " in cell and "p " in cell for cell in grid.iloc[:, 1:].to_numpy().ravel())


def test_a_set_made_before_the_probe_opens_and_says_how_to_add_one(tiny_results):
    assert artifacts.open_result_set(tiny_results).linear_probe() is None
    at = page("overview", tiny_results)
    assert not at.exception and not any("Reference" in d.value.columns for d in at.dataframe)
    assert any("--linear-probe" in c.value for c in at.caption)
