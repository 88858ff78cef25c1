"""scripts/classify.py as a user runs it: a subprocess on the shipped result set; stdout and stderr exactly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, SHARED_WEIGHTS, make_photo, needs_shared
from core import reports
from core.specs import MODEL_IDS

NOT_AN_IMAGE = "not an image file (could not identify the format)"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRUITVEG_WEIGHTS_DIR": str(SHARED_WEIGHTS)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must be quiet without the caller's help
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "classify.py"), "--artifacts", str(ROOT / "artifacts"), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    photo = make_photo((200, 40, 30), np.random.default_rng(3), size=160)
    photo.save(folder / "photo.jpg", quality=90)
    photo.save(folder / "photo.heic", quality=90)
    # The same photo as a 108 MP phone JPEG (12000 x 9000), over the 40 MP limit: decoded at half size.
    photo.resize((12000, 9000), Image.Resampling.BILINEAR).save(folder / "phone.jpg", quality=75)
    (folder / "bad.jpg").write_bytes(b"this is not a photo")
    return {name: str(folder / name) for name in ("photo.jpg", "photo.heic", "phone.jpg", "bad.jpg")}


def test_bad_file_alone_one_stderr_line(photos):
    done = run_cli(photos["bad.jpg"])
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"error: {photos['bad.jpg']}: {NOT_AN_IMAGE}\n"


@pytest.fixture(scope="module")
def mixed_run(photos):
    """Three good photos (JPEG, HEIC, 108 MP JPEG) and a bad file, with --json."""
    return run_cli("--json", photos["photo.jpg"], photos["bad.jpg"], photos["photo.heic"], photos["phone.jpg"])


@needs_shared(SHARED_WEIGHTS)
def test_good_photos_answer_only_and_bad_file_one_line(photos, mixed_run):
    mixed = mixed_run
    assert mixed.returncode == 1
    assert mixed.stderr == f"error: {photos['bad.jpg']}: {NOT_AN_IMAGE}\n"
    records = [json.loads(line) for line in mixed.stdout.splitlines()]
    assert [r["file"] for r in records] == [photos["photo.jpg"], photos["photo.heic"], photos["phone.jpg"]]
    for record in records:
        assert set(record["models"]) == set(MODEL_IDS)
        probs = [p for _, p in record["ensemble"]["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < probs[-1] and sum(probs) <= 1 + 1e-6
    # HEIC, JPEG and the 108 MP JPEG of one photo agree on the ensemble's answer.
    assert records[0]["ensemble"]["top"][0][0] == records[1]["ensemble"]["top"][0][0] == records[2]["ensemble"]["top"][0][0]

    one = run_cli(photos["photo.jpg"])
    assert one.returncode == 0
    assert one.stderr == ""
    summary = {k: v for k, v in records[0].items() if k != "file"}
    assert one.stdout == reports.format_summary(photos["photo.jpg"], summary) + "\n"


@needs_shared(SHARED_WEIGHTS)
def test_answer_equals_the_in_process_classifier_and_verdict(photos, mixed_run):
    """The command line's quick path (uncompiled, no maps, verdict on the models' own ImageNet backbones)
    answers as the app's path does: the compiled classifier with maps, and the verdict's own backbones."""
    from core import artifacts, features, images, inference, openset

    record = json.loads(mixed_run.stdout.splitlines()[0])
    result_set = artifacts.open_result_set(ROOT / "artifacts")
    classifier, problems = inference.load_classifier(result_set, SHARED_WEIGHTS)
    assert problems == {}
    image = images.read_image(photos["photo.jpg"])
    classification = classifier.classify_image(image)
    expected = reports.summarise(classification, result_set, top=len(result_set.class_names))
    verdict = features.load_verdict(result_set, SHARED_WEIGHTS)
    expected = openset.mark_unknown(expected, verdict.for_image(image, expected["models"]))
    # The app's classifier judges on its models' own trunks, as the verdict's own backbones do.
    assert {name: bool(flags[0]) for name, flags in classification.unknown.items()} == verdict.for_image(
        image, expected["models"]
    )
    for name, answer in [*record["models"].items(), ("ensemble", record["ensemble"])]:
        reference = expected["ensemble"] if name == "ensemble" else expected["models"][name]
        everything = dict(reference["top"])
        assert [c for c, _ in answer["top"]] == [c for c, _ in reference["top"][:3]], name
        for class_name, prob in answer["top"]:
            assert prob == pytest.approx(everything[class_name], abs=1e-5), (name, class_name)
        assert answer["unknown"] == reference["unknown"], name
        assert answer["group_probability"] == pytest.approx(reference["group_probability"], abs=1e-5), name


@needs_shared(SHARED_WEIGHTS)
def test_views_average_what_validation_took_as_the_app_does(photos):
    """--views: each model for which the shipped set's validation took test-time views answers with their
    average and names them, as the app's classifier does with its switch on."""
    from core import artifacts, images, inference

    done = run_cli("--json", "--views", photos["photo.jpg"])
    assert done.returncode == 0 and done.stderr == ""
    record = json.loads(done.stdout)
    result_set = artifacts.open_result_set(ROOT / "artifacts")
    taken = {m: chosen.option for m in result_set.models if (chosen := inference.chosen_views(result_set.metrics(m)))}
    assert taken  # the shipped set has models that take views
    assert {m: answer["views"] for m, answer in record["models"].items() if "views" in answer} == taken
    classifier, _ = inference.load_classifier(result_set, SHARED_WEIGHTS)
    expected = reports.summarise(classifier.classify_image(images.read_image(photos["photo.jpg"]), with_views=True),
                                 result_set, top=len(result_set.class_names))
    for model_id, answer in record["models"].items():
        everything = dict(expected["models"][model_id]["top"])
        for class_name, prob in answer["top"]:
            assert prob == pytest.approx(everything[class_name], abs=1e-5), (model_id, class_name)
