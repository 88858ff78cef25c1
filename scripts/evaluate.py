"""Test the models of a result set again on its recorded test split (also done at the end of training).

    python scripts/evaluate.py [--artifacts artifacts] [--data-dir DIR] [--weights-dir DIR] [--models ids]
    python scripts/evaluate.py --openset [--backbones vgg16,resnet50] [--cache-dir data/openset]
    python scripts/evaluate.py --linear-probe [--backbones vgg16,resnet50] [--cache-dir data/openset]
    python scripts/evaluate.py --calibrate [--models ids]
    python scripts/evaluate.py --views [--models ids]
    python scripts/evaluate.py --test-sizes 256,288,320 [--models ids]

Rewrites each model's predictions, maps and metrics, including the Grad-CAM randomisation check.
With --openset it instead fits the open-set verdict (core.openset), measures it on the held-out-classes
protocol, stores it in the result set and prints the figures. With --linear-probe it fits the linear-probe
reference (core.probe: frozen-backbone features + logistic regression, C chosen on validation), tests it
on the same test photos, stores it and prints it beside each model. Both share the feature cache.
With --calibrate it fits each model's temperature on the validation photos (core.calibration; training does
this for the runs it makes) and stores it with the test ECE and loss it gives. With --views it measures
test-time views (the probabilities of each photo's mirror image and crops averaged with its own, core.testtime)
on validation and test and stores the figures; validation alone chooses which, if any, are worth taking. With
--test-sizes it measures each model on the validation and test photos resized to each size (test-time
resolution) and stores the figures; validation alone chooses the size.
The dataset folder defaults to the one recorded in the result set.
"""

import argparse
import logging
import os
import sys

import _path  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train import parse_models  # noqa: E402

from core import artifacts, evaluation, formatting, openset, testtime  # noqa: E402


def fit_openset(args) -> int:
    from core import audit, features  # TensorFlow and the backbones only load for this

    result_set = artifacts.open_result_set(args.artifacts)
    feats, labels = features.split_features(
        result_set, args.data_dir, args.weights_dir, args.cache_dir, args.backbones.split(",")
    )
    # Classes that share a byte-identical photo are one produce under two names: held out together.
    together = audit.audit(result_set.data_root(args.data_dir)).classes_sharing_a_photo()
    with features.one_blas_thread():
        info, arrays, protocols = openset.measure(feats, labels, result_set.class_names,
                                                  result_set.config["image_size"], together)
    artifacts.write_openset(args.artifacts, info, arrays)
    print(f"open-set verdict: {info['method']}; threshold keeps {openset.KEEP:.0%} of validation photos")
    print("classes sharing a byte-identical photo: " + ("; ".join(" = ".join(g) for g in together) or "none"))
    for grouping, measured in protocols.items():
        print(f"held-out-classes protocol (5 folds of about 6 classes), {grouping}"
              + (" (stored):" if grouping == openset.TOGETHER else ":"))
        for name, f in measured.items():
            print(f"  {name} ({f['known_test_photos']} known, {f['unknown_photos']} unknown): "
                  + formatting.openset_figures(f, hardest=6))
    return 0


def fit_linear_probe(args) -> int:
    from core import features, probe  # TensorFlow and the backbones only load for this

    result_set = artifacts.open_result_set(args.artifacts)
    feats, labels = features.split_features(
        result_set, args.data_dir, args.weights_dir, args.cache_dir, args.backbones.split(",")
    )
    with features.one_blas_thread():
        info, arrays = probe.measure(result_set, feats, labels)
    artifacts.write_linear_probe(args.artifacts, info, arrays)
    result_set = artifacts.open_result_set(args.artifacts)
    print(f"linear probe: {info['method']}; {info['selection']}")
    for row in probe.reference_table(result_set).itertuples():
        entry = info["backbones"][row.backbone]
        print(
            f"  {row.model:26s} test {row.accuracy:.1%} [{row.accuracy_low:.1%}, {row.accuracy_high:.1%}]  "
            f"NLL {row.loss:.3f}  fruit/veg {row.group_accuracy:.1%}  C {entry['C']:.3g}  "
            f"validation {entry['validation_accuracy']:.1%}"
        )
    tests = probe.paired_tests(result_set)
    print("paired tests (exact McNemar), * = a fine-tuned model against its own backbone's probe:")
    for row in tests.itertuples():
        print(f"  {'*' if row.own_backbone else ' '} {row.verdict}")
    for line in probe.flags(tests):
        print(line)
    return 0


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are whole pixels separated by commas, not {text!r}") from None
    if any(size < 32 for size in sizes):
        raise argparse.ArgumentTypeError("each size must be at least 32 pixels")
    return sizes


