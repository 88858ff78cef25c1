"""The result-set format: the one module that writes and reads what training produces.

Layout of a result set ``OUT/``::

    manifest.json         schema version, configuration, classes and groups, library versions, timings,
                          and the SHA-256 of every other file (loading verifies them)
    dataset.json          the split: policy, seed, exact file lists, skipped files, duplicate leakage
    samples/<class>/*.jpg every test photo, small (at most SAMPLE_SIDE px), for the pages and as samples
    <model id>/
        model.json        the model's spec (with where its frozen trunk ends), training summary, parameter
                          count, stored size
        model.keras       (CNNs) the whole model
        top.weights.h5    (backbone models) only what training changed: the unfrozen block and the head;
                          the frozen rest is rebuilt from the ImageNet weights
        history.csv       one row per epoch
        seed<N>-*.csv/json/npz  history, metrics and predictions of extra runs with other seeds (--seeds)
        metrics.json      test metrics, the temperature fitted on validation (core.calibration), and test-time
                          options where measured (core.testtime)
        predictions.npz   test files, true labels, class probabilities
        view_predictions.npz  the same with the test-time views validation took (optional; core.testtime)
        maps.npz          low-resolution float16 Grad-CAM (predicted and true class) and attention maps
    openset.json/.npz     the open-set verdict (optional; core.openset)
    probe.json/.npz       the linear-probe reference (optional; core.probe): frozen-backbone features and
                          logistic regression, its choice of C, test metrics and test probabilities

Every file is written atomically (temporary file, fsync, rename) and a model folder is first written as
``.staging-<id>/`` and renamed when complete, so a killed run never leaves a file that a reader would take
as complete. A model counts as present only when the manifest lists it and every checksum matches.
Nothing is pickled: JSON, CSV, NPZ without object arrays, and Keras files loaded in safe mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.specs import MODEL_IDS, MODEL_SPECS, ModelSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DATASET = "dataset.json"
SAMPLES = "samples"
SAMPLE_SIDE = 224  # longer side of the test photos a result set carries
MODEL_JSON = "model.json"
WHOLE_MODEL = "model.keras"
TOP_WEIGHTS = "top.weights.h5"
HISTORY = "history.csv"
METRICS = "metrics.json"
PREDICTIONS = "predictions.npz"
# The test predictions with the test-time views validation took (core.testtime), where it took more than the
# photo alone: the same layout as PREDICTIONS, the views' probabilities averaged (unscaled).
VIEW_PREDICTIONS = "view_predictions.npz"
MAPS = "maps.npz"
OPENSET = "openset.json"  # the open-set verdict's method, thresholds and measured figures (core.openset)
OPENSET_ARRAYS = "openset.npz"  # its fitted arrays (PCA projection, class Gaussians, linear probe)
# of openset.json/.npz's layout; a reader meets another version as no verdict (1: the earlier kNN layout, unmarked)
OPENSET_VERSION = 2
PROBE = "probe.json"  # the linear-probe reference's settings, choice of C and test metrics per backbone (core.probe)
PROBE_ARRAYS = "probe.npz"  # its test files, labels and class probabilities per backbone
PROBE_VERSION = 1  # of probe.json's layout; a reader meets an unknown version as no probe at all
# A model's test-time options in its metrics (core.testtime.option_figures): {"method", "baseline", "options":
# {name: figures}, "chosen"}. The layouts before them ("test_time_flip", "test_time_size") are not read.
TEST_TIME_VIEWS = "test_time_views"  # views of each photo averaged (its mirror image, crops)
TEST_TIME_SIZES = "test_time_sizes"  # the photos resized to other sizes (options named by their size in px)
TEST_TIME_OPTIONS = (TEST_TIME_VIEWS, TEST_TIME_SIZES)


def chosen_option(metrics: dict, key: str) -> tuple[str, dict] | None:
    """The test-time option validation chose (``key``: one of ``TEST_TIME_OPTIONS``) and its figures, from a
    model's metrics; None where it was not measured."""
    measured = metrics.get(key)
    return None if not measured else (measured["chosen"], measured["options"][measured["chosen"]])
# Settings that must match for a rerun to continue an existing result set instead of mixing two runs.
RESUME_KEYS = ("image_size", "batch_size", "epochs", "patience", "dropout", "views", "seed", "split", "dataset", "recipe")
# What a result set written before a key existed had instead (sets from before recipes used the study's).
RESUME_DEFAULTS = {"recipe": "study"}


