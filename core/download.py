"""Getting the Kaggle dataset: kagglehub when online, a clear way out when not."""

from __future__ import annotations

import shutil
from pathlib import Path

KAGGLE_DATASET = "kritikseth/fruit-and-vegetable-image-recognition"


class DownloadFailed(RuntimeError):
    """The download did not work; the message names the alternative."""


def download(target: str | Path) -> Path:
    """Download the dataset with kagglehub and copy it to ``target`` (the Kaggle folder layout)."""
    target = Path(target)
    try:
        import kagglehub

        cached = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as err:  # kagglehub raises many kinds (network, auth, HTTP); all mean the same here
        raise DownloadFailed(
            f"could not download {KAGGLE_DATASET} ({type(err).__name__}: offline, or Kaggle unreachable or "
            f"refusing); with a copy you already have, pass "
            f"--data-dir DIR to scripts/train.py instead"
        ) from err
    root = next((p.parent for p in cached.rglob("train") if p.is_dir()), cached)
    shutil.copytree(root, target, dirs_exist_ok=True)
    return target
