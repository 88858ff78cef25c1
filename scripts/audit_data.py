"""Audit a dataset folder: images per split and class, exact and near duplicates, train/test overlap.

    python scripts/audit_data.py --data-dir DATA [--json] [--near-bits 6] [--examples 10]

Exact duplicates are byte-identical files. Near duplicates are files with different bytes whose perceptual
hashes differ by at most --near-bits of 64 under the best rotation/flip (re-encoded, resized or mirrored
copies); byte-identical pairs are not counted again among them. With --json the last line of the output is
the summary as one JSON object.
"""

import argparse
import json
import sys

import _path  # noqa: F401

from core import audit, dataset  # noqa: E402


def describe(pair: audit.DuplicatePair) -> str:
    how = "exact" if pair.exact else f"near ({pair.distance} bits)"
    return f"  {how:16s} {pair.a.path}  =  {pair.b.path}"


def report(result: audit.Audit, examples: int) -> list[str]:
    summary = result.to_json()
    table = result.counts.copy()
    table.loc["total"] = table.sum()
    lines = [
        f"Dataset {result.root}: {result.images} readable images, {summary['classes']} classes, "
        f"{len(result.skipped)} unreadable",
        "",
        table.to_string(),
        "",
        f"Near-duplicate threshold: {result.near_duplicate_bits} of 64 perceptual-hash bits (any rotation/flip)",
    ]
    for kind, pairs in (("exact", result.exact_pairs), ("near", result.near_pairs)):
        parts = summary[f"{kind}_breakdown"]
        lines.append(
            f"{kind.capitalize()} duplicate pairs: {len(pairs)} ({parts['within_split']} within a split, "
            f"{parts['cross_split']} across splits; {parts['cross_class']} across classes)"
        )
    lines.append(f"Distinct images when copies count once: {result.distinct_images}")
    for split in dataset.SPLITS[1:]:
        if result.split_size(split):
            lines.append(
                f"{split.capitalize()} images with an exact or near duplicate in train: "
                f"{len(result.with_train_duplicate[split])} of {result.split_size(split)}"
            )
    for path, reason in result.skipped:
        lines.append(f"unreadable: {path}: {reason}")
    if result.pairs and examples:
        # Pairs come sorted with cross-class copies (label noise) and cross-split ones (leakage) first.
        lines += ["", f"Top duplicate examples (up to {examples} of each kind):"]
        lines += [describe(p) for p in result.exact_pairs[:examples] + result.near_pairs[:examples]]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="dataset root (Kaggle layout or class folders)")
    parser.add_argument("--json", action="store_true", help="end with the summary as one JSON line")
    parser.add_argument("--near-bits", type=int, default=dataset.NEAR_DUPLICATE_BITS,
                        help=f"near-duplicate threshold in bits of 64 (default {dataset.NEAR_DUPLICATE_BITS})")
    parser.add_argument("--examples", type=int, default=10, help="duplicate pairs listed per kind (default 10)")
    args = parser.parse_args(argv)
    try:
        # A progress bar only for a person watching; in a log it is noise.
        result = audit.audit(args.data_dir, args.near_bits, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report(result, args.examples)))
    if args.json:
        print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
