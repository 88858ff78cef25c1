"""Classify photos with every model of a result set.

    python scripts/classify.py IMAGE [IMAGE ...] [--json] [--artifacts DIR] [--weights-dir DIR]

Prints each model's top-3 classes and its fruit/vegetable verdict per image; with --json, one JSON object
per image per line: {"file", "models": {id: {"top": [[class, prob], ...], "group"}}, "ensemble"}.
A file that is not a usable image gets a one-line error on stderr; the others are still classified.
"""

import argparse
import json
import os
import sys

import _path  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from core import artifacts, images, inference, reports  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    parser.add_argument("--artifacts", default=os.environ.get("FRUITVEG_ARTIFACTS", "artifacts"))
    parser.add_argument("--weights-dir", default=None, help="ImageNet weights folder (default $FRUITVEG_WEIGHTS_DIR)")
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        result_set = artifacts.open_result_set(args.artifacts)
    except artifacts.ResultSetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    classifier, problems = inference.load_classifier(result_set, args.weights_dir)
    for model_id, reason in problems.items():
        print(f"warning: {model_id} unavailable: {reason}", file=sys.stderr)
    if classifier is None:
        print("error: no model of the result set could be loaded", file=sys.stderr)
        return 2
    failures = 0
    for path in args.images:
        try:
            image = images.read_image(path)
        except (images.ImageError, OSError) as err:
            print(f"error: {path}: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
            failures += 1
            continue
        summary = reports.summarise(classifier.classify_image(image), result_set, top=args.top)
        if args.json:
            print(json.dumps({"file": path, **summary}), flush=True)
        else:
            print(reports.format_summary(path, summary), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
