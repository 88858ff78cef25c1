"""Classify photos with every model of a result set.

    python scripts/classify.py IMAGE [IMAGE ...] [--json] [--views] [--artifacts DIR] [--weights-dir DIR]

Prints each model's top-3 classes and its fruit/vegetable verdict per image; with --json, one JSON object
per image per line: {"file", "models": {id: {"top": [[class, prob], ...], "group", "unknown"}}, "ensemble"};
"unknown" is the open-set verdict (true: none of the classes the result set knows; null: the set has none).
With --views, each model for which validation took test-time views (core.testtime: its mirror image, crops)
answers with their average, and says which ("views"); the open-set verdict stays the photo's.
A file that is not a usable image gets exactly one line on stderr and the exit status is 1; the others are
still classified. stdout holds the answers and nothing else.

Quiet: TensorFlow's C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL and are written straight to file
descriptor 2, so while TensorFlow loads and first runs, fd 2 points at /dev/null and Python's ``sys.stderr``
at a copy of the real stderr: Python-level messages and tracebacks still reach the terminal. Keras' download
messages (print to stdout) go to stderr; TensorFlow's Python warnings (e.g. retracing) are turned off.
Quick: the images are read and validated first, so bad files alone never pay for loading TensorFlow;
Keras' optional scikit-learn and pyplot imports are skipped; each ImageNet backbone is built once for both
of its models and the open-set features; the models run uncompiled and without maps
(``inference.Predictor``): for one photo, tracing graphs costs more than it saves.
"""

import argparse
import contextlib
import json
import os
import sys

import _path  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from core import images  # noqa: E402  (Pillow only: TensorFlow is imported after the images are read)


@contextlib.contextmanager
def native_stderr_silenced():
    """fd 2 -> /dev/null for C/C++ writers; ``sys.stderr`` keeps writing to the real stderr; both restored."""
    sys.stderr.flush()
    saved_fd = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        sys.stderr.close()
        sys.stderr = python_stderr


# Imported by Keras when installed, used by nothing here: its scikit-learn wrapper and its image-gallery plot.
UNUSED_OPTIONAL_IMPORTS = ("sklearn", "matplotlib.pyplot")


@contextlib.contextmanager
def optional_imports_skipped(names):
    """Make ``import NAME`` fail inside the block, as if the package were not installed, then undo it.

    Keras imports scikit-learn and matplotlib's pyplot if present, each behind ``try: import ... except
    ImportError``; together with SciPy they are seconds of a start-up that uses neither.
    """
    skipped = {name: sys.modules.get(name) for name in names}
    sys.modules.update(dict.fromkeys(names))
    try:
        yield
    finally:
        for name, module in skipped.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def error_line(path: str, err: BaseException) -> str:
    return f"error: {path}: {err}"


def answer(path: str, summary: dict, as_json: bool) -> str:
    """The text printed for one photo: the one place that builds the JSON record or the readable block."""
    from core import reports

    if as_json:
        return json.dumps({"file": path, **summary})
    return reports.format_summary(path, summary)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    parser.add_argument("--artifacts", default=os.environ.get("FRUITVEG_ARTIFACTS", "artifacts"))
    parser.add_argument("--weights-dir", default=None, help="ImageNet weights folder (default $FRUITVEG_WEIGHTS_DIR)")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--views", action="store_true", help="average the test-time views validation took per model")
    args = parser.parse_args(argv)

    photos, failures = [], 0
    for path in args.images:
        try:
            photos.append((path, images.read_image(path)))
        except images.ImageError as err:
            print(error_line(path, err), file=sys.stderr)
            failures += 1
    if not photos:
        return 1

    with native_stderr_silenced(), contextlib.redirect_stdout(sys.stderr):
        with optional_imports_skipped(UNUSED_OPTIONAL_IMPORTS):
            import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        from core import artifacts, features, inference, openset, reports

        try:
            result_set = artifacts.open_result_set(args.artifacts)
        except artifacts.ResultSetError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        loaded = inference.load_models(result_set, args.weights_dir)
        for model_id, reason in loaded.problems.items():
            print(f"warning: {model_id} unavailable: {reason}", file=sys.stderr)
        if not loaded.models:
            print("error: no model of the result set could be loaded", file=sys.stderr)
            return 2
        predictor = inference.Predictor(loaded, result_set.openset())
        # The verdict's backbones come with the models; only a set lacking them builds its own.
        verdict = None if predictor.judges_open_set else features.load_verdict(result_set, args.weights_dir)

        def summarise(image):
            classification, flags = predictor.classify_image(image, args.views)
            summary = reports.summarise(classification, result_set, top=args.top)
            if verdict is not None:
                flags = verdict.for_image(image, summary["models"])
            return openset.mark_unknown(summary, flags)

        summaries = [summarise(image) for _, image in photos[:1]]
    # The first answer is out as soon as it exists; later photos reuse the traced graphs.
    for index, (path, image) in enumerate(photos):
        summary = summaries[0] if index == 0 else summarise(image)
        print(answer(path, summary, args.json), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
