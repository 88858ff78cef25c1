"""The TensorBoard and MLflow exports, read back with the libraries' own readers."""

import subprocess
import sys
from pathlib import Path

import pytest

from core import artifacts, export

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "artifacts"

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard not installed (pip install -r requirements-export.txt)",
)
tensor_util = pytest.importorskip("tensorboard.util.tensor_util")
mlflow = pytest.importorskip("mlflow", reason="mlflow not installed (pip install -r requirements-export.txt)")



@pytest.fixture(params=["tiny", "shipped"])
def result_set(request):
    root = request.getfixturevalue("tiny_results") if request.param == "tiny" else SHIPPED
    return artifacts.open_result_set(root)


def expected_history(result_set, run_name):
    model_id, _, seed = run_name.partition("-seed")
    if seed:
        return result_set.replicate_history(model_id, int(seed))
    return result_set.history(model_id)


def test_tensorboard_scalars_match_histories(result_set, tmp_path):
    folders = export.to_tensorboard(result_set, tmp_path)
    expected_runs = {
        name
        for m in result_set.models
        for name in [m, *(f"{m}-seed{s}" for s in result_set.replicate_seeds(m))]
    }
    assert {f.name for f in folders} == expected_runs
    for folder in folders:
        accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
        accumulator.Reload()
        history = expected_history(result_set, folder.name)
        for column in ("loss", "val_accuracy", "learning_rate"):
            events = accumulator.Tensors(column)
            assert [e.step for e in events] == history["epoch"].tolist()
            values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]
            assert values == pytest.approx(history[column].tolist(), rel=1e-6)
        model_id = folder.name.partition("-seed")[0]
        seed = folder.name.partition("-seed")[2]
        metrics = result_set.replicate_metrics(model_id, int(seed)) if seed else result_set.metrics(model_id)
        (final,) = accumulator.Tensors("test/accuracy")
        assert float(tensor_util.make_ndarray(final.tensor_proto)) == pytest.approx(metrics["accuracy"])
        assert final.step == history["epoch"].max()


def test_mlflow_runs_match_histories(result_set, tmp_path):
    logged = export.to_mlflow(result_set, tmp_path / "mlflow")
    client = mlflow.MlflowClient(tracking_uri=export.mlflow_tracking_uri(tmp_path / "mlflow"))
    experiment = client.get_experiment_by_name(export.result_set_name(result_set))
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    assert {r.info.run_name for r in found} == set(logged)
    for run in found:
        history = expected_history(result_set, run.info.run_name)
        points = client.get_metric_history(run.info.run_id, "val_loss")
        assert sorted(p.step for p in points) == history["epoch"].tolist()
        by_step = {p.step: p.value for p in points}
        assert [by_step[e] for e in history["epoch"]] == pytest.approx(history["val_loss"].tolist(), rel=1e-6)
        model_id = run.info.run_name.partition("-seed")[0]
        assert float(run.data.params["learning_rate"]) == pytest.approx(result_set.models[model_id]["learning_rate"])
        assert run.data.params["split"] == result_set.config["split"]
        assert run.info.status == "FINISHED"


def test_script_rejects_a_folder_that_is_not_a_result_set(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export.py"), "--artifacts", str(tmp_path), "--tensorboard", str(tmp_path / "tb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path} is not a result set: it has no manifest.json"
