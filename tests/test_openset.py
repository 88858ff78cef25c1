"""The open-set verdict on generated features: clusters stand for classes, some are never seen."""

import json
import shutil

import numpy as np

from core import artifacts, openset


def clustered(rng, centres, per_class, spread=0.35):
    labels = np.repeat(np.arange(len(centres)), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), centres.shape[1])), labels


def test_held_out_cluster_is_unknown_and_threshold_keeps_95_percent_of_validation():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 64))
    known = centres[:5]
    train, train_labels = clustered(rng, known, 60)
    validation, _ = clustered(rng, known, 40)
    test, _ = clustered(rng, known, 40)
    strange, _ = clustered(rng, centres[5:], 50)
    detector = openset.Detector.fit(train, train_labels, validation, keep=0.95)
    assert abs((~detector.unknown(validation)).mean() - 0.95) <= 0.01
    assert (~detector.unknown(test)).mean() >= 0.85
    assert detector.unknown(strange).mean() >= 0.95
    assert openset.auroc(detector.scores(test), detector.scores(strange)) > 0.99
    # Both parts are standardised on validation: there, each has mean 0 and spread 1.
    standardised = (detector.parts(validation) - detector.standardise[:, 0]) / detector.standardise[:, 1]
    np.testing.assert_allclose(standardised.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(standardised.std(axis=0), 1, atol=1e-4)


def test_a_near_twin_of_a_known_class_is_harder_to_flag_than_a_distinct_class():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 32))
    twin, distinct = centres[0] + 0.15 * rng.normal(size=32), rng.normal(size=32)
    train, train_labels = clustered(rng, centres, 40)
    detector = openset.Detector.fit(train, train_labels, clustered(rng, centres, 20)[0])
    known = detector.scores(clustered(rng, centres, 20)[0])
    twin_auroc = openset.auroc(known, detector.scores(clustered(rng, twin[None], 50)[0]))
    distinct_auroc = openset.auroc(known, detector.scores(clustered(rng, distinct[None], 50)[0]))
    assert twin_auroc < 0.8 and distinct_auroc > 0.99


def test_protocol_separates_clustered_classes_but_not_structureless_ones():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 48))
    names = [f"class {i}" for i in range(10)]
    features, labels = {}, {}
    for split, n in (("train", 30), ("validation", 10), ("test", 10)):
        x, y = clustered(rng, centres, n)
        features[split] = {"vgg16": x, "resnet50": x[:, ::-1] + 0.1 * rng.normal(size=x.shape)}
        labels[split] = y
    report = openset.held_out_protocol(features, labels, names, folds=5)
    assert set(report) == {"vgg16", "resnet50", openset.ENSEMBLE}
    for figures in report.values():
        assert figures["auroc"] > 0.98 and figures["unknown_accepted"] < 0.1 and figures["known_test_kept"] > 0.85
        # Every class is held out once; listed hardest first.
        assert sorted(figures["class_auroc"]) == names
        assert list(figures["class_auroc"].values()) == sorted(figures["class_auroc"].values())
        assert min(figures["class_auroc"].values()) > 0.95
        # Known: each fold's other 8 classes' test photos; unknown: every photo of every class once.
        assert figures["known_test_photos"] == 5 * 80 and figures["unknown_photos"] == 10 * 50

    noise = {s: {b: rng.normal(size=f.shape) for b, f in fs.items()} for s, fs in features.items()}
    report = openset.held_out_protocol(noise, labels, names, folds=5)
    assert all(abs(f["auroc"] - 0.5) < 0.1 for f in report.values())


