"""Test the models of a result set again on its recorded test split (also done at the end of training).

    python scripts/evaluate.py [--artifacts artifacts] [--data-dir DIR] [--weights-dir DIR] [--models ids]
    python scripts/evaluate.py --openset [--backbones vgg16,resnet50] [--cache-dir data/openset]

Rewrites each model's predictions, maps and metrics, including the Grad-CAM randomisation check.
With --openset it instead fits the open-set verdict (core.openset), measures it on the held-out-classes
protocol, stores it in the result set and prints the figures.
The dataset folder defaults to the one recorded in the result set.
"""

import argparse
import logging
import os
import sys

import _path  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train import parse_models  # noqa: E402

from core import artifacts, evaluation, openset  # noqa: E402


def fit_openset(args) -> int:
    from core import features  # TensorFlow and the backbones only load for this

    result_set = artifacts.open_result_set(args.artifacts)
    feats, labels = features.split_features(
        result_set, args.data_dir, args.weights_dir, args.cache_dir, args.backbones.split(",")
    )
    protocol = openset.held_out_protocol(feats, labels, len(result_set.class_names))
    detectors = openset.fit_detectors(feats)
    info, arrays = openset.to_stored(detectors, protocol, result_set.config["image_size"])
    artifacts.write_openset(args.artifacts, info, arrays)
    print(f"open-set verdict: {info['method']}; threshold keeps {openset.KEEP:.0%} of validation photos")
    print("held-out-classes protocol (5 folds of about 6 classes):")
    for name, f in protocol.items():
        print(
            f"  {name:10s} AUROC {f['auroc']:.3f}  known test kept {f['known_test_kept']:.1%}  "
            f"unknown accepted {f['unknown_accepted']:.1%}  ({f['known_test_photos']} known, {f['unknown_photos']} unknown)"
        )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--data-dir", default=None, help="dataset root (default: the one recorded in the result set)")
    parser.add_argument("--weights-dir", default=None, help="ImageNet weights folder (default $FRUITVEG_WEIGHTS_DIR)")
    parser.add_argument("--models", type=parse_models, default=None, help="all, or ids separated by commas")
    parser.add_argument("--openset", action="store_true", help="fit, measure and store the open-set verdict")
    parser.add_argument("--backbones", default="vgg16,resnet50", help="frozen backbones for --openset")
    parser.add_argument("--cache-dir", default="data/openset", help="feature cache for --openset (git-ignored)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.openset:
        return fit_openset(args)
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
