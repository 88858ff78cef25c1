"""The one-sentence verdict of the Classify page, from ``reports.summarise``'s answers.

It leads with the soft-voting ensemble (the average of the models) and counts the models that agree
with it, so the sentence can never name one class as the models' choice while the average names
another. When the models' votes tie, or their most common vote differs from the average, it says so.
"""

from __future__ import annotations

from collections import Counter


def votes(summary: dict) -> Counter:
    """Each model's top class, counted."""
    return Counter(answer["top"][0][0] for answer in summary["models"].values())


def agreeing(summary: dict) -> tuple[int, int]:
    """How many models name the ensemble's top class as theirs, of how many."""
    counted = votes(summary)
    return counted[summary["ensemble"]["top"][0][0]], sum(counted.values())


def majority(summary: dict) -> str | None:
    """The class that more models pick than any other; None on a tie for the most votes."""
    ranked = votes(summary).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def headline(summary: dict) -> str:
    """Markdown: the average's class, how many models agree, and the split when there is no majority."""
    average, probability = summary["ensemble"]["top"][0]
    agree, of = agreeing(summary)
    counted = votes(summary)
    split = ", ".join(f"{n} {name}" for name, n in counted.most_common())
    top = majority(summary)
    if agree == of:
        return f"**All {of} models say _{average}_**; their average gives it {probability:.0%}."
    if top is None:
        return (f"**No majority**: the models split ({split}). "
                f"Their average favours _{average}_ ({probability:.0%}).")
    if top != average:
        return (f"**No agreement**: {counted[top]} of {of} models say _{top}_, but the average of all {of} "
                f"favours _{average}_ ({probability:.0%}); votes: {split}.")
    return (f"**{agree} of {of} models say _{average}_**, and their average agrees ({probability:.0%}); "
            f"votes: {split}.")


def group_phrase(group: str, probability: float) -> str:
    """The fruit/vegetable verdict worded as what it is, a sum over classes, so that it cannot read as
    contradicting a top class from the other group."""
    return f"all {group} classes together {probability:.0%}"
