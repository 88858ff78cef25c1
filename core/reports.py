"""Plain summaries of a classification, shared by the command line and the app."""

from __future__ import annotations

import numpy as np

from core import artifacts
from core.inference import Classification
from core.specs import MODEL_SPECS


def top_classes(probs: np.ndarray, class_names: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [(class_names[i], float(probs[i])) for i in order]


def group_verdict(probs: np.ndarray, class_groups: list[str]) -> tuple[str, float]:
    """The group (fruit/vegetable) with the larger summed probability, and that probability."""
    totals = {}
    for p, g in zip(probs, class_groups):
        totals[g] = totals.get(g, 0.0) + float(p)
    group = max(sorted(totals), key=totals.get)
    return group, totals[group]


def summarise(classification: Classification, result_set: artifacts.ResultSet, top: int = 3) -> dict:
    """A classification's first photo's answers: per model top-k and group (and, where its probabilities average
    test-time views, which: ``Classification.views``), the soft-voting ensemble, and agreement."""
    names, groups = result_set.class_names, result_set.class_groups
    per_model = {}
    for model_id, result in classification.results.items():
        probs = result.probs[0]
        group, group_prob = group_verdict(probs, groups)
        per_model[model_id] = {"top": top_classes(probs, names, top), "group": group, "group_probability": group_prob}
        if model_id in classification.views:
            per_model[model_id]["views"] = classification.views[model_id]
    ensemble = classification.ensemble()[0]
    group, group_prob = group_verdict(ensemble, groups)
    votes = [m["top"][0][0] for m in per_model.values()]
    majority = max(sorted(set(votes)), key=votes.count)
    return {
        "models": per_model,
        "ensemble": {"top": top_classes(ensemble, names, top), "group": group, "group_probability": group_prob},
        "agreement": {"class": majority, "models": votes.count(majority), "of": len(votes)},
    }


def format_summary(label: str, summary: dict) -> str:
    lines = [label]
    rows = [(MODEL_SPECS[m].title, v) for m, v in summary["models"].items()] + [("ensemble (mean)", summary["ensemble"])]
    for title, value in rows:
        tops = ", ".join(f"{name} {prob:.0%}" for name, prob in value["top"])
        views = f"  ({value['views']} averaged)" if "views" in value else ""
        lines.append(f"  {title:24s} {tops}  [{value['group']} {value['group_probability']:.0%}]{views}")
    agree = summary["agreement"]
    lines.append(f"  {agree['models']} of {agree['of']} models say {agree['class']}")
    return "\n".join(lines)
