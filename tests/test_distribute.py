import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from conftest import ROOT, TINY_HP
from core import artifacts, cache, training


def test_mirrored_strategy_over_two_logical_cpus_trains_one_step():
    # Logical devices must be set before TensorFlow starts, hence a fresh process.
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, {str(ROOT)!r})
        from core import models, recipes, training
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = models.build_model("cnn", 3, 32)
        before = [w.copy() for w in model.get_weights()]
        hp = training.HyperParameters(image_size=32, batch_size=8, epochs=1, patience=1, views=1)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 255, (8, 32, 32, 3)).astype(np.uint8)
        y = rng.integers(0, 3, 8)
        history, best = training.fit(model, recipes.Recipe(1e-3), [x], y, x, y, hp, seed=0)
        changed = any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
        print("replicas", strategy.num_replicas_in_sync, "epochs", len(history), "changed", changed)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2 epochs 1 changed True" in done.stdout


# Dropout 0: each replica draws its dropout masks from the same seed, so with dropout the two workers' masks
# are not the one worker's; without, a step of two workers is the one worker's step (see the README).
TWO_WORKER_HP = {**TINY_HP, "epochs": 1, "dropout": 0.0}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_on_two_workers(data, out, *extra) -> list[str]:
    """scripts/train.py --strategy multiworker started twice on localhost, as on two hosts; their outputs."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    args = [sys.executable, str(ROOT / "scripts" / "train.py"), "--data-dir", str(data), "--out", str(out),
            "--models", "vgg16", "--random-backbones", "--strategy", "multiworker", *extra,
            *[f"--{key.replace('_', '-')}={value}" for key, value in TWO_WORKER_HP.items()]]
    workers = [
        subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                     "task": {"type": "worker", "index": index}})})
        for index in range(2)
    ]
    try:
        outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    finally:
        for worker in workers:  # one that failed leaves the other waiting on it forever
            worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    return outputs


def test_two_workers_train_in_step_and_only_the_chief_writes_the_result_set(tiny_data, tmp_path):
    out = tmp_path / "out"
    outputs = train_on_two_workers(tiny_data, out, "--keep-cache")
    assert all(f"{'vgg16':20s} trained" in output for output in outputs)

    # Worker 1 wrote beside the result set, not into it; kept here only because of --keep-cache.
    chief, other = artifacts.open_result_set(out), artifacts.open_result_set(f"{out}.worker1")
    assert list(chief.models) == ["vgg16"]
    # The two replicas applied the same all-reduced updates, so they hold the same model.
    assert chief.history("vgg16")["loss"].tolist() == other.history("vgg16")["loss"].tolist()
    assert np.array_equal(chief.predictions("vgg16").probs, other.predictions("vgg16").probs)
    # Each worker computed the whole trunk cache itself, in its own folder.
    for root in (out, tmp_path / "out.worker1"):
        views = sorted((root / cache.CACHE_FOLDER).glob("vgg16-*/trunk/train-view*.npy"))
        assert len(views) == TWO_WORKER_HP["views"]
        assert len(np.load(views[0], mmap_mode="r")) == sum(chief.manifest["dataset_summary"]["counts"]["train"].values())

    # What one process writes with the same settings: the same files, settings and metadata, and the same
    # numbers up to float rounding (a global batch's gradient as the sum of two halves'). The one process uses
    # MirroredStrategy on its one device: under any strategy Keras draws a first batch from an extra iterator
    # of the training data to build the model, and each iterator reshuffles, so without one (the default) the
    # epochs see the same orders shifted by one, and the numbers differ as another shuffle makes them differ.
    single = tmp_path / "single"
    training.run(tiny_data, single, ["vgg16"], training.HyperParameters(**TWO_WORKER_HP), random_backbones=True,
                 strategy="mirrored", progress=False)
    alone = artifacts.open_result_set(single)

    def files(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and cache.CACHE_FOLDER not in p.parts)

    assert files(out) == files(single)
    assert chief.manifest["config"] == alone.manifest["config"]
    assert chief.manifest["files"] == alone.manifest["files"]  # dataset.json and the test photos, byte for byte
    timing = {"train_seconds", "evaluation_seconds", "stored_bytes"}
    assert {k: v for k, v in chief.models["vgg16"].items() if k not in timing} == \
           {k: v for k, v in alone.models["vgg16"].items() if k not in timing}
    assert np.allclose(chief.history("vgg16")["loss"], alone.history("vgg16")["loss"], atol=1e-3)
    assert np.allclose(chief.predictions("vgg16").probs, alone.predictions("vgg16").probs, atol=1e-3)

    # A rerun resumes from the chief's result set: nothing left to train on either worker, and without
    # --keep-cache both caches and worker 1's folder are gone.
    outputs = train_on_two_workers(tiny_data, out)
    assert all(f"{'vgg16':20s} done" in output for output in outputs)
    assert not (tmp_path / "out.worker1").exists() and not (out / cache.CACHE_FOLDER).exists()
