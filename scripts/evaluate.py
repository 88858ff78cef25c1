"""Test the models of a result set again on its recorded test split (also done at the end of training).

    python scripts/evaluate.py [--artifacts artifacts] [--data-dir DIR] [--weights-dir DIR] [--models ids]

Rewrites each model's predictions, maps and metrics, including the Grad-CAM randomisation check.
The dataset folder defaults to the one recorded in the result set.
"""

import argparse
import logging
import os
import sys

import _path  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train import parse_models  # noqa: E402

from core import artifacts, evaluation  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--data-dir", default=None, help="dataset root (default: the one recorded in the result set)")
    parser.add_argument("--weights-dir", default=None, help="ImageNet weights folder (default $FRUITVEG_WEIGHTS_DIR)")
    parser.add_argument("--models", type=parse_models, default=None, help="all, or ids separated by commas")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result_set = artifacts.open_result_set(args.artifacts)
        status = evaluation.reevaluate(result_set, args.data_dir, args.weights_dir, args.models)
    except (artifacts.ResultSetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for model_id, state in status.items():
        print(f"{model_id:20s} {state}")
    return 0 if all(s == "evaluated" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
