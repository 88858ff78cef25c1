"""Reliability and security, end to end: hostile uploads through the classifier, the classify page and the
command line; tampered result sets; training runs killed with SIGKILL and resumed; many sessions at once.

``core.images.read_image`` on its own is covered by test_images.py; here each hostile file goes all the way
to a model (or to a one-line message), and the next one must still work.
"""

from __future__ import annotations

import ast
import io
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import tomllib
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import magic as streamlit_magic
from streamlit.testing.v1.util import patch_config_options

from conftest import ROOT, TINY_CLASSES, TINY_HP, make_photo, model_cards
from core import artifacts, headline, images, inference, reports
from core.specs import MODEL_IDS, MODEL_SPECS

PAGE = ROOT / "views" / "classify.py"
PAGE_ERROR_PREFIX = "This file cannot be classified: "


# ------------------------------------------------------------------------------------ a hostile battery


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kw)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking 200-byte PNG whose header declares width x height pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


@dataclass
class Upload:
    name: str
    data: bytes
    mime: str
    error: str | None = None  # regex the one-line message must match; None: it must classify
    same_as: Image.Image | None = None  # it must classify exactly like this image


def hostile_uploads(*, huge: bool = True, gif: bool = True) -> list[Upload]:
    """Hostile and unusual files in the uploader's formats, ending with a normal photo.

    ``gif``: GIF is read by core.images (the command line) but not offered by the page's uploader.
    """
    rng = np.random.default_rng(11)
    photo = make_photo(TINY_CLASSES["banana"], rng, size=96)
    other = make_photo(TINY_CLASSES["peas"], rng, size=96)
    gray = photo.convert("L")
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    rotated = photo.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back upright
    exif = Image.Exif()
    exif[0x0112] = 6
    la = Image.merge("LA", (gray, Image.new("L", gray.size, 255)))
    jpeg = encode(photo, "JPEG", quality=90)
    uploads = [
        Upload("notes.jpg", b"Shopping list: apples, bananas, carrots, peas.\n", "image/jpeg",
               r"^not an image file \(could not identify the format\)$"),
        Upload("empty.png", b"", "image/png", r"^image is empty \(0 bytes\)$"),
        Upload("truncated.jpg", jpeg[: len(jpeg) // 2], "image/jpeg", r"^file is truncated or corrupt: \S"),
        Upload("bomb.png", bomb_png(), "image/png", r"^image is too large: 100000x100000 pixels \(limit 40 MP\)$"),
        Upload("dot.png", encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), "image/png",
               r"^image is too small: 1x1 pixels \(minimum 16x16\)$"),
        Upload("strip.png", encode(Image.new("RGB", (2000, 20), (230, 220, 60)), "PNG"), "image/png",
               r"^extreme aspect ratio 100:1 \(maximum 8:1\)$"),
        Upload("cmyk.jpg", encode(photo.convert("CMYK"), "JPEG", quality=90), "image/jpeg"),
        Upload("gray16.png", encode(Image.fromarray(np.asarray(gray, np.uint16) * 257), "PNG"), "image/png",
               same_as=gray),
        Upload("gray.png", encode(gray, "PNG"), "image/png", same_as=gray),
        Upload("palette.png", encode(palette, "PNG"), "image/png", same_as=palette),
        Upload("la.png", encode(la, "PNG"), "image/png", same_as=gray),
        Upload("rotated.png", encode(rotated, "PNG", exif=exif.tobytes()), "image/png", same_as=photo),
        Upload("animated.png", encode(photo, "PNG", save_all=True, append_images=[other]), "image/png",
               same_as=photo),
        Upload("animated.webp", encode(photo, "WEBP", save_all=True, append_images=[other], lossless=True),
               "image/webp", same_as=photo),
        Upload("tall.png", encode(photo.resize((16, 128)), "PNG"), "image/png", same_as=photo.resize((16, 128))),
        Upload("photo.bmp", encode(other, "BMP"), "image/bmp", same_as=other),
    ]
    if huge:  # over core.images.MAX_FILE_BYTES (and Streamlit's server.maxUploadSize)
        uploads.insert(4, Upload("huge.jpg", b"\xff\xd8\xff\xe0" + bytes(65 * 2**20), "image/jpeg",
                                 r"^file is too large: 65\.0 MB \(limit 64 MB\)$"))
    if gif:
        uploads.insert(-1, Upload("animated.gif", encode(palette, "GIF", save_all=True,
                                                         append_images=[other.convert("P")]), "image/gif"))
    uploads.append(Upload("photo.jpg", jpeg, "image/jpeg"))
    return uploads


# The files the page and the browser are given (the rest of the battery is covered in-process above).
PAGE_BATTERY = ["notes.jpg", "empty.png", "truncated.jpg", "huge.jpg", "dot.png", "strip.png", "bomb.png", "cmyk.jpg",
                "gray16.png", "animated.png", "animated.webp", "rotated.png", "photo.jpg"]


def assert_one_line(message: str) -> None:
    assert message and message == message.strip() and "\n" not in message and "\r" not in message, message
    assert "Traceback" not in message and len(message) < 240, message


def assert_well_formed(result: inference.Classification) -> None:
    assert list(result.results) == list(MODEL_IDS)
    for r in result.results.values():
        assert r.probs.shape == (1, 4) and np.isfinite(r.probs).all() and np.isclose(r.probs.sum(), 1, atol=1e-5)
        assert np.isfinite(r.gradcam).all()


def same_result(a: inference.Classification, b: inference.Classification, atol=1e-5) -> bool:
    return all(np.allclose(a.results[m].probs, b.results[m].probs, atol=atol) for m in a.results)


@pytest.fixture(scope="module")
def loaded(tiny_results):
    rs = artifacts.open_result_set(tiny_results)
    classifier, problems = inference.load_classifier(rs)
    assert problems == {} and classifier is not None
    return rs, classifier


# ------------------------------------------------------------------------------------ 1. uploads


def test_upload_limit_is_the_same_in_streamlit_config_and_in_code():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == 64
    assert images.MAX_FILE_BYTES == config["server"]["maxUploadSize"] * 2**20


def test_every_hostile_file_classifies_correctly_or_gets_a_specific_message(loaded):
    """In one process, one after the other: a bad file never breaks the next one."""
    rs, classifier = loaded
    for upload in hostile_uploads():
        try:
            image = images.read_image(upload.data, name=upload.name)
        except images.ImageError as err:
            assert upload.error, f"{upload.name} was refused: {err}"
            assert_one_line(str(err))
            assert re.search(upload.error, str(err)), (upload.name, str(err))
            assert err.source_name == upload.name and upload.name not in str(err)
            continue
        assert upload.error is None, f"{upload.name} was accepted"
        result = classifier.classify_image(image)
        assert_well_formed(result)
        if upload.same_as is not None:
            assert same_result(result, classifier.classify_image(upload.same_as.convert("RGB"))), upload.name


def page_app(results, timeout=120):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGE), default_timeout=timeout)
    at.session_state["artifacts"] = str(results)
    return at


