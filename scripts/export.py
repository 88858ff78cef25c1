"""Write a result set's training histories and test metrics as TensorBoard event files, optionally to MLflow.

    python scripts/export.py [--artifacts artifacts] --tensorboard OUT [--mlflow DIR]

Then ``tensorboard --logdir OUT`` and ``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`` show them.
Needs the extras: ``pip install -r requirements-export.txt`` (``mlflow ui`` needs the full ``mlflow`` package).
"""

import argparse
import os
import sys

import _path  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core import artifacts, export  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default="artifacts", help="the result set to export")
    parser.add_argument("--tensorboard", default=None, help="folder for the TensorBoard runs")
    parser.add_argument("--mlflow", default=None, help="MLflow tracking folder (a SQLite store inside it)")
    args = parser.parse_args(argv)
    if not args.tensorboard and not args.mlflow:
        parser.error("give --tensorboard OUT, --mlflow DIR or both")
    try:
        result_set = artifacts.open_result_set(args.artifacts)
        if args.tensorboard:
            folders = export.to_tensorboard(result_set, args.tensorboard)
            print(f"TensorBoard: {len(folders)} runs in {args.tensorboard}")
        if args.mlflow:
            logged = export.to_mlflow(result_set, args.mlflow)
            print(f"MLflow: {len(logged)} runs in {export.mlflow_tracking_uri(args.mlflow)}")
    except artifacts.ResultSetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"error: {err.name} is not installed: pip install -r requirements-export.txt", file=sys.stderr)
        return 2
    for model_id, problem in result_set.problems.items():
        print(f"skipped {model_id}: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
