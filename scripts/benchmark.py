"""Speed measurements (README: Performance).

    python scripts/benchmark.py train [--data-dir DIR] [--weights-dir DIR] [--image-size 160] [--images 256] [--rounds 5]
        [--train-precision float32|auto|bfloat16] [--artifacts SET]
    python scripts/benchmark.py classify [--json] [--artifacts artifacts] [--image PHOTO] [--image-size N] [--runs 10]

train: seconds per epoch of a fine-tuned model (ResNet50; --model vgg16) with the trunk cache against a naive
end-to-end fit, timed alternately; the per-image cost of every step of a training run; and from those the projected
time to train all six on the full 3,115-image training set, and one seed of all six as --artifacts ran them on
its own photos (with --train-precision auto and a tuned set: the tuned recipe's time).
classify: median time of the app's six-model classification with every heatmap against a naive loop, and with
the test-time views validation took (the Classify page's switch).
cli: seconds from starting scripts/classify.py on one photo to its answer (and the bare TensorFlow import).
decode: peak memory rise of reading a generated 200 MP phone JPEG (decoded at reduced size).
memory: peak resident memory of a real training of all six per dataset size (--photos 2000 4000), under --recipe
study (default) or tuned (with --train-precision auto: the shipped set's training).
With --image-size, classify builds untrained models of that size (speed does not depend on training).
"""

import argparse
import json
import os
import sys

import _path  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from core import artifacts, benchmarks, images, inference, models, recipes, training  # noqa: E402
from core.specs import BACKBONES, MODEL_IDS, MODEL_SPECS  # noqa: E402


def backbone_weights(weights_dir) -> dict:
    """Real ImageNet weights where available (same cost as random ones), else seeded random weights."""
    try:
        return {b: models.imagenet_weights(b, weights_dir) for b in BACKBONES} if weights_dir or os.environ.get(
            "FRUITVEG_WEIGHTS_DIR") else {b: "random" for b in BACKBONES}
    except models.WeightsUnavailable:
        return {b: "random" for b in BACKBONES}


def train_command(args) -> dict:
    hp = training.HyperParameters(image_size=args.image_size)
    photos, source = benchmarks.sample_photos(args.data_dir, args.images, args.image_size)
    rs = artifacts.open_result_set(args.artifacts) if args.artifacts and os.path.isdir(args.artifacts) else None
    # Each model timed as that set trained it: fresh random crops cost their augmentation, at their training size.
    trained_with = {m: recipes.as_trained(info) for m, info in rs.models.items()} if rs else {}
    measured = benchmarks.training_benchmark(photos, 36, backbone_weights(args.weights_dir), hp, args.model, args.rounds,
                                             args.train_precision, trained_with)
    projections = {"all_epochs": benchmarks.project_full_dataset(measured, hp)}
    recorded = None
    if rs:
        # Epochs as that set ran them, or replayed under another patience (--patience).
        recorded = benchmarks.scale_recorded_run(rs, measured["read_ms_per_full_size_photo"], patience=args.patience)
        projections["recorded_epochs"] = {**benchmarks.project_full_dataset(measured, hp, recorded["epochs"]),
                                          "epochs": recorded["epochs"]}
        # One seed of all six as that set ran them, on its own photos: the recipe's time on this machine.
        projections["recorded_epochs_own_photos"] = {
            **benchmarks.project_full_dataset(measured, hp, recorded["epochs"], recorded["counts"]),
            "epochs": recorded["epochs"]}
    cmp = measured["cache_vs_naive"]
    print(f"{source}, {hp.image_size} px, batch {hp.batch_size}, {benchmarks.machine()}")
    print(f"{cmp['model']} fine-tuning, one epoch over {measured['images']} images, {cmp['rounds']} rounds alternating:")
    print(f"  trunk cached {fmt(cmp['cached_epoch_s'])} s, naive end-to-end fit {fmt(cmp['naive_epoch_s'])} s: "
          f"median {cmp['speedup']:.1f}x faster")
    print(f"Measured per image (ms; the fastest of {args.rounds} epochs and of 3 passes); trunk over the training "
          f"views in {measured['trunk_precision']}, trained parts in {measured['train_precision']}:")
    width, height = benchmarks.FULL_SIZE_PHOTO
    print(f"  fingerprinting, reading and resizing a full-size ({width}x{height}) photo "
          f"{measured['read_ms_per_full_size_photo']:.1f}")
    for backbone, ms in measured["trunk_ms_per_image"].items():
        print(f"  {backbone} trunk: {ms['train_views']:.1f} per training view, {ms['float32']:.1f} per other photo (float32)")
    for model_id, cost in measured["costs"].items():
        frozen = cost.get("frozen_features_ms")
        print(f"  {model_id:20s} train {cost['train_ms']:5.1f} /image/epoch"
              + (f" (fresh random crops at {cost['train_size']} px)" if cost["augmentation"] == "random" else "")
              + f", validation {cost['validation_ms']:4.1f}, "
              f"final evaluation {cost['evaluation_ms']:5.1f}" + (f", frozen top block {frozen['train_views']:.1f}" if frozen else ""))
    n = benchmarks.FULL_DATASET
    patience_note = ""
    if recorded and recorded["epochs"] != recorded["recorded_epochs"]:
        patience_note = f" (early-stopped ones replayed with patience {recorded['patience']})"
    print(f"Projected, not measured (the full dataset is not here): all six on the full dataset "
          f"({n['train']:,} train, {n['validation']} validation, {n['test']} test images, {hp.views} views):")
    for name, label in (("all_epochs", f"every model all {hp.epochs} epochs (the study recipe's worst case)"),
                        ("recorded_epochs", f"the epochs each model of {args.artifacts} ran{patience_note}")):
        if name in projections:
            p = projections[name]
            print(f"  {label}: {p['total_minutes']:.0f} min ({p['loading_minutes']:.1f} reading photos, "
                  f"{p['trunk_minutes']:.1f} trunks, {p['training_minutes']:.1f} training, "
                  f"{p['evaluation_minutes']:.1f} evaluation)")
    if recorded:
        ran = recorded["counts"]
        own = projections["recorded_epochs_own_photos"]
        print(f"Projected: one seed of all six with the epochs of {args.artifacts}{patience_note}, on its own {ran['train']:,} train, "
              f"{ran['validation']} validation and {ran['test']} test images: {own['total_minutes']:.0f} min "
              f"({own['trunk_minutes']:.1f} trunks, {own['training_minutes']:.1f} training, "
              f"{own['evaluation_minutes']:.1f} evaluation)")
        print(f"Measured: the run that made {recorded['result_set']} ({recorded['image_size']} px; {ran['train']:,} train, "
              f"{ran['validation']} validation, {ran['test']} test images) recorded {recorded['measured_minutes']:.0f} min"
              + ("" if recorded["evaluation_recorded"] else " without its evaluation (not recorded)")
              + f"; scaled to the full dataset: {recorded['scaled_minutes']:.0f} min")
    return {"machine": benchmarks.machine(), "source": source, "image_size": hp.image_size, **measured,
            "full_dataset_projection": projections, "recorded_run": recorded}


