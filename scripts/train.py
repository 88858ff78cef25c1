"""Train the study's models and write a result set (see README: Training).

    python scripts/train.py --data-dir DATA [--out artifacts] [--models all|cnn,vgg16,...] [--epochs 30]
        [--image-size 160] [--batch-size 16] [--seed 0] [--split clean|kaggle] [--weights-dir DIR]
        [--strategy default|mirrored|multiworker] [--trunk-precision auto|float32|bfloat16|float16] [--keep-cache]
        [--recipe study|tuned] [--change MODEL.FIELD=VALUE ...] [--train-precision auto|float32|bfloat16]

A rerun with the same settings resumes: models already complete in --out are not trained again.
"""

import argparse
import logging
import os
import sys

import _path  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core import artifacts, groups, recipes, training  # noqa: E402
from core.specs import MODEL_IDS  # noqa: E402


def parse_models(text: str) -> list[str]:
    if text == "all":
        return list(MODEL_IDS)
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODEL_IDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model id(s) {', '.join(unknown)}; known: {', '.join(MODEL_IDS)}")
    return chosen


def main(argv=None) -> int:
    defaults = training.HyperParameters()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="dataset root (Kaggle layout or class folders)")
    parser.add_argument("--out", default="artifacts", help="result-set folder (default: artifacts)")
    parser.add_argument("--models", type=parse_models, default=list(MODEL_IDS), help="all, or ids separated by commas")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs (early stopping may end sooner); "
                        f"default {defaults.epochs} with the study's recipe, {recipes.TUNED_EPOCHS} with the tuned one")
    parser.add_argument("--patience", type=int, default=None, help="epochs without a better val_loss before stopping; "
                        f"default {defaults.patience} (study), {recipes.TUNED_PATIENCE} (tuned)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--views", type=int, default=defaults.views, help="augmented views per training photo")
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--seeds", type=int, default=1,
                        help="train each model with this many seeds (--seed, --seed+1, ...) to measure the spread")
    parser.add_argument("--recipe", choices=recipes.RECIPES, default=recipes.STUDY,
                        help="study: the study's protocol (its learning rates, Adam, plain cross-entropy); tuned: each "
                        "model's own, chosen on the validation split (README: Recipes)")
    parser.add_argument("--change", action="append", default=[], metavar="MODEL.FIELD=VALUE",
                        help="change one field of a model's recipe, e.g. resnet50.learning_rate=1e-5 or "
                        "resnet50.head_epochs=8 (repeatable; recorded in the result set; README: Recipes)")
    parser.add_argument("--split", choices=("clean", "kaggle"), default="clean",
                        help="clean: duplicates never cross splits (default); kaggle: the dataset's own folders")
    parser.add_argument("--weights-dir", default=None,
                        help="folder with vgg16_notop.weights.h5 and resnet50_notop.weights.h5 "
                        "(default: $FRUITVEG_WEIGHTS_DIR, else Keras' ImageNet download)")
    parser.add_argument("--random-backbones", action="store_true", help=argparse.SUPPRESS)  # tests only
    parser.add_argument("--groups", default=None, help='JSON file {"class": "fruit"|"vegetable"} overriding the grouping')
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default")
    parser.add_argument("--trunk-precision", choices=training.TRUNK_PRECISIONS, default="auto",
                        help="arithmetic of the frozen trunk over the training views; auto: on a GPU bfloat16 or "
                        "float16, whichever it computes natively; on a CPU bfloat16 where it has it natively "
                        "(AVX512-BF16, AMX), else float32. Validation and test always use float32")
    parser.add_argument("--train-precision", choices=training.TRAIN_PRECISIONS, default=None,
                        help="arithmetic of the trained parts (weights stay float32); auto: bfloat16 where the trunk "
                        "would use it. Default float32 with the study's recipe (its results unchanged), auto with the "
                        "tuned one")
    parser.add_argument("--keep-cache", action="store_true",
                        help="keep the frozen trunk outputs cached under OUT/.cache after the run (deleted by default; "
                        "a resumed run reuses them either way)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    hp = training.HyperParameters.for_recipe(
        args.recipe, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
        patience=args.patience, dropout=args.dropout, views=args.views, seed=args.seed,
    )
    try:
        status = training.run(
            args.data_dir, args.out, args.models, hp, split=args.split, weights_dir=args.weights_dir,
            random_backbones=args.random_backbones, strategy=args.strategy,
            group_overrides=groups.load_overrides(args.groups), seeds=args.seeds,
            trunk_precision=args.trunk_precision, keep_cache=args.keep_cache, recipe=args.recipe,
            train_precision=args.train_precision or training.default_train_precision(args.recipe),
            recipe_changes=args.change,
        )
    except (artifacts.ResultSetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write the result set: {err.strerror or err} ({err.filename or args.out})", file=sys.stderr)
        return 2
    failed = {m: s for m, s in status.items() if s not in ("trained", "done")}
    for model_id, state in status.items():
        print(f"{model_id:20s} {state}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
