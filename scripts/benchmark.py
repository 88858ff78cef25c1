"""Speed measurements (README: Performance).

    python scripts/benchmark.py train [--data-dir DIR] [--weights-dir DIR] [--image-size 160] [--images 256]
    python scripts/benchmark.py classify [--json] [--artifacts artifacts] [--image PHOTO] [--image-size N] [--runs 10]

train: seconds per epoch of a fine-tuned model (ResNet50; --model vgg16) with the trunk cache against a naive end-to-end fit, per-image
costs of all six models, and the projected time to train all six on the full 3,115-image training set.
classify: median time of the app's six-model classification with every heatmap against a naive loop.
With --image-size, classify builds untrained models of that size (speed does not depend on training).
"""

import argparse
import json
import os
import sys

import _path  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from core import artifacts, benchmarks, images, inference, models, training  # noqa: E402
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
    measured = benchmarks.training_benchmark(photos, 36, backbone_weights(args.weights_dir), hp, args.model)
    worst = benchmarks.project_full_dataset(measured, hp)
    result = {"machine": benchmarks.machine(), "source": source, "image_size": hp.image_size, **measured,
              "full_dataset_projection_all_epochs": worst}
    if args.artifacts and os.path.isdir(args.artifacts):
        rs = artifacts.open_result_set(args.artifacts)
        epochs = {m: info["epochs_run"] for m, info in rs.models.items()}
        result["full_dataset_projection_shipped_epochs"] = {**benchmarks.project_full_dataset(measured, hp, epochs),
                                                            "epochs": epochs}
    cmp = measured["cache_vs_naive"]
    print(f"{source}, {hp.image_size} px, batch {hp.batch_size}")
    print(f"{cmp['model']} fine-tuning, one epoch over {measured['images']} images: trunk cached {cmp['cached_epoch_s']:.1f} s, "
          f"naive end-to-end fit {cmp['naive_epoch_s']:.1f} s: {cmp['speedup']:.1f}x faster")
    for model_id, ms in measured["train_ms_per_image"].items():
        print(f"  {model_id:20s} {ms:6.1f} ms per training image per epoch")
    for backbone, ms in measured["trunk_ms_per_image"].items():
        print(f"  {backbone} trunk     {ms:6.1f} ms per image, once per view")
    print(f"Projected, not measured: all six on the full dataset (3,115 train images, {hp.views} views, "
          f"up to {hp.epochs} epochs each): {worst['total_minutes']:.0f} min "
          f"({worst['trunk_minutes']:.0f} trunk + {worst['training_minutes']:.0f} training)")
    if "full_dataset_projection_shipped_epochs" in result:
        shipped = result["full_dataset_projection_shipped_epochs"]
        print(f"  with the epochs the shipped run needed (early stopping): {shipped['total_minutes']:.0f} min")
    return result


def classify_command(args) -> dict:
    if args.image_size:
        weights = backbone_weights(args.weights_dir)
        loaded = {m: models.build_model(m, 36, args.image_size, weights=weights.get(MODEL_SPECS[m].backbone))
                  for m in MODEL_IDS}
        rs = None
    else:
        rs = artifacts.open_result_set(args.artifacts)
        loaded = {m: inference.load_model(rs, m, args.weights_dir) for m in rs.models}
    photo = args.image or (str(rs.samples()[0][0]) if rs and rs.samples() else None)
    image = images.read_image(photo) if photo else benchmarks.sample_photos(None, 1, 256)[0][0]
    result = benchmarks.classify_benchmark(loaded, image if photo else images.Image.fromarray(image), args.runs)
    result["machine"] = benchmarks.machine()
    result["photo"] = photo or "random pixels"
    print(f"{result['models']} models at {result['image_size']} px, median of {result['runs']} runs on {result['photo']}: "
          f"{result['six_model_ms']:.0f} ms with all heatmaps, naive loop {result['naive_ms']:.0f} ms: "
          f"{result['ratio']:.1f}x faster")
    return result


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
    train.add_argument("--artifacts", default="artifacts", help="result set whose epoch counts to project with")
    classify = sub.add_parser("classify", help="six-model classification vs naive loop")
    classify.add_argument("--artifacts", default="artifacts")
    classify.add_argument("--weights-dir", default=None)
    classify.add_argument("--image", default=None, help="photo to classify (default: a sample of the result set)")
    classify.add_argument("--image-size", type=int, default=None, help="time untrained models of this size instead")
    classify.add_argument("--runs", type=int, default=10)
    for p in (train, classify):
        p.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    args = parser.parse_args(argv)
    result = train_command(args) if args.command == "train" else classify_command(args)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
