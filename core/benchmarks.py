"""Measurements behind ``scripts/benchmark.py``: training with and without the trunk cache, and the
six-model classification against a naive loop. Timings are wall-clock medians on this machine."""

from __future__ import annotations

import io
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from core import artifacts, dataset, evaluation, images, models, recipes, training
from core.inference import Classifier
from core.specs import MODEL_IDS, MODEL_SPECS

# The full Kaggle dataset (the study's split): 3,115 training, 351 validation and 359 test images.
FULL_DATASET = {"train": 3115, "validation": 351, "test": 359}


def machine() -> str:
    return f"{platform.machine()}, {tf.config.threading.get_inter_op_parallelism_threads() or 'all'} threads, " \
           f"{len(tf.config.list_physical_devices('CPU'))} CPU device, {len(tf.config.list_physical_devices('GPU'))} GPU"


def sample_photos(data_dir, count: int, size: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Real photos from a dataset folder when given, else random pixels (timing does not depend on content)."""
    if data_dir:
        files = dataset.scan(data_dir)
        picked = [files[i] for i in np.random.default_rng(seed).permutation(len(files))[:count]]
        photos, kept, _ = dataset.load_images(data_dir, picked, size, progress=False)
        return photos, f"{len(kept)} real photos from {data_dir}"
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8), f"{count} random images"


# The Kaggle originals are web photos of various sizes (a few MB at most); this copy's are downscaled.
FULL_SIZE_PHOTO = (2000, 1500)


def read_ms_per_full_size_photo(repeats: int = 5) -> float:
    """Milliseconds a run spends on one full-size photo before any model sees it: fingerprinting it for the
    duplicate groups, then reading and resizing it. Timed on a textured JPEG of FULL_SIZE_PHOTO pixels."""
    width, height = FULL_SIZE_PHOTO
    rng = np.random.default_rng(0)
    smooth = images.Image.fromarray(rng.integers(0, 256, (height // 50, width // 50, 3), dtype=np.uint8)).resize(
        (width, height), images.Image.Resampling.BICUBIC)
    pixels = np.clip(np.asarray(smooth, np.float32) + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    images.Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    start = time.perf_counter()
    for _ in range(repeats):
        dataset.perceptual_hashes(images.read_image(data))
        images.to_array(images.read_image(data), 160)
    return (time.perf_counter() - start) / repeats * 1000


def _epoch_timer(trainable: keras.Model, x, y, batch_size: int, recipe: recipes.Recipe | None = None):
    """A function timing one training epoch over (x, y) as ``training.fit`` runs it under ``recipe`` (its loss,
    and its fresh views of every batch where it draws them); the first epoch, which pays for tracing, is run here."""
    recipe = recipe or recipes.Recipe(1e-5)
    training.compile_for_training(trainable, recipe)
    augment = training.augmenter(recipe, trainable.output_shape[-1])
    batches = training.view_batches([x], y, batch_size, seed=0, augment=augment)
    trainable.fit(batches, epochs=1, verbose=0, shuffle=False)

    def epoch_seconds() -> float:
        start = time.perf_counter()
        trainable.fit(batches, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - start

    return epoch_seconds


def _fastest_seconds(function, repeats: int) -> float:
    """The shortest wall-clock time of ``repeats`` calls: what the machine can do (as ``timeit`` advises), the
    others being slowed by whatever else ran. Before ``training.view_batches`` turned tf.data's autotuner off,
    a timed epoch could also end in a wait for the autotuner's next wake: the same CNN epoch took 5.0 ms per
    photo or exactly twice that (2026-12-04)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def _ms_per_image(function, count: int, repeats: int = 3) -> float:
    function()  # warm-up: tracing, memory
    return _fastest_seconds(function, repeats) / count * 1000


def _frozen_pass_ms(frozen: keras.Model, inputs: np.ndarray, precision: str) -> dict:
    """Milliseconds per image through a frozen part: in float32 (validation, test) and in the precision the
    training views get."""
    ms = {"float32": _ms_per_image(lambda: training.predict_in_batches(frozen, inputs), len(inputs))}
    if precision == "float32":
        return {**ms, "train_views": ms["float32"]}
    in_precision = models.with_compute_dtype(frozen, "mixed_bfloat16")
    return {**ms, "train_views": _ms_per_image(lambda: training.predict_in_batches(in_precision, inputs), len(inputs))}


def _evaluation_ms(model, spec, explain_inputs, photos, num_classes: int) -> float:
    """Milliseconds per test image of the end-of-training evaluation (maps, metrics, sanity check).

    Timed on at most 64 images: its fixed parts (the sanity check, the inference timing) are counted as if
    they grew with the test split, so the projection errs long.
    """
    n = min(64, len(photos))
    names = [f"class{i}" for i in range(num_classes)]
    labels = np.arange(n) % num_classes
    start = time.perf_counter()
    evaluation.run_test_split(model, spec, explain_inputs[:n], photos[:n], labels, names,
                              ["fruit"] * num_classes, np.ones(n, bool))
    return (time.perf_counter() - start) / n * 1000


def training_benchmark(photos, num_classes: int, weights, hp: training.HyperParameters, compare: str = "resnet50",
                       rounds: int = 5, train_precision: str = "float32",
                       trained_with: dict[str, recipes.Recipe] | None = None, model_ids=MODEL_IDS) -> dict:
    """Per-image costs of every step of a training run of ``model_ids`` (default: all six), and for the
    fine-tuned model ``compare``, where timed, an epoch with the trunk cache against a naive end-to-end ``fit``
    (the trunk frozen but recomputed for every batch).
    ``train_precision``: the arithmetic of the trained parts (the study's recipe: float32; the tuned one: auto).
    ``trained_with``: the recipes a result set recorded, per model; a model whose recipe draws fresh random
    crops every epoch (core/augmentation.py) is timed with them, at the recipe's training size, and a backbone
    is cut where its fine-tuned model's recipe fine-tunes from (``training.trained_specs``).

    Each model's training epoch is timed ``rounds`` times and the passes three times, the fastest counting; the
    cached and naive epochs of ``compare`` alternately, ``rounds`` times: this machine's speed drifts, and
    alternating keeps the drift out of the ratio.
    """
    labels = np.arange(len(photos)) % num_classes
    splits = {"train": [photos], "validation": photos, "test": photos}
    precision = training.resolve_precision()
    train_precision = training.resolve_precision(train_precision, training.TRAIN_PRECISIONS)
    costs = {m: {} for m in model_ids}
    trunk_ms, cached = {}, {}
    specs = training.trained_specs(trained_with) if trained_with else {}
    for model_id in model_ids:
        spec = specs.get(model_id, MODEL_SPECS[model_id])
        model = models.build_model(model_id, num_classes, hp.image_size, hp.dropout, weights.get(spec.backbone),
                                   spec.frozen_through)
        inputs = splits  # what the trained part reads, per split: photos, trunk output or frozen features
        test_inputs = photos  # what the evaluation reads: photos or trunk output (it runs the rest itself)
        if spec.backbone:
            trunk = models.trunk_model(model, spec)
            if spec.backbone not in trunk_ms:
                trunk_ms[spec.backbone] = _frozen_pass_ms(trunk, photos, precision)
            inputs = training.precompute(trunk, splits, precision)
            test_inputs = inputs["test"]
            if spec.attention:
                frozen = models.frozen_features_model(model, spec)
                costs[model_id]["frozen_features_ms"] = _frozen_pass_ms(frozen, inputs["test"], precision)
                inputs = training.precompute(frozen, inputs, precision)
        recipe = (trained_with or {}).get(model_id)
        trainable = training.learner_for(models.trained_part(model, spec), train_precision,
                                         any_image_size=bool(recipe and recipe.train_size))
        cached_epoch = _epoch_timer(trainable, inputs["train"][0], labels, hp.batch_size, recipe)
        costs[model_id]["train_ms"] = _fastest_seconds(cached_epoch, rounds) / len(photos) * 1000
        costs[model_id]["augmentation"] = recipe.augmentation if recipe else "views"
        costs[model_id]["train_size"] = (recipe.train_size if recipe else 0) or hp.image_size
        costs[model_id]["validation_ms"] = _ms_per_image(
            lambda: trainable.evaluate(inputs["validation"].astype(np.float32), labels, verbose=0), len(photos))
        costs[model_id]["evaluation_ms"] = _evaluation_ms(model, spec, test_inputs, photos, num_classes)
        if model_id == compare:
            naive_model = models.build_model(model_id, num_classes, hp.image_size, hp.dropout, weights.get(spec.backbone),
                                             spec.frozen_through)
            naive_epoch = _epoch_timer(training.learner_for(naive_model, train_precision), photos, labels,
                                       hp.batch_size)
            timed = [(cached_epoch(), naive_epoch()) for _ in range(rounds)]
            cached = {
                "model": compare,
                "rounds": rounds,
                "cached_epoch_s": [c for c, _ in timed],
                "naive_epoch_s": [n for _, n in timed],
                "speedup": statistics.median(n / c for c, n in timed),
            }
    return {"images": len(photos), "trunk_precision": precision, "train_precision": train_precision,
            "read_ms_per_full_size_photo": read_ms_per_full_size_photo(), "costs": costs, "trunk_ms_per_image": trunk_ms, "cache_vs_naive": cached}


def project_full_dataset(measured: dict, hp: training.HyperParameters, epochs: dict[str, int] | None = None,
                         counts: dict[str, int] = FULL_DATASET) -> dict:
    """Minutes to train all six, from the measured per-image costs (default: on the full dataset).

    ``epochs``: how many epochs each model runs (default: all ``hp.epochs``, the worst case; early stopping
    usually ends sooner). Counts every step of a run: the trunk once per view of each training photo (in
    the training precision) and once per validation and test photo (float32), the attention models' frozen
    top block likewise, every epoch's training and validation pass, and the final evaluation.
    """
    views = counts["train"] * hp.views
    others = counts["validation"] + counts["test"]
    trunk_s = sum(ms["train_views"] * views + ms["float32"] * others for ms in measured["trunk_ms_per_image"].values())
    train_s = eval_s = 0.0
    for model_id, cost in measured["costs"].items():
        n_epochs = (epochs or {}).get(model_id, hp.epochs)
        frozen = cost.get("frozen_features_ms", {"train_views": 0, "float32": 0})
        trunk_s += frozen["train_views"] * views + frozen["float32"] * others
        train_s += n_epochs * (cost["train_ms"] * counts["train"] + cost["validation_ms"] * counts["validation"])
        eval_s += cost["evaluation_ms"] * counts["test"]
    load_s = measured["read_ms_per_full_size_photo"] * (counts["train"] + others)
    minutes = {"loading_minutes": load_s / 60000, "trunk_minutes": trunk_s / 60000, "training_minutes": train_s / 60000, "evaluation_minutes": eval_s / 60000}
    return {**minutes, "total_minutes": sum(minutes.values()), "counts": counts}


def epochs_under_patience(val_loss, patience: int) -> int:
    """The epochs a run with this validation-loss history would have run under early stopping with
    ``patience``, by Keras' ``EarlyStopping`` rule: a strictly lower loss resets the wait, and the run stops
    when the wait reaches the patience. Exact for a patience up to the run's own; with a longer one the run
    cannot be replayed past its recorded epochs, which are returned."""
    best, wait = float("inf"), 0
    for epoch, loss in enumerate(val_loss, start=1):
        if loss < best:
            best, wait = loss, 0
            continue
        wait += 1
        if wait >= patience:
            return epoch
    return len(val_loss)


def scale_recorded_run(result_set, read_ms_per_full_size_photo: float, counts: dict[str, int] = FULL_DATASET,
                       patience: int | None = None) -> dict:
    """The training time a result set recorded, and that same run scaled to ``counts`` images.

    Training (with its trunk pass) scales with the training photos, the final evaluation with the test
    photos; reading is re-costed at the full-size photo cost, since the photos the run read may be smaller.
    ``epochs``: each model's recorded epochs, or for the early-stopped ones with a ``patience`` other than
    the run's, those its recorded validation loss gives under that patience (``recorded_epochs`` keeps the
    run's own); the recorded and scaled minutes are the run's as it ran.
    """
    ran = {split: sum(c.values()) for split, c in result_set.manifest["dataset_summary"]["counts"].items()}
    timings = result_set.manifest.get("timings", {})
    train_s = sum(info["train_seconds"] for info in result_set.models.values())
    eval_s = sum(info.get("evaluation_seconds", 0.0) for info in result_set.models.values())
    read_s = timings.get("split_seconds", 0.0) + timings.get("load_seconds", 0.0)
    scaled_s = (train_s * counts["train"] / ran["train"] + eval_s * counts["test"] / ran["test"]
                + read_ms_per_full_size_photo * sum(counts.values()) / 1000)
    recorded_epochs = {m: info["epochs_run"] for m, info in result_set.models.items()}
    epochs = dict(recorded_epochs)
    if patience is not None and patience != result_set.config["patience"]:
        for m, info in result_set.models.items():
            if recipes.as_trained(info).stops_early:
                epochs[m] = epochs_under_patience(result_set.history(m)["val_loss"], patience)
    return {
        "result_set": str(result_set.root),
        "image_size": result_set.config["image_size"],
        "counts": ran,
        "epochs": epochs,
        "recorded_epochs": recorded_epochs,
        "patience": patience or result_set.config["patience"],
        "evaluation_recorded": all("evaluation_seconds" in info for info in result_set.models.values()),
        "measured_minutes": (train_s + eval_s + read_s) / 60,
        "scaled_minutes": scaled_s / 60,
    }


def naive_classify_functions(loaded: dict[str, keras.Model]):
    """The straightforward way: each model's ``predict`` plus a separately built Grad-CAM model (keras-io)."""
    grad_models = {
        m: keras.Model(model.inputs, [model.get_layer(MODEL_SPECS[m].last_conv).output, model.output])
        for m, model in loaded.items()
    }

    def run(photo_batch):
        outputs = {}
        for model_id, model in loaded.items():
            probs = model.predict(photo_batch, verbose=0)
            with tf.GradientTape() as tape:
                conv, preds = grad_models[model_id](photo_batch)
                score = preds[:, int(np.argmax(probs[0]))]
            grads = tape.gradient(score, conv)
            weights = tf.reduce_mean(grads, axis=(0, 1, 2))
            heatmap = tf.nn.relu(conv[0] @ weights[..., None])[..., 0]
            outputs[model_id] = (probs, heatmap.numpy() / (float(tf.reduce_max(heatmap)) + 1e-12))
        return outputs

    return run


def classify_benchmark(loaded: dict[str, keras.Model], image, runs: int = 10, specs=None, views=None) -> dict:
    """Median milliseconds: the app's six-model classification with all heatmaps vs the naive loop, and with
    the test-time views validation took (``views``: ``inference.LoadedModels.views``) where there are any.
    ``specs``: where each model's trunk ends, as its result set recorded (``inference.LoadedModels.specs``)."""
    classifier = Classifier(loaded, specs=specs, views=views)
    naive = naive_classify_functions(loaded)
    batch = images.to_array(image, classifier.image_size)[None].astype(np.float32)
    timed = {"six_model_ms": lambda: classifier.classify_image(image), "naive_ms": lambda: naive(batch)}
    if classifier.views:
        timed["with_views_ms"] = lambda: classifier.classify_image(image, with_views=True)
    for run in timed.values():
        run()
    times = {name: [] for name in timed}
    for _ in range(runs):  # alternately, so that a change in the machine's load touches all alike
        for name, run in timed.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000)
    medians = {name: statistics.median(ms) for name, ms in times.items()}
    return {"image_size": classifier.image_size, "models": len(loaded), "runs": runs, **medians,
            "ratio": medians["naive_ms"] / medians["six_model_ms"],
            "views": {m: chosen.option for m, chosen in classifier.views.items()}}


