"""The open-set verdict on generated features: clusters stand for classes, one cluster is never seen."""

import numpy as np

from core import openset


def clustered(rng, centres, per_class, spread=0.35):
    labels = np.repeat(np.arange(len(centres)), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), centres.shape[1])), labels


def test_held_out_cluster_is_unknown_and_threshold_keeps_95_percent_of_validation():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 64))
    known = centres[:5]
    train, _ = clustered(rng, known, 60)
    validation, _ = clustered(rng, known, 40)
    test, _ = clustered(rng, known, 40)
    strange, _ = clustered(rng, centres[5:], 50)
    detector = openset.KnnDetector.fit(train, k=5, dims=32)
    detector.set_threshold(validation, keep=0.95)
    assert abs((~detector.unknown(validation)).mean() - 0.95) <= 0.01
    assert (~detector.unknown(test)).mean() >= 0.85
    assert detector.unknown(strange).mean() >= 0.95
    assert openset.auroc(detector.scores(test), detector.scores(strange)) > 0.99


def test_protocol_separates_clustered_classes_but_not_structureless_ones():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 48))
    features, labels = {}, {}
    for split, n in (("train", 30), ("validation", 10), ("test", 10)):
        x, y = clustered(rng, centres, n)
        features[split] = {"vgg16": x, "resnet50": x[:, ::-1] + 0.1 * rng.normal(size=x.shape)}
        labels[split] = y
    report = openset.held_out_protocol(features, labels, 10, folds=5, k=5)
    assert set(report) == {"vgg16", "resnet50", openset.ENSEMBLE}
    for figures in report.values():
        assert figures["auroc"] > 0.98 and figures["unknown_accepted"] < 0.1 and figures["known_test_kept"] > 0.85

    noise = {s: {b: rng.normal(size=f.shape) for b, f in fs.items()} for s, fs in features.items()}
    report = openset.held_out_protocol(noise, labels, 10, folds=5, k=5)
    assert all(abs(f["auroc"] - 0.5) < 0.1 for f in report.values())


def test_auroc_counts_ties_half():
    assert openset.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert openset.auroc(np.array([1.0]), np.array([1.0])) == 0.5
    assert openset.auroc(np.array([2.0]), np.array([1.0])) == 0.0


def test_stored_verdict_flags_the_same_photos_and_marks_each_answer():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(5, 40))
    features = {}
    for split, n in (("train", 30), ("validation", 10)):
        x, _ = clustered(rng, centres[:4], n)
        features[split] = {"resnet50": x}
    queries = np.concatenate([clustered(rng, centres[:4], 5)[0], clustered(rng, centres[4:], 20)[0]])
    detectors = openset.fit_detectors(features, k=5)
    info, arrays = openset.to_stored(detectors, {}, 224)
    assert set(info["detectors"]) == {"resnet50", openset.ENSEMBLE}
    restored = openset.from_stored(info, arrays)
    flags = openset.verdicts(info, restored, {"resnet50": queries}, ["vgg16", "resnet50", "cnn"])
    expected = detectors["resnet50"].unknown(openset.joined({"resnet50": queries}, ["resnet50"]))
    np.testing.assert_array_equal(flags["resnet50"], expected)
    # No VGG16 features stored: the VGG16 and CNN models fall back on the ensemble's detector.
    np.testing.assert_array_equal(flags["vgg16"], flags[openset.ENSEMBLE])
    assert flags[openset.ENSEMBLE][20:].all()

    summary = {"models": {"vgg16": {}, "cnn": {}}, "ensemble": {}}
    marked = openset.mark_unknown(summary, {"vgg16": True, "cnn": False, openset.ENSEMBLE: True})
    assert marked["models"]["vgg16"]["unknown"] is True and marked["ensemble"]["unknown"] is True
    assert openset.mark_unknown(summary, None)["models"]["cnn"]["unknown"] is None