ROUNDING = 0.0051  # the page shows whole percents; a model run again may differ by float noise


def shown_numbers(at) -> dict[tuple[str, str], float]:
    """The probabilities the page shows: (model id, its top class) from each card, ("ensemble", class) for
    the ensemble's top 5."""
    titles = {MODEL_SPECS[m].title: m for m in MODEL_IDS}
    numbers = {}
    for card in model_cards(at):
        title, rest = card[2:].split("**", 1)
        name, pct = re.match(r"^\s*(.+) (\d+)% · ", rest).groups()
        numbers[(titles[title], name)] = int(pct) / 100
    prefix = "Ensemble top 5: "
    caption = next(c.value for c in at.caption if c.value.startswith(prefix))
    for part in caption[len(prefix):].split(", "):
        name, pct = part.rsplit(" ", 1)
        numbers[("ensemble", name)] = int(pct.rstrip("%")) / 100
    return numbers


def expected_number(result: inference.Classification, who: str, name: str, class_names: list[str]) -> float:
    probs = result.ensemble()[0] if who == "ensemble" else result.results[who].probs[0]
    return float(probs[class_names.index(name)])


def assert_shows(at, result: inference.Classification, class_names: list[str], label) -> None:
    """The page shows this classification: every number on its cards and in its ensemble caption."""
    numbers = shown_numbers(at)
    assert len(numbers) == 6 + min(5, len(class_names)), (label, numbers)
    for (who, name), p in numbers.items():
        want = expected_number(result, who, name, class_names)
        assert abs(p - want) <= ROUNDING, (label, who, name, p, want)