_ROOT = Path(__file__).resolve().parent.parent


def cli_first_answer(photo: str, artifacts_dir: str, runs: int = 3) -> dict:
    """Wall seconds from starting ``scripts/classify.py PHOTO`` to its exit: the time to the first answer.

    Also the bare ``import tensorflow`` in a fresh interpreter, the floor the libraries set.
    """
    def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        return time.perf_counter() - start, done

    cli = [sys.executable, str(_ROOT / "scripts" / "classify.py"), "--artifacts", str(artifacts_dir), photo]
    seconds, outputs = [], None
    for _ in range(runs):
        elapsed, done = timed(cli)
        if done.returncode != 0:
            raise RuntimeError(f"classify.py failed: {done.stderr.strip()}")
        seconds.append(elapsed)
        outputs = done
    import_s = [timed([sys.executable, "-c", "import tensorflow"])[0] for _ in range(runs)]
    return {
        "first_answer_s": statistics.median(seconds), "runs_s": seconds,
        "tensorflow_import_s": statistics.median(import_s),
        "stdout_lines": len(outputs.stdout.splitlines()), "stderr": outputs.stderr,
    }


# VmHWM (peak resident memory of this process image) rather than ru_maxrss, which Linux carries over exec
# from the forking parent.
_DECODE_PEAK = """
import json, re, sys
from core import images
def peak_kb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
before = peak_kb()
image = images.read_image(sys.argv[1])
print(json.dumps({"decoded": list(image.size), "peak_rise_mb": (peak_kb() - before) / 1024}))
"""