def test_classes_held_out_together_share_a_fold_and_the_other_folds_stay():
    names = [f"class {i}" for i in range(31)]
    alone = openset.held_out_folds(names, folds=5)
    assert sorted(np.concatenate(alone).tolist()) == list(range(31)) and {len(f) for f in alone} == {6, 7}
    fold_of = {c: f for f, fold in enumerate(alone) for c in fold}
    apart = next((a, b) for a in range(31) for b in range(31) if fold_of[a] != fold_of[b])
    group = [names[apart[0]], names[apart[1]], "not a class of this set"]
    together = openset.held_out_folds(names, folds=5, together=[group])
    assert sorted(np.concatenate(together).tolist()) == list(range(31))
    assert sum(apart[0] in f and apart[1] in f for f in together) == 1
    moved = {c for c in range(31) if not any(c in f and fold_of[c] == i for i, f in enumerate(together))}
    assert len(moved) == 1 and moved <= set(apart)  # only one of the two changed fold


def test_a_twin_class_held_out_alone_is_not_unknown_but_held_out_with_its_twin_it_is():
    # Two names for one produce (the same cluster), as bell pepper and capsicum in the Kaggle dataset.
    rng = np.random.default_rng(2)
    names = [f"class {i}" for i in range(10)]
    folds = openset.held_out_folds(names, folds=5)
    first, second = folds[0][0], folds[1][0]  # in different folds when each class is held out alone
    centres = rng.normal(size=(10, 48))
    centres[second] = centres[first]
    features, labels = {}, {}
    for split, n in (("train", 30), ("validation", 10), ("test", 10)):
        x, y = clustered(rng, centres, n)
        features[split] = {"vgg16": x}
        labels[split] = y
    alone = openset.held_out_protocol(features, labels, names, folds=5)["vgg16"]["class_auroc"]
    twins = [names[first], names[second]]
    together = openset.held_out_protocol(features, labels, names, folds=5, together=[twins])["vgg16"]["class_auroc"]
    assert max(alone[name] for name in twins) < 0.8
    assert min(together[name] for name in twins) > 0.95
    # What evaluate.py --openset stores: the verdict fitted on every class, the twins' protocol as its figures.
    info, arrays, protocols = openset.measure(features, labels, names, 224, together=[twins])
    assert protocols[openset.EACH_ALONE]["vgg16"]["class_auroc"] == alone
    assert protocols[openset.TOGETHER]["vgg16"]["class_auroc"] == together
    assert info["held_out_protocol"] == protocols[openset.TOGETHER] and info["held_out_together"] == [twins]
    stored = openset.from_stored(info, arrays)["vgg16"]
    fitted = openset.fit_detectors(features, labels)["vgg16"]
    assert stored.threshold == fitted.threshold
    np.testing.assert_allclose(stored.scores(features["test"]["vgg16"]), fitted.scores(features["test"]["vgg16"]), atol=1e-3)


def test_auroc_counts_ties_half():
    assert openset.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert openset.auroc(np.array([1.0]), np.array([1.0])) == 0.5
    assert openset.auroc(np.array([2.0]), np.array([1.0])) == 0.0


def fitted(rng, centres, backbones=("resnet50",)):
    features, labels = {}, {}
    for split, n in (("train", 30), ("validation", 10)):
        x, y = clustered(rng, centres, n)
        features[split], labels[split] = {b: x for b in backbones}, y
    return openset.fit_detectors(features, labels)


