"""Remove the model weights from a result set, keeping it valid for comparison (every page but Classify).

    python scripts/strip_weights.py RESULT_SET

Shipped comparison sets stay small this way; the manifest is updated so the set still verifies.
"""

import argparse

import _path  # noqa: F401

from core import artifacts  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result_set", help="folder written by scripts/train.py")
    args = parser.parse_args(argv)
    artifacts.open_result_set(args.result_set)  # refuses a folder that is not a result set
    removed = artifacts.strip_weights(args.result_set)
    print(f"Removed {len(removed)} weight file(s): {', '.join(removed) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
