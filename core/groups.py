"""Fruit / vegetable grouping of the class names.

The default follows the Kaggle dataset card: ten classes are fruits, every other class is a vegetable,
culinary usage rather than botany, so lemon, tomato and the peppers count as vegetables here.
A JSON file ``{"class name": "group", ...}`` overrides or extends the default.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FRUIT = "fruit"
VEGETABLE = "vegetable"
FRUITS = frozenset(
    {"apple", "banana", "grapes", "kiwi", "mango", "orange", "pear", "pineapple", "pomegranate", "watermelon"}
)
VEGETABLES = frozenset(
    {
        "beetroot", "bell pepper", "cabbage", "capsicum", "carrot", "cauliflower", "chilli pepper", "corn",
        "cucumber", "eggplant", "garlic", "ginger", "jalepeno", "lemon", "lettuce", "onion", "paprika", "peas",
        "potato", "raddish", "soy beans", "spinach", "sweetcorn", "sweetpotato", "tomato", "turnip",
    }
)


def load_overrides(path: str | os.PathLike | None) -> dict[str, str]:
    """Read a ``{"class": "group"}`` JSON file; None means no overrides."""
    if path is None:
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: expected a JSON object mapping class names to group names")
    return {k.lower(): v for k, v in data.items()}


def group_classes(class_names: list[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Map every class name to its group; unknown names become vegetables, with a warning."""
    overrides = overrides or {}
    groups = {}
    unknown = []
    for name in class_names:
        key = name.lower()
        if key in overrides:
            groups[name] = overrides[key]
        elif key in FRUITS:
            groups[name] = FRUIT
        else:
            if key not in VEGETABLES:
                unknown.append(name)
            groups[name] = VEGETABLE
    if unknown:
        log.warning(
            "classes not in the fruit/vegetable list, counted as vegetables (override with --groups FILE): %s",
            ", ".join(unknown),
        )
    return groups