def told_apart(a: inference.Classification, b: inference.Classification, class_names) -> bool:
    """Whether the page showing ``b`` would fail ``assert_shows(a)``: some number it would show differs."""
    shown_for_b = [("ensemble", c) for c in class_names] + [
        (m, class_names[int(np.argmax(r.probs[0]))]) for m, r in b.results.items()]
    return any(abs(expected_number(a, w, c, class_names) - expected_number(b, w, c, class_names)) > 2 * ROUNDING
               for w, c in shown_for_b)


def page_text(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_classify_page_answers_every_hostile_upload_and_the_next_one_works(tiny_results, loaded):
    rs, classifier = loaded
    at = page_app(tiny_results).run()
    assert not at.exception
    battery = {u.name: u for u in hostile_uploads(gif=False)}
    for upload in (battery[name] for name in PAGE_BATTERY):
        at.file_uploader[0].set_value((upload.name, upload.data, upload.mime)).run()
        assert not at.exception, (upload.name, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        if upload.error:
            assert len(errors) == 1, (upload.name, errors)
            assert_one_line(errors[0])
            assert errors[0].startswith(PAGE_ERROR_PREFIX), errors[0]
            assert re.search(upload.error, errors[0][len(PAGE_ERROR_PREFIX):]), (upload.name, errors[0])
            assert model_cards(at) == [], upload.name
        else:
            assert errors == [], (upload.name, errors)
            assert len(model_cards(at)) == 6, upload.name
            expected = classifier.classify_image(images.read_image(upload.data))
            assert_shows(at, expected, rs.class_names, upload.name)


def test_classify_script_answers_every_hostile_file_on_one_line(tiny_results, tmp_path):
    uploads = hostile_uploads()
    paths = []
    for i, upload in enumerate(uploads):
        path = tmp_path / f"{i:02d}-{upload.name}"
        path.write_bytes(upload.data)
        paths.append(path)
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "classify.py"), *map(str, paths), "--json",
         "--artifacts", str(tiny_results)],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    bad = [(p, u) for p, u in zip(paths, uploads) if u.error]
    assert len(errors) == len(bad), errors
    for line, (path, upload) in zip(errors, bad):
        prefix = f"error: {path}: "
        assert line.startswith(prefix), line
        assert re.search(upload.error, line[len(prefix):]), line
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["file"] for a in answers] == [str(p) for p, u in zip(paths, uploads) if not u.error]
    for answer in answers:
        assert set(answer["models"]) == set(MODEL_IDS)
    assert answers[-1]["file"].endswith("photo.jpg")  # the last, normal photo still classifies


# ------------------------------------------------------------------------------------ 2. result sets


@pytest.fixture
def copy_of_results(tiny_results, tmp_path):
    target = tmp_path / "sets" / "copy"
    shutil.copytree(tiny_results, target)
    return target


def edit_manifest(root: Path, change) -> None:
    manifest = artifacts.read_json(root / artifacts.MANIFEST)
    change(manifest)
    (root / artifacts.MANIFEST).write_text(json.dumps(manifest))


