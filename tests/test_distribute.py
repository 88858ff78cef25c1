import subprocess
import sys
import textwrap

from conftest import ROOT


def test_mirrored_strategy_over_two_logical_cpus_trains_one_step():
    # Logical devices must be set before TensorFlow starts, hence a fresh process.
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, {str(ROOT)!r})
        from core import models, training
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = models.build_model("cnn", 3, 32)
        before = [w.copy() for w in model.get_weights()]
        hp = training.HyperParameters(image_size=32, batch_size=8, epochs=1, patience=1, views=1)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 255, (8, 32, 32, 3)).astype(np.uint8)
        y = rng.integers(0, 3, 8)
        history, best = training.fit(model, 1e-3, [x], y, x, y, hp, seed=0)
        changed = any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
        print("replicas", strategy.num_replicas_in_sync, "epochs", len(history), "changed", changed)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2 epochs 1 changed True" in done.stdout