def fmt(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def classify_command(args) -> dict:
    if args.image_size:
        weights = backbone_weights(args.weights_dir)
        loaded = {m: models.build_model(m, 36, args.image_size, weights=weights.get(MODEL_SPECS[m].backbone))
                  for m in MODEL_IDS}
        specs, views, rs = None, None, None
    else:
        rs = artifacts.open_result_set(args.artifacts)
        built = inference.load_models(rs, args.weights_dir)
        if built.problems:
            raise inference.ModelUnavailable("; ".join(f"{m}: {p}" for m, p in built.problems.items()))
        loaded, specs, views = built.models, built.specs, built.views
    photo = args.image or (str(rs.samples()[0][0]) if rs and rs.samples() else None)
    image = images.read_image(photo) if photo else benchmarks.sample_photos(None, 1, 256)[0][0]
    result = benchmarks.classify_benchmark(loaded, image if photo else images.Image.fromarray(image), args.runs, specs,
                                           views)
    result["machine"] = benchmarks.machine()
    result["photo"] = photo or "random pixels"
    print(f"{result['models']} models at {result['image_size']} px, median of {result['runs']} runs on {result['photo']}: "
          f"{result['six_model_ms']:.0f} ms with all heatmaps, naive loop {result['naive_ms']:.0f} ms: "
          f"{result['ratio']:.1f}x faster"
          + (f"; with the test-time views of {len(result['views'])} models {result['with_views_ms']:.0f} ms"
             if result["views"] else ""))
    return result


def cli_command(args) -> dict:
    photo = args.image
    if photo is None:
        photo = str(artifacts.open_result_set(args.artifacts).samples()[0][0])
    load_before = os.getloadavg()[0]
    result = benchmarks.cli_first_answer(photo, args.artifacts, args.runs)
    # The machine is shared: the load says how far the figures are from an idle machine's.
    result.update(machine=benchmarks.machine(), photo=photo, load_average=[load_before, os.getloadavg()[0]])
    print(f"scripts/classify.py, one photo: first answer in {result['first_answer_s']:.1f} s (median of {args.runs}; "
          f"runs {fmt(result['runs_s'])} s; import tensorflow alone {result['tensorflow_import_s']:.1f} s; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")
    return result


def decode_command(args) -> dict:
    result = benchmarks.jpeg_decode_peak(args.megapixels)
    print(f"{result['megapixels']:.0f} MP JPEG ({result['file_mb']:.1f} MB) decoded at {result['decoded'][0]}x"
          f"{result['decoded'][1]}: peak memory +{result['peak_rise_mb']:.0f} MB (full decode {result['full_decode_mb']:.0f} MB)")
    return result


def memory_command(args) -> dict:
    hp = training.HyperParameters(image_size=args.image_size, epochs=args.epochs, patience=args.epochs)
    print(f"recipe {args.recipe}, trained parts in {args.train_precision}")
    result = benchmarks.training_memory(args.data_dir, args.photos, hp, args.weights_dir, args.recipe,
                                        args.train_precision)
    for count, run in result["runs"].items():
        copies = run["copies_in_another_split"]
        print(f"{count} photos: peak {run['peak_rss_mb']:.0f} MB resident, {run['peak_anon_mb']:.0f} MB of it not "
              f"file-backed, {run['seconds']:.0f} s ({hp.epochs} epoch(s) per model; the peak is reached in the "
              f"first); {copies['apart']} of {copies['copies']} grown copies split apart from their original")
        for phase in run["phases"]:
            print(f"    {phase['seconds']:7.0f} s  peak {phase['peak_rss_mb']:6.0f} MB  (not file-backed "
                  f"{phase['peak_anon_mb']:6.0f} MB)  until {phase['until']}")
    if result["peak_growth"] is not None:
        print(f"peak growth from {args.photos[0]} to {args.photos[-1]} photos: {100 * result['peak_growth']:+.0f} %")
    return result


COMMANDS = {"train": train_command, "classify": classify_command, "cli": cli_command, "decode": decode_command,
            "memory": memory_command}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="trunk cache vs naive training; full-dataset projection")
    train.add_argument("--data-dir", default=None, help="real photos to time on (default: random images)")
    train.add_argument("--weights-dir", default=None)
    train.add_argument("--image-size", type=int, default=training.HyperParameters().image_size)
    train.add_argument("--images", type=int, default=256, help="images per timed epoch")
    train.add_argument("--model", choices=("vgg16", "resnet50"), default="resnet50",
                       help="fine-tuned model to time with and without the trunk cache")
    train.add_argument("--rounds", type=int, default=5, help="alternating cached / naive epochs to time")
    train.add_argument("--artifacts", default="artifacts",
                       help="result set whose epoch counts to project with, and whose recorded time to scale")
    train.add_argument("--patience", type=int, default=None,
                       help="early stopping's patience to replay the result set's validation losses with "
                       "(default: the set's own)")
    train.add_argument("--train-precision", choices=training.TRAIN_PRECISIONS, default="float32",
                       help="arithmetic of the trained parts: float32 as the study's recipe trains, auto as the tuned one")
    classify = sub.add_parser("classify", help="six-model classification vs naive loop")
    classify.add_argument("--artifacts", default="artifacts")
    classify.add_argument("--weights-dir", default=None)
    classify.add_argument("--image", default=None, help="photo to classify (default: a sample of the result set)")
    classify.add_argument("--image-size", type=int, default=None, help="time untrained models of this size instead")
    classify.add_argument("--runs", type=int, default=10)
    cli = sub.add_parser("cli", help="time to the first answer of scripts/classify.py")
    cli.add_argument("--artifacts", default="artifacts")
    cli.add_argument("--image", default=None, help="photo to classify (default: a sample of the result set)")
    cli.add_argument("--runs", type=int, default=3)
    decode = sub.add_parser("decode", help="peak memory of reading a large phone JPEG")
    decode.add_argument("--megapixels", type=float, default=200)
    memory = sub.add_parser("memory", help="peak resident memory of a real six-model training, per dataset size")
    memory.add_argument("--data-dir", default="../shared/data/fruitveg", help="photos to grow the dataset from")
    memory.add_argument("--photos", type=int, nargs="+", default=[2000, 4000], help="dataset sizes to train on")
    memory.add_argument("--image-size", type=int, default=224)
    memory.add_argument("--epochs", type=int, default=1, help="per model (the peak is reached in the first)")
    memory.add_argument("--weights-dir", default=None)
    memory.add_argument("--recipe", choices=recipes.RECIPES, default=recipes.STUDY, help="how the models train")
    memory.add_argument("--train-precision", choices=training.TRAIN_PRECISIONS, default="float32")
    for p in (train, classify, cli, decode, memory):
        p.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    args = parser.parse_args(argv)
    result = COMMANDS[args.command](args)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