def test_a_model_file_swapped_for_another_valid_one_is_refused(copy_of_results):
    shutil.copyfile(copy_of_results / "cnn_attention" / artifacts.WHOLE_MODEL,
                    copy_of_results / "cnn" / artifacts.WHOLE_MODEL)
    shutil.copyfile(copy_of_results / "vgg16_attention" / artifacts.TOP_WEIGHTS,
                    copy_of_results / "vgg16" / artifacts.TOP_WEIGHTS)
    rs = artifacts.open_result_set(copy_of_results)
    assert rs.problems["cnn"] == "model.keras is damaged (checksum mismatch)"
    assert rs.problems["vgg16"] == "top.weights.h5 is damaged (checksum mismatch)"
    assert sorted(rs.models) == sorted(set(MODEL_IDS) - {"cnn", "vgg16"})


def test_the_manifest_cannot_make_the_loader_read_outside_the_result_set(copy_of_results, monkeypatch):
    root = copy_of_results
    outside = root.parent / "outside.jpg"  # what ../../ from a model folder, or ../ from samples/, reaches
    outside.write_bytes(encode(make_photo(TINY_CLASSES["apple"], np.random.default_rng(0)), "JPEG"))
    digest = artifacts.sha256_file(outside)

    def tamper(manifest):
        manifest["models"]["cnn"]["files"]["../../outside.jpg"] = digest
        manifest["models"]["vgg16"]["files"][str(outside)] = digest  # an absolute path
        manifest["models"]["../sets"] = {"files": {"outside.jpg": digest}}  # not one of the six ids
        manifest["files"]["samples/../../outside.jpg"] = digest
        manifest["files"]["samples/apple/../../../outside.jpg"] = digest
        manifest["files"][str(outside)] = digest

    genuine = artifacts.open_result_set(root).samples()
    edit_manifest(root, tamper)
    opened = []
    for name in ("sha256_file", "read_json"):
        real = getattr(artifacts, name)
        monkeypatch.setattr(artifacts, name, lambda path, _real=real: (opened.append(Path(path)), _real(path))[1])
    rs = artifacts.open_result_set(root)
    inside = root.resolve()
    assert opened and [p for p in opened if not p.resolve().is_relative_to(inside)] == []
    assert [path for path, _ in rs.samples() if not path.resolve().is_relative_to(inside)] == []
    assert rs.samples() == genuine  # the genuine samples are still offered, nothing else
    for model_id in ("cnn", "vgg16"):
        assert "not a plain file name" in rs.problems[model_id], rs.problems
    assert sorted(rs.models) == sorted(set(MODEL_IDS) - {"cnn", "vgg16"})


def test_a_keras_file_with_a_lambda_layer_is_not_loaded_and_its_code_never_runs(copy_of_results, tmp_path):
    import keras

    marker = tmp_path / "lambda-ran"
    # Code that leaves a trace if it ever runs; keras stores the lambda's bytecode in the .keras file.
    payload = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")  # noqa: S307
    inputs = keras.Input((TINY_HP["image_size"], TINY_HP["image_size"], 3))
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(payload)(inputs))
    hostile = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="logits")(hidden))
    path = copy_of_results / "cnn" / artifacts.WHOLE_MODEL
    hostile.save(path)
    marker.unlink(missing_ok=True)  # building the model ran it once, here
    edit_manifest(copy_of_results, lambda m: m["models"]["cnn"]["files"].update({"model.keras": artifacts.sha256_file(path)}))
    rs = artifacts.open_result_set(copy_of_results)
    assert "cnn" in rs.models  # its checksum is right: only safe mode stands between it and the loader
    with pytest.raises(inference.ModelUnavailable, match="model.keras cannot be loaded: .*Lambda"):
        inference.load_model(rs, "cnn")
    assert not marker.exists()
    classifier, problems = inference.load_classifier(rs)
    assert set(problems) == {"cnn"} and classifier.model_ids == [m for m in MODEL_IDS if m != "cnn"]
    assert not marker.exists()
    # The control: without safe mode the same file does run its code, so the test above is meaningful.
    keras.saving.load_model(path, compile=False, safe_mode=False)
    assert marker.exists()