def jpeg_decode_peak(megapixels: float = 200, quality: int = 30) -> dict:
    """Peak memory rise of ``images.read_image`` on a generated ``megapixels`` 4:3 JPEG, in a fresh process."""
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5 / 16)) * 16
    height = width * 3 // 4
    photo = Image.radial_gradient("L").resize((width, height)).convert("RGB")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "phone.jpg"
        photo.save(path, "JPEG", quality=quality)
        del photo
        done = subprocess.run([sys.executable, "-c", _DECODE_PEAK, str(path)], capture_output=True, text=True,
                              cwd=_ROOT, check=True)
        file_mb = path.stat().st_size / 2**20
    measured = json.loads(done.stdout)
    return {"size": [width, height], "megapixels": width * height / 1e6, "file_mb": file_mb,
            "full_decode_mb": width * height * 3 / 2**20, **measured}


def grow_dataset(source, target, count: int, seed: int = 0) -> Path:
    """A copy of the dataset at ``source`` grown to ``count`` photos in ``target``, for memory at scale.

    The originals first, then altered copies (mirrored on odd rounds, brightness and colour scaled, re-encoded
    at another JPEG quality) beside their originals, in the same split and class folder, named
    ``copy<round>-<original's stem>.jpg``. The clean split keeps a copy with its original where the duplicate
    detection joins them, which ``copies_apart`` counts afterwards (memory does not depend on it).
    """
    files = dataset.scan(source)
    rng = np.random.default_rng(seed)
    target = Path(target)
    for n in range(count):
        f = files[n % len(files)]
        copy_round = n // len(files)
        path = Path(f.path)
        out = target / path.parent / (path.name if copy_round == 0 else f"copy{copy_round}-{path.stem}.jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        image = images.read_image(f"{source}/{f.path}").convert("RGB")
        if copy_round:
            pixels = np.asarray(image, np.float32) * rng.uniform(0.8, 1.2, 3)
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            if copy_round % 2:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(out, "JPEG", quality=int(rng.integers(70, 95)) if copy_round else 92)
    return target


_COPY_NAME = re.compile(r"copy\d+-(.+)\.jpg")


def copies_apart(plan_json: dict) -> dict:
    """How many of ``grow_dataset``'s copies the split of a grown dataset (its dataset.json) put in
    another split than their original: each one a near duplicate the detection missed."""
    split_of = {path: split for split, files in plan_json["files"].items() for path, _ in files}
    original_split = {(str(Path(path).parent), Path(path).stem): split for path, split in split_of.items()
                      if not _COPY_NAME.fullmatch(Path(path).name)}
    copies = {path: split for path, split in split_of.items() if _COPY_NAME.fullmatch(Path(path).name)}
    apart = sum(split != original_split.get((str(Path(path).parent), _COPY_NAME.fullmatch(Path(path).name)[1]))
                for path, split in copies.items())
    return {"copies": len(copies), "apart": apart}


_MEMORY_CHILD = """
import json, logging, os, resource, sys, threading, time
sys.path.insert(0, {root!r})
from core import training
phases, peak, anon_peak, start = [], [0, 0], [0], time.perf_counter()
def rss():  # resident bytes now, and those of them not backed by a file (Linux: statm's resident - shared)
    with open("/proc/self/statm") as statm:
        resident, shared = (int(v) for v in statm.read().split()[1:3])
    page = os.sysconf("SC_PAGE_SIZE")
    return resident * page, (resident - shared) * page
def sample():
    now = rss()
    peak[:] = [max(p, n) for p, n in zip(peak, now)]
    anon_peak[0] = max(anon_peak[0], now[1])
def sampler():
    while True:
        sample()
        time.sleep(0.1)
threading.Thread(target=sampler, daemon=True).start()
class Phase(logging.Handler):
    def emit(self, record):
        sample()
        phases.append({{"until": record.getMessage(), "seconds": time.perf_counter() - start,
                       "peak_rss_mb": peak[0] / 2**20, "peak_anon_mb": peak[1] / 2**20}})
        peak[:] = [0, 0]
logging.getLogger("core.training").addHandler(Phase())
logging.getLogger("core.training").setLevel(logging.INFO)
status = training.run({data!r}, {out!r}, hp=training.HyperParameters(**{hp!r}), weights_dir={weights!r}, progress=False,
                      recipe={recipe!r}, train_precision={train_precision!r})
sample()
print(json.dumps({{"status": status, "seconds": time.perf_counter() - start, "phases": phases,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_anon_mb": anon_peak[0] / 2**20}}))
"""


def training_memory(source, counts: list[int], hp: training.HyperParameters, weights_dir=None,
                    recipe: str = recipes.STUDY, train_precision: str = "float32") -> dict:
    """Peak resident memory and wall time of a real training of all six models under ``recipe``, per dataset
    size (the tuned recipe's CNNs draw fresh crops from the decoded photos instead of reading cached views).

    Each size is trained in a fresh process (peak memory is per process) on ``grow_dataset``'s copy; phases
    end at training's log lines (photos loaded, each model trained), each with its own peak.
    """
    root = Path(__file__).resolve().parents[1]
    result = {"machine": machine(), "hyper_parameters": hp.__dict__, "recipe": recipe,
              "train_precision": train_precision, "runs": {}}
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            data = grow_dataset(source, Path(tmp) / "data", count)
            code = _MEMORY_CHILD.format(root=str(root), data=str(data), out=str(Path(tmp) / "out"),
                                        hp=hp.__dict__, weights=weights_dir, recipe=recipe,
                                        train_precision=train_precision)
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
            if done.returncode:
                raise RuntimeError(f"training on {count} photos failed: {done.stderr[-2000:]}")
            result["runs"][str(count)] = json.loads(done.stdout.strip().splitlines()[-1])
            plan = json.loads((Path(tmp) / "out" / artifacts.DATASET).read_text())
            result["runs"][str(count)]["copies_in_another_split"] = copies_apart(plan)
    peaks = [run["peak_rss_mb"] for run in result["runs"].values()]
    result["peak_growth"] = peaks[-1] / peaks[0] - 1 if len(peaks) > 1 else None
    return result
