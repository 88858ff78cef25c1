"""Export a result set's training histories and final test metrics to TensorBoard and MLflow.

Both libraries are optional extras (``requirements-export.txt``); they are imported only when used.
The result set is read only through ``core.artifacts``.

TensorBoard: one run folder per model (``OUT/<model>``) and per extra seed (``OUT/<model>-seed<N>``); every
numeric history column is a scalar by epoch, the final test metrics are scalars named ``test/<name>`` at the
last epoch, and the model's settings are a text summary.

MLflow: one run per model (and per extra seed) in an experiment named after the result set; params are the
manifest's configuration plus the model's learning rate, metrics are the history columns with the epoch as
step, and the final test metrics are logged as ``test_<name>``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.artifacts import ResultSet

# History columns that are not metrics: the x axis itself.
STEP_COLUMN = "epoch"
# Final metrics exported: the scalar ones (intervals, per-class tables and confusion matrices stay in the dashboard).
EXPORTED_METRICS = ("accuracy", "loss", "top5_accuracy", "group_accuracy", "clean_accuracy", "ece", "inference_ms")


@dataclass
class Run:
    """One training run of one model: the main run (seed None) or an extra seed."""

    model_id: str
    seed: int | None
    history: pd.DataFrame
    metrics: dict

    @property
    def name(self) -> str:
        return self.model_id if self.seed is None else f"{self.model_id}-seed{self.seed}"


def runs(result_set: ResultSet) -> list[Run]:
    """Every run of every verified model, main run first, then its extra seeds."""
    found = []
    for model_id in result_set.models:
        found.append(Run(model_id, None, result_set.history(model_id), result_set.metrics(model_id)))
        for seed in result_set.replicate_seeds(model_id):
            history = result_set.replicate_history(model_id, seed)
            found.append(Run(model_id, seed, history, result_set.replicate_metrics(model_id, seed)))
    return found


def history_series(history: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """Numeric history columns as (epoch, value) pairs, rows with a missing value left out."""
    steps = history[STEP_COLUMN].astype(int)
    series = {}
    for column in history.columns:
        if column == STEP_COLUMN or not pd.api.types.is_numeric_dtype(history[column]):
            continue
        values = history[column]
        series[column] = [(int(s), float(v)) for s, v in zip(steps, values) if pd.notna(v)]
    return series


def final_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(metrics[k]) for k in EXPORTED_METRICS if isinstance(metrics.get(k), (int, float))}


def run_params(result_set: ResultSet, run: Run) -> dict[str, str]:
    """The manifest's configuration (nested values as JSON) plus this model's learning rate and seed."""
    config = dict(result_set.config)
    learning_rates = config.pop("learning_rates", {})
    params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    params["model"] = run.model_id
    params["learning_rate"] = str(result_set.models[run.model_id].get("learning_rate", learning_rates.get(run.model_id)))
    if run.seed is not None:
        params["seed"] = str(run.seed)
    return params


def result_set_name(result_set: ResultSet) -> str:
    """A name that says what the result set is: its split, image size and folder."""
    config = result_set.config
    return f"{result_set.root.resolve().name} (split {config.get('split')}, {config.get('image_size')} px)"


def to_tensorboard(result_set: ResultSet, out: str | Path) -> list[Path]:
    """Write one TensorBoard run folder per run under ``out``; returns the run folders."""
    import tensorflow as tf

    out = Path(out)
    folders = []
    for run in runs(result_set):
        folder = out / run.name
        writer = tf.summary.create_file_writer(str(folder))
        with writer.as_default():
            last_epoch = 0
            for column, points in history_series(run.history).items():
                for step, value in points:
                    tf.summary.scalar(column, value, step=step)
                    last_epoch = max(last_epoch, step)
            for name, value in final_metrics(run.metrics).items():
                tf.summary.scalar(f"test/{name}", value, step=last_epoch)
            settings = "\n".join(f"- **{k}**: {v}" for k, v in run_params(result_set, run).items())
            tf.summary.text("settings", settings, step=0)
        writer.close()
        folders.append(folder)
    return folders


def to_mlflow(result_set: ResultSet, folder: str | Path) -> dict[str, str]:
    """Log every run to the MLflow tracking folder ``folder``; returns run name -> MLflow run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=mlflow_tracking_uri(folder))
    experiment = result_set_name(result_set)
    existing = client.get_experiment_by_name(experiment)
    experiment_id = (
        existing.experiment_id
        if existing
        else client.create_experiment(experiment, artifact_location=(Path(folder).resolve() / "artifacts").as_uri())
    )
    now = int(time.time() * 1000)
    logged = {}
    for run in runs(result_set):
        mlflow_run = client.create_run(experiment_id, run_name=run.name, tags={"result_set": str(result_set.root)})
        metrics = [
            Metric(column, value, now, step)
            for column, points in history_series(run.history).items()
            for step, value in points
        ]
        last_epoch = max((m.step for m in metrics), default=0)
        metrics += [Metric(f"test_{k}", v, now, last_epoch) for k, v in final_metrics(run.metrics).items()]
        params = [Param(k, v) for k, v in run_params(result_set, run).items()]
        # log_batch takes at most 1000 metrics a call.
        for start in range(0, max(len(metrics), 1), 1000):
            client.log_batch(mlflow_run.info.run_id, metrics=metrics[start : start + 1000], params=params if start == 0 else [])
        client.set_terminated(mlflow_run.info.run_id)
        logged[run.name] = mlflow_run.info.run_id
    return logged


def mlflow_tracking_uri(folder: str | Path) -> str:
    """The tracking URI of an MLflow folder: a SQLite store inside it (MLflow 3 refuses plain file stores)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"