def sample_relpath(file: str, label: str) -> str:
    """Where a result set keeps its copy of a test photo: ``samples/<class>/<path with / as __>.jpg``.

    The whole relative path goes into the name: two folders of the dataset can hold photos of one name.
    """
    flat = file.rsplit(".", 1)[0].replace("/", "__")
    return f"{SAMPLES}/{label}/{flat}.jpg"


def replicate_file(seed: int, name: str) -> str:
    """File name of another seed's run of a model, e.g. ``seed1-metrics.json``."""
    return f"seed{seed}-{name}"


class ResultSetError(Exception):
    """A result set cannot be used; the message says why."""


# ---------------------------------------------------------------- writing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; result sets are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=False) + "\n").encode())


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_bytes(path, frame.to_csv(index=False).encode())


def write_npz(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def write_predictions(path: Path, files, y_true, probs) -> None:
    write_npz(path, files=np.array(files), y_true=np.asarray(y_true), probs=np.asarray(probs, np.float32))


def write_test_files(folder: Path, files: list[str], y_true, probs, maps: dict, metrics: dict) -> None:
    """A model's test results: predictions, low-resolution float16 maps, metrics."""
    write_predictions(folder / PREDICTIONS, files, y_true, probs)
    write_npz(folder / MAPS, **{name: np.asarray(m, np.float16) for name, m in maps.items()})
    write_json(folder / METRICS, metrics)


def _write_addition(root: str | os.PathLike, json_name: str, arrays_name: str, info: dict, arrays: dict) -> None:
    """Add (or replace) a JSON + NPZ pair beside the models: both files atomically, then the manifest."""
    root = Path(root)
    manifest = read_json(root / MANIFEST)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    for name, data in ((arrays_name, buffer.getvalue()), (json_name, (json.dumps(info, indent=1) + "\n").encode())):
        atomic_write_bytes(root / name, data)
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
    write_json(root / MANIFEST, manifest)


def write_openset(root: str | os.PathLike, info: dict, arrays: dict[str, np.ndarray]) -> None:
    """Add (or replace) the open-set verdict of a result set (``core.openset.to_stored``)."""
    _write_addition(root, OPENSET, OPENSET_ARRAYS, {"version": OPENSET_VERSION, **info}, arrays)


def write_linear_probe(root: str | os.PathLike, info: dict, arrays: dict[str, np.ndarray]) -> None:
    """Add (or replace) the linear-probe reference of a result set (``core.probe.measure``)."""
    _write_addition(root, PROBE, PROBE_ARRAYS, {"version": PROBE_VERSION, **info}, arrays)


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


class ResultSetWriter:
    """Creates or continues a result set. One writer per folder at a time."""

    def __init__(self, root: str | os.PathLike, config: dict):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ResultSetError(f"cannot write to {self.root}: {err.strerror or err}") from err
        path = self.root / MANIFEST
        self.previous_config = {}  # the configuration of the set being continued, for checks beyond RESUME_KEYS
        if path.exists():
            self.manifest = read_json(path)
            old = self.previous_config = self.manifest.get("config", {})
            changed = [k for k in RESUME_KEYS if old.get(k, RESUME_DEFAULTS.get(k)) != config.get(k, RESUME_DEFAULTS.get(k))]
            if self.manifest.get("schema_version") != SCHEMA_VERSION or changed:
                raise ResultSetError(
                    f"{self.root} holds a result set made with other settings ({', '.join(changed) or 'schema'}); "
                    "choose a new --out folder or delete that one"
                )
        else:
            self.manifest = {"schema_version": SCHEMA_VERSION, "created": _now(), "models": {}, "files": {}}
        self.manifest["config"] = config
        for stale in self.root.glob(".staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        # Temporary files of atomic writes cut short by a killed run (those in staging folders went above).
        for stale in [*self.root.glob(".*.tmp"), *self.root.glob(f"{SAMPLES}/*/.*.tmp")]:
            stale.unlink(missing_ok=True)

    def save_manifest(self, **fields) -> None:
        self.manifest.update(fields)
        self.manifest["updated"] = _now()
        write_json(self.root / MANIFEST, self.manifest)

    def write_file(self, relpath: str, data: bytes) -> None:
        """A top-level file (dataset.json, a sample photo) recorded with its checksum."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        self.manifest["files"][relpath] = hashlib.sha256(data).hexdigest()

    def is_complete(self, model_id: str) -> bool:
        entry = self.manifest["models"].get(model_id)
        return entry is not None and not _verify(self.root / model_id, entry["files"])

    @contextlib.contextmanager
    def model_folder(self, model_id: str, keep_existing: bool = False):
        """Yield a staging folder; on success it becomes ``OUT/<id>/`` and enters the manifest.

        With ``keep_existing`` the staging folder starts as a copy of the model's current folder, for
        rewriting some of its files (re-evaluation) with the same all-or-nothing guarantee.
        """
        staging = self.root / f".staging-{model_id}"
        shutil.rmtree(staging, ignore_errors=True)
        if keep_existing:
            shutil.copytree(self.root / model_id, staging)
        else:
            staging.mkdir()
        try:
            yield staging
            files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
            for name in files:
                with open(staging / name, "rb") as f:
                    os.fsync(f.fileno())
            final = self.root / model_id
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            self.manifest["models"][model_id] = {"files": files, "written": _now()}
            self.save_manifest()
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _plain_name(name) -> bool:
    """A bare file name, which cannot point outside its folder (no separator, not absolute, not ``..``)."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def _verify(folder: Path, files: dict[str, str]) -> str | None:
    """None when every file is there with its checksum, else what is wrong."""
    if not folder.is_dir():  # say so, rather than name the first of its files as missing
        return f"its folder {folder.name}/ is missing"
    for name, expected in files.items():
        if not _plain_name(name):
            return f"{name!r} is not a plain file name (the manifest may have been tampered with)"
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != expected:
            return f"{name} is damaged (checksum mismatch)"
    return None


# ---------------------------------------------------------------- reading


@dataclass
class Predictions:
    files: np.ndarray  # (N,) str, relative to the dataset root
    y_true: np.ndarray  # (N,) int
    probs: np.ndarray  # (N, C) float32

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.y_pred == self.y_true


@dataclass
class ResultSet:
    """A verified result set. Models that are missing or damaged are in ``problems`` with the reason."""

    root: Path
    manifest: dict
    models: dict[str, dict] = field(default_factory=dict)  # id -> model.json, for verified models only
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def class_names(self) -> list[str]:
        return self.manifest["class_names"]

    def data_root(self, override=None) -> str | None:
        """Where the set's photos are: ``override`` where given, else the folder it was trained from, as
        recorded (None for a set that recorded none)."""
        return str(override) if override else self.manifest.get("dataset_summary", {}).get("root")

    @property
    def groups(self) -> dict[str, str]:
        return self.manifest["groups"]

    @property
    def class_groups(self) -> list[str]:
        return [self.groups[c] for c in self.class_names]

    def dataset(self) -> dict:
        return read_json(self.root / DATASET)

    def history(self, model_id: str) -> pd.DataFrame:
        return pd.read_csv(self.root / model_id / HISTORY)

    def metrics(self, model_id: str) -> dict:
        return read_json(self.root / model_id / METRICS)

    def has_view_predictions(self, model_id: str) -> bool:
        """Whether the model has test predictions with test-time views (``VIEW_PREDICTIONS``)."""
        return (self.root / model_id / VIEW_PREDICTIONS).is_file()

    def predictions(self, model_id: str, with_views: bool = False) -> Predictions | None:
        """The model's stored test predictions; ``with_views``: those with the test-time views validation took
        (``VIEW_PREDICTIONS``), None where it has none."""
        path = self.root / model_id / (VIEW_PREDICTIONS if with_views else PREDICTIONS)
        if with_views and not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            return Predictions(data["files"], data["y_true"], data["probs"])

    def maps(self, model_id: str) -> dict[str, np.ndarray]:
        with np.load(self.root / model_id / MAPS, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def replicate_seeds(self, model_id: str) -> list[int]:
        """Seeds of the extra runs of a model (training with --seeds), besides its main run."""
        names = self.manifest["models"][model_id]["files"]
        suffix = "-" + METRICS
        return sorted(int(n[4 : -len(suffix)]) for n in names if n.startswith("seed") and n.endswith(suffix))

    def replicate_history(self, model_id: str, seed: int) -> pd.DataFrame:
        return pd.read_csv(self.root / model_id / replicate_file(seed, HISTORY))

    def replicate_metrics(self, model_id: str, seed: int) -> dict:
        return read_json(self.root / model_id / replicate_file(seed, METRICS))

    def samples(self) -> list[tuple[Path, str]]:
        """The sample photos shipped with the result set, as (path, class)."""
        return [
            (self.root / rel, rel.split("/")[1])
            for rel in sorted(self.manifest["files"])
            if rel.count("/") == 2 and rel.startswith(SAMPLES + "/") and all(map(_plain_name, rel.split("/")))
        ]

    def _addition(self, json_name: str, arrays_name: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        """A verified JSON + NPZ pair beside the models; None when absent (older sets) or damaged."""
        names = {n: self.manifest["files"].get(n) for n in (json_name, arrays_name)}
        if None in names.values() or _verify(self.root, names):
            return None
        with np.load(self.root / arrays_name, allow_pickle=False) as data:
            return read_json(self.root / json_name), {k: data[k] for k in data.files}

    def openset(self) -> tuple[dict, dict[str, np.ndarray]] | None:
        """The open-set verdict's settings and fitted arrays; None when absent, damaged, or of a layout this
        version does not read."""
        stored = self._addition(OPENSET, OPENSET_ARRAYS)
        return stored if stored is not None and stored[0].get("version") == OPENSET_VERSION else None

    def linear_probe(self) -> tuple[dict, dict[str, Predictions]] | None:
        """The linear-probe reference: settings and metrics, and test predictions per backbone.

        None when the set has none (made before it existed), it is damaged, or of a layout this version
        does not read.
        """
        stored = self._addition(PROBE, PROBE_ARRAYS)
        if stored is None or stored[0].get("version") != PROBE_VERSION:
            return None
        info, arrays = stored
        return info, {b: Predictions(arrays["files"], arrays["y_true"], arrays[f"{b}.probs"]) for b in info["backbones"]}

    def spec(self, model_id: str) -> ModelSpec:
        """The model as this set trained it: its trunk cut where ``model.json`` records one (``trunk_output``;
        sets made before it was recorded cut every backbone at its usual layer)."""
        return MODEL_SPECS[model_id].cut_at(self.models[model_id].get("trunk_output"))

    def weights_path(self, model_id: str) -> Path:
        name = TOP_WEIGHTS if self.models[model_id]["backbone"] else WHOLE_MODEL
        return self.root / model_id / name

    def has_weights(self, model_id: str) -> bool:
        """Whether the model can classify new photos; a set kept for comparison only carries none."""
        if model_id not in self.models:
            return False
        return self.weights_path(model_id).name in self.manifest["models"][model_id]["files"]


def open_result_set(root: str | os.PathLike) -> ResultSet:
    """Open and verify a result set folder; raises ResultSetError when it is not one at all."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ResultSetError(f"{root} is not a folder")
    path = root / MANIFEST
    if not path.is_file():
        raise ResultSetError(f"{root} is not a result set: it has no {MANIFEST}")
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as err:
        raise ResultSetError(f"{path} cannot be read: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ResultSetError(f"{root}: result-set schema version {version!r}; this version reads {SCHEMA_VERSION}")
    for key in ("config", "class_names", "groups", "models", "files"):
        if key not in manifest:
            raise ResultSetError(f"{path} lacks {key!r}")
    problem = _verify(root, {DATASET: manifest["files"].get(DATASET, "")})
    if problem:
        raise ResultSetError(f"{root}: {problem}")
    result = ResultSet(root, manifest)
    for model_id in MODEL_IDS:
        entry = manifest["models"].get(model_id)
        if entry is None:
            result.problems[model_id] = "not in this result set (not trained, or training did not finish)"
            continue
        problem = _verify(root / model_id, entry["files"])
        if problem:
            result.problems[model_id] = problem
            continue
        result.models[model_id] = read_json(root / model_id / MODEL_JSON)
    return result


def strip_weights(root: str | os.PathLike) -> list[str]:
    """Remove every model's weights from a result set, keeping it valid for comparison; returns what went.

    The manifest is rewritten first (the weights are no longer listed), then the files are deleted, so an
    interruption leaves at worst an unlisted file behind, never a listed one that is missing.
    """
    root = Path(root).expanduser()
    manifest = read_json(root / MANIFEST)
    removed = []
    for model_id, entry in manifest["models"].items():
        for name in (WHOLE_MODEL, TOP_WEIGHTS):
            if entry["files"].pop(name, None) is not None:
                removed.append(f"{model_id}/{name}")
    manifest["updated"] = _now()
    write_json(root / MANIFEST, manifest)
    for rel in removed:
        (root / rel).unlink(missing_ok=True)
    return removed