def test_stored_verdict_flags_the_same_photos_and_marks_each_answer():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(5, 40))
    queries = np.concatenate([clustered(rng, centres[:4], 5)[0], clustered(rng, centres[4:], 20)[0]])
    detectors = fitted(rng, centres[:4])
    info, arrays = openset.to_stored(detectors, {}, 224)
    assert set(info["detectors"]) == {"resnet50", openset.ENSEMBLE}
    assert all(a.dtype in (np.float16, np.float32) for a in arrays.values())  # plain numbers: no pickle
    restored = openset.from_stored(info, arrays)
    # Rounded to float16 already when fitted: the stored detector scores exactly as the measured one.
    features = openset.joined({"resnet50": queries}, ["resnet50"])
    np.testing.assert_array_equal(restored["resnet50"].scores(features), detectors["resnet50"].scores(features))
    flags = openset.verdicts(info, restored, {"resnet50": queries}, ["vgg16", "resnet50", "cnn"])
    np.testing.assert_array_equal(flags["resnet50"], detectors["resnet50"].unknown(features))
    # No VGG16 features stored: the VGG16 and CNN models fall back on the ensemble's detector.
    np.testing.assert_array_equal(flags["vgg16"], flags[openset.ENSEMBLE])
    assert flags[openset.ENSEMBLE][20:].all()

    summary = {"models": {"vgg16": {}, "cnn": {}}, "ensemble": {}}
    marked = openset.mark_unknown(summary, {"vgg16": True, "cnn": False, openset.ENSEMBLE: True})
    assert marked["models"]["vgg16"]["unknown"] is True and marked["ensemble"]["unknown"] is True
    assert openset.mark_unknown(summary, None)["models"]["cnn"]["unknown"] is None


def test_result_set_reads_its_verdict_back_and_an_earlier_layout_as_none(tmp_path):
    rng = np.random.default_rng(4)
    (tmp_path / artifacts.MANIFEST).write_text(json.dumps({"files": {}}))
    info, arrays = openset.to_stored(fitted(rng, rng.normal(size=(4, 24)), ("vgg16", "resnet50")), {}, 224)
    artifacts.write_openset(tmp_path, info, arrays)
    manifest = json.loads((tmp_path / artifacts.MANIFEST).read_text())
    assert {artifacts.OPENSET, artifacts.OPENSET_ARRAYS} <= set(manifest["files"])
    stored = json.loads((tmp_path / artifacts.OPENSET).read_text())
    assert stored["version"] == artifacts.OPENSET_VERSION and stored["detectors"] == info["detectors"]
    restored_info, restored_arrays = artifacts.ResultSet(tmp_path, manifest).openset()
    assert restored_info["detectors"] == info["detectors"] and set(restored_arrays) == set(arrays)
    # The earlier kNN verdict's layout had no version: read as no verdict, not misread.
    earlier = {k: v for k, v in stored.items() if k != "version"}
    (tmp_path / artifacts.OPENSET).write_text(json.dumps(earlier))
    manifest["files"][artifacts.OPENSET] = artifacts.sha256_file(tmp_path / artifacts.OPENSET)
    assert artifacts.ResultSet(tmp_path, manifest).openset() is None


def test_overview_shows_each_detectors_figures_and_hardest_classes(tiny_results, tmp_path):
    from test_pages import page

    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    names = artifacts.open_result_set(copy).class_names
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(len(names), 24))
    features, labels = {}, {}
    for split, n in (("train", 20), ("validation", 10), ("test", 10)):
        x, labels[split] = clustered(rng, centres, n)
        features[split] = {"vgg16": x, "resnet50": x[:, ::-1]}
    protocol = openset.held_out_protocol(features, labels, names, folds=2)
    artifacts.write_openset(copy, *openset.to_stored(openset.fit_detectors(features, labels), protocol, 224))
    at = page("overview", copy)
    assert not at.exception
    lines = [m.value for m in at.markdown if "known test photos kept" in m.value]
    assert len(lines) == 3
    # Each detector named by the features it reads, with the models whose verdict it gives.
    shown = {"vgg16": "VGG16 features** (VGG16 (fine-tuned), VGG16 + attention)",
             "resnet50": "ResNet50 features** (ResNet50 (fine-tuned), ResNet50 + attention)",
             openset.ENSEMBLE: "both backbones' features** (CNN, CNN + attention, the average)"}
    for name, line in zip(shown, lines):
        hardest = next(iter(protocol[name]["class_auroc"]))
        assert line.startswith(f"- **{shown[name]}: AUROC {protocol[name]['auroc']:.3f}") and f"(AUROC): {hardest} " in line