# ------------------------------------------------------------------------------------ 3. interrupted training

# A wrapper around scripts/train.py that stops forever inside the atomic write of the manifest that would
# record one more model: after that model's folder is in place, with the manifest's temporary file written.
HANG_IN_MANIFEST_WRITE = """
import json, os, runpy, sys, time
real_replace = os.replace
def count(path):
    try:
        return len(json.load(open(path))["models"])
    except (OSError, ValueError, KeyError):
        return 0
def replace(src, dst, *args, **kwargs):
    if os.fspath(dst).endswith("manifest.json") and count(src) > count(dst):
        open(os.environ["HANG_FLAG"], "w").close()
        time.sleep(3600)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
script = sys.argv[1]
sys.path.insert(0, os.path.dirname(script))
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def train_command(data_dir, out) -> list[str]:
    hp = TINY_HP
    return [str(ROOT / "scripts" / "train.py"), "--data-dir", str(data_dir), "--out", str(out),
            "--image-size", str(hp["image_size"]), "--epochs", str(hp["epochs"]), "--patience", str(hp["patience"]),
            "--batch-size", str(hp["batch_size"]), "--views", str(hp["views"]), "--random-backbones"]


def manifest_models(out: Path) -> dict:
    try:
        return artifacts.read_json(out / artifacts.MANIFEST)["models"]
    except (OSError, ValueError, KeyError):
        return {}


def run_until(command, log: Path, condition, env=None, timeout=240) -> None:
    """Start a run, SIGKILL it as soon as ``condition()`` holds."""
    with open(log, "ab") as sink:
        proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    try:
        deadline = time.time() + timeout
        while not condition():
            assert proc.poll() is None, f"the run ended before the kill point:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, "kill point not reached in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def check_after_kill(out: Path, finished: dict) -> None:
    """What a killed run left: every model the manifest lists verifies; record those models' file times."""
    listed = set(manifest_models(out)) & set(MODEL_IDS)
    if not listed:
        return
    rs = artifacts.open_result_set(out)
    assert set(rs.models) == listed, rs.problems  # nothing half-written is listed as complete
    for model_id in listed:
        times = {p.name: p.stat().st_mtime_ns for p in (out / model_id).iterdir()}
        assert finished.setdefault(model_id, times) == times, f"{model_id} was rewritten"


def test_training_killed_at_several_moments_resumes_to_a_complete_result_set(tiny_data, tiny_results, tmp_path):
    out, log, flag = tmp_path / "out", tmp_path / "train.log", tmp_path / "hanging"
    command = train_command(tiny_data, out)
    finished: dict[str, dict] = {}

    # 1. A random early moment (while starting, splitting, loading or training the first model).
    delay = random.Random(20240611).uniform(3.0, 10.0)
    start = time.time()
    run_until(command, log, lambda: time.time() - start > delay)
    check_after_kill(out, finished)

    # 2. Right after the first (next) model folder appears in the manifest.
    before = len(manifest_models(out))
    run_until(command, log, lambda: len(manifest_models(out)) > before)
    check_after_kill(out, finished)
    assert finished, "no model was complete after the second kill"

    # 3. In the middle of an atomic write: the next model's folder is in place, the manifest's temporary
    #    file written, the rename not done.
    run_until(["-c", HANG_IN_MANIFEST_WRITE, *command], log, flag.exists, env={"HANG_FLAG": str(flag)})
    assert list(out.glob(".manifest.json.*.tmp")), sorted(os.listdir(out))
    unlisted = [m for m in MODEL_IDS if (out / m).is_dir() and m not in manifest_models(out)]
    assert len(unlisted) == 1, sorted(os.listdir(out))
    check_after_kill(out, finished)
    assert unlisted[0] in artifacts.open_result_set(out).problems  # a folder without its record: not complete

    # 4. Run again to the end.
    done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    rs = artifacts.open_result_set(out)
    assert sorted(rs.models) == sorted(MODEL_IDS) and rs.problems == {}
    assert sorted(os.listdir(out)) == sorted(os.listdir(tiny_results))
    for model_id in MODEL_IDS:
        assert sorted(os.listdir(out / model_id)) == sorted(os.listdir(tiny_results / model_id)), model_id
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".staging-") or p.name.endswith(".tmp")]
    assert leftovers == []
    for model_id, times in finished.items():  # finished before a kill: not trained again
        assert {p.name: p.stat().st_mtime_ns for p in (out / model_id).iterdir()} == times, model_id
        assert re.search(rf"^{model_id}\s+done$", done.stdout, re.M), done.stdout
    trained = {m for m in MODEL_IDS if re.search(rf"^{m}\s+trained$", done.stdout, re.M)}
    assert trained == set(MODEL_IDS) - set(finished), done.stdout