def describe(state: str, metrics: dict) -> str:
    """One line on what was stored for a model: its fitted temperature, its test-time views or sizes."""
    fitted = metrics.get("calibration")
    if state == "calibrated" and fitted:
        return (f"temperature {fitted['temperature']:.2f}: test ECE {metrics['ece']:.3f} -> "
                f"{fitted['test_ece_scaled']:.3f}, test loss {metrics['loss']:.3f} -> "
                f"{fitted['test_loss_scaled']:.3f} (validation loss {fitted['validation_loss']:.3f} -> "
                f"{fitted['validation_loss_scaled']:.3f})")
    measured = {"views measured": (artifacts.TEST_TIME_VIEWS, "views", ""),
                "sizes measured": (artifacts.TEST_TIME_SIZES, "sizes", " px")}
    if state in measured and metrics.get(measured[state][0]):
        key, what, unit = measured[state]
        options, (chosen, figures) = metrics[key], artifacts.chosen_option(metrics, key)
        baseline, test = options["baseline"], figures["test"]
        taken = (f"taken: {chosen}{unit} (test photos fixed / broken against {baseline}{unit}: {test['fixed']} / "
                 f"{test['broken']}, {formatting.p_value(test['p_value'])})" if chosen != baseline else "none taken")
        return "; ".join(
            f"{what} ({split}, accuracy %): " + formatting.by_option(
                {option: entry[split]["accuracy"] for option, entry in options["options"].items()})
            for split in testtime.SPLITS) + f"; {taken}"
    return state


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--data-dir", default=None, help="dataset root (default: the one recorded in the result set)")
    parser.add_argument("--weights-dir", default=None, help="ImageNet weights folder (default $FRUITVEG_WEIGHTS_DIR)")
    parser.add_argument("--models", type=parse_models, default=None, help="all, or ids separated by commas")
    parser.add_argument("--openset", action="store_true", help="fit, measure and store the open-set verdict")
    parser.add_argument("--linear-probe", action="store_true", help="fit, test and store the linear-probe reference")
    parser.add_argument("--calibrate", action="store_true", help="fit and store each model's temperature on validation")
    parser.add_argument("--views", action="store_true",
                        help="measure and store test-time views (mirror image, crops) on validation and test")
    parser.add_argument("--test-sizes", type=parse_sizes, default=None, metavar="PX,PX",
                        help="measure and store test-time resolution at these sizes on validation and test")
    parser.add_argument("--backbones", default="vgg16,resnet50", help="frozen backbones for --openset/--linear-probe")
    parser.add_argument("--cache-dir", default="data/openset", help="feature cache of the frozen backbones (git-ignored)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.openset:
        return fit_openset(args)
    if args.linear_probe:
        return fit_linear_probe(args)
    try:
        result_set = artifacts.open_result_set(args.artifacts)
        if args.test_sizes:
            status = testtime.measure_sizes(result_set, args.test_sizes, args.data_dir, args.weights_dir, args.models)
        else:
            run = (evaluation.calibrate if args.calibrate else testtime.measure_views if args.views
                   else evaluation.reevaluate)
            status = run(result_set, args.data_dir, args.weights_dir, args.models)
    except (artifacts.ResultSetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result_set = artifacts.open_result_set(args.artifacts)
    for model_id, state in status.items():
        print(f"{model_id:20s} {describe(state, result_set.metrics(model_id) if model_id in result_set.models else {})}")
    return 0 if all(s in ("evaluated", "calibrated", "views measured", "sizes measured") for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
