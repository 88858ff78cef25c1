"""Shared fixtures: a tiny generated dataset and a result set trained on it (random backbones, 32 px)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data" / "fruitveg"
SHARED_WEIGHTS = SHARED / "weights"

# Four classes, each a colour with a random dark blob: learnable in two epochs at 32 px.
TINY_CLASSES = {"apple": (200, 30, 30), "banana": (230, 220, 60), "carrot": (240, 120, 20), "peas": (40, 160, 40)}


def make_photo(colour, rng, size=80) -> Image.Image:
    pixels = np.full((size, size, 3), colour, np.float32) + rng.normal(0, 40, (size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    radius, (cx, cy) = rng.integers(size // 8, size // 3), rng.integers(size // 4, 3 * size // 4, 2)
    pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius * radius] *= 0.5
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_dataset(root: Path, per_split=(("train", 24), ("validation", 6), ("test", 6)), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in per_split:
        for name, colour in TINY_CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                make_photo(colour, rng).save(folder / f"Image_{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny") / "data")


TINY_HP = dict(image_size=48, batch_size=16, epochs=4, patience=4, views=2, seed=0)


@pytest.fixture(scope="session")
def tiny_results(tiny_data, tmp_path_factory) -> Path:
    """All six models trained on the tiny dataset: the result set most tests read."""
    from core import training

    out = tmp_path_factory.mktemp("results") / "out"
    status = training.run(
        tiny_data, out, hp=training.HyperParameters(**TINY_HP), random_backbones=True, progress=False
    )
    assert set(status.values()) == {"trained"}, status
    return out


def model_cards(at) -> list[str]:
    """The Classify page's answer of each model (AppTest), one markdown card per model."""
    from core.specs import MODEL_IDS, MODEL_SPECS

    titles = [MODEL_SPECS[m].title for m in MODEL_IDS]
    return [m.value for m in at.markdown if m.value.startswith("**") and "%" in m.value
            and any(m.value.startswith(f"**{t}**") for t in titles)]


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (only beside the project in CI)")