def test_an_unwritable_output_folder_is_a_one_line_error(tiny_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run([sys.executable, *train_command(tiny_data, blocker / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=240, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write" in errors[0] and str(blocker) in errors[0], done.stderr
    assert not (blocker.parent / "out").exists()


# ------------------------------------------------------------------------------------ 4. many users


def test_eight_threads_share_one_classifier_and_get_their_own_results(loaded):
    _, classifier = loaded
    rng = np.random.default_rng(42)
    colours = list(TINY_CLASSES.values())
    photos = [make_photo(colours[i % 4], rng, size=60 + 7 * i) for i in range(8)]
    expected = [classifier.classify_image(p) for p in photos]
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        return [classifier.classify_image(photos[i]) for _ in range(12)]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(worker, range(8)))
    for i, results in enumerate(outcomes):
        for result in results:
            for model_id in MODEL_IDS:
                got, want = result.results[model_id], expected[i].results[model_id]
                assert np.allclose(got.probs, want.probs, atol=1e-5), (i, model_id)
                assert np.allclose(got.gradcam, want.gradcam, atol=1e-5), (i, model_id)
                if want.attention is not None:
                    assert np.allclose(got.attention, want.attention, atol=1e-5), (i, model_id)
    # The photos differ, so do the answers: a thread never got another thread's result.
    assert len({round(float(e.ensemble()[0].max()), 6) for e in expected}) > 1


def _locked(lock, function, *args, **kwargs):
    with lock:
        return function(*args, **kwargs)


def test_several_page_sessions_at_once_each_show_their_own_sample(tiny_results, loaded, monkeypatch):
    rs, classifier = loaded
    samples = rs.samples()
    # Photos of one class and one file name from different folders of the dataset (train/x/Image_4.jpg,
    # test/x/Image_4.jpg) are the ones a page could mix up; two such twins first, then one of every class.
    short = [(c, path.stem.split("__")[-1]) for path, c in samples]
    twins = next(([i, j] for i in range(len(short)) for j in range(i + 1, len(short)) if short[i] == short[j]), [])
    picks = twins + [i for i in range(len(samples)) if i not in twins]
    picks = sorted(picks, key=lambda i: (i not in twins, [c for _, c in samples[:i]].count(samples[i][1])))[:6]
    expected = {i: classifier.classify_image(images.read_image(samples[i][0])) for i in picks}
    if twins:  # their answers differ visibly, so a page showing one for the other fails below
        assert told_apart(expected[twins[0]], expected[twins[1]], rs.class_names)
        assert told_apart(expected[twins[1]], expected[twins[0]], rs.class_names)
    loads = []
    real_load = inference.load_classifier
    monkeypatch.setattr(inference, "load_classifier", lambda *a, **k: (loads.append(a), real_load(*a, **k))[1])

    def session(i):
        at = page_app(tiny_results, timeout=180).run()
        assert not at.exception, [e.value for e in at.exception]
        chooser = next(s for s in at.selectbox if s.label == "Sample from the test split")
        assert len(set(chooser.options)) == len(chooser.options)  # Streamlit keeps the choice by its label
        chooser.set_value(i).run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    # CPython 3.11's parser is not safe to enter from several threads at once: compiling the page script in
    # parallel sessions can fail with "SystemError: AST constructor recursion depth mismatch". Streamlit
    # compiles each run's script (adding its "magic") with ast.parse; one compile at a time keeps that
    # interpreter fault out, and everything the app itself does still runs concurrently.
    compiling = threading.Lock()
    add_magic = streamlit_magic.add_magic
    monkeypatch.setattr(streamlit_magic, "add_magic", lambda *a, **k: _locked(compiling, add_magic, *a, **k))

    # Each AppTest run switches Streamlit's global "global.appTest" option on and, when it ends, back: with
    # runs overlapping, one run's end would switch it off under another (whose selectbox then has no
    # formatter). Holding it on for the whole block leaves only the app's own concurrency under test.
    # Each AppTest run also installs a mock Streamlit Runtime of its own and removes it when it ends: with runs
    # overlapping, one run's end would remove it under another (whose script then fails with "Runtime hasn't
    # been created!"). Any run's mock serves another, so a run that finds none gets the last one installed,
    # which a first run, alone, records.
    installed = {}

    def runtime(cls):
        if cls._instance is not None:
            installed["runtime"] = cls._instance
        return installed["runtime"]

    monkeypatch.setattr(Runtime, "instance", classmethod(runtime))
    monkeypatch.setattr(Runtime, "exists", classmethod(lambda cls: cls._instance is not None or "runtime" in installed))
    page_app(tiny_results).run()
    assert "runtime" in installed
    with patch_config_options({"global.appTest": True}), ThreadPoolExecutor(len(picks)) as pool:
        sessions = dict(zip(picks, pool.map(session, picks)))
    for i, at in sessions.items():
        assert [e.value for e in at.error] == []
        assert len(model_cards(at)) == 6
        assert headline.headline(reports.summarise(expected[i], rs)) in page_text(at)
        assert_shows(at, expected[i], rs.class_names, i)
    assert len(loads) <= 1  # the models are loaded once per process, not per session


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_memory_does_not_grow_with_each_photo(loaded):
    _, classifier = loaded
    rng = np.random.default_rng(7)
    colours = list(TINY_CLASSES.values())

    def classify(n):
        for i in range(n):
            data = encode(make_photo(colours[i % 4], rng, size=int(rng.integers(40, 200))), "JPEG")
            assert_well_formed(classifier.classify_image(images.read_image(data)))

    classify(10)  # warm-up
    before = rss_bytes()
    classify(50)
    growth = rss_bytes() - before
    assert growth < 150 * 2**20, f"RSS grew {growth / 2**20:.0f} MB over 50 photos"


def test_the_classify_page_caches_are_bounded():
    """Every cache of the classify page (and of the helpers it uses) has max_entries; models: cache_resource."""
    decorated = {}
    for path in (PAGE, ROOT / "views" / "common.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and ast.unparse(deco.func) in ("st.cache_data", "st.cache_resource"):
                        limits = {k.arg: ast.literal_eval(k.value) for k in deco.keywords if k.arg == "max_entries"}
                        decorated[node.name] = (ast.unparse(deco.func), limits.get("max_entries"))
                    elif ast.unparse(deco) in ("st.cache_data", "st.cache_resource"):
                        decorated[node.name] = (ast.unparse(deco), None)
    assert {"classifier_for", "classify"} <= set(decorated) and len(decorated) >= 3
    assert decorated["classifier_for"][0] == "st.cache_resource"
    for name, (_, limit) in decorated.items():
        assert isinstance(limit, int) and 0 < limit <= 64, (name, limit)
