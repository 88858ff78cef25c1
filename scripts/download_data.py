"""Download the Kaggle "Fruits and Vegetables Image Recognition" dataset with kagglehub.

    python scripts/download_data.py [--out data/fruitveg]

Needs internet access (and, for some Kaggle datasets, Kaggle credentials: see kagglehub's docs).
Offline, use a copy you already have: scripts/train.py --data-dir DIR.
"""

import argparse
import sys

import _path  # noqa: F401

from core import download  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/fruitveg", help="folder to put train/ validation/ test/ in")
    args = parser.parse_args(argv)
    try:
        path = download.download(args.out)
    except download.DownloadFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"dataset in {path}; train with: python scripts/train.py --data-dir {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
