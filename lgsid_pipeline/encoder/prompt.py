"""The one item prompt template: content (name, category, brand) + location (admin areas, city).

``"<name>. Category: <category>. Brand: <brand>. Located in <level2>, <level1>, <city>."``
Missing parts (None, NaN, empty or blank) are skipped; the result is whitespace-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

CONTENT_COLUMNS = ("name", "category", "brand")
LOCATION_COLUMNS = ("admin_l2_name", "admin_l1_name", "city_name")
UNNAMED = "Unnamed place."


def clean_part(value: Any) -> str | None:
    """A prompt part as whitespace-normalised text, or None when missing/NaN/blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            if pd.isna(value):
                return None
        except (TypeError, ValueError):  # array-likes: not a scalar missing value
            pass
        value = str(value)
    text = " ".join(value.split())
    return text or None


def sentence(text: str) -> str:
    """``text`` ending with one full stop (no doubled punctuation after "Inc." or "Yahoo!")."""
    return text if text.endswith((".", "!", "?")) else f"{text}."


def location_sentence(level2: Any, level1: Any, city: Any) -> str | None:
    """``"Located in <level2>, <level1>, <city>."`` over the parts present, or None."""
    parts = [p for p in (clean_part(level2), clean_part(level1), clean_part(city)) if p]
    return sentence("Located in " + ", ".join(parts)) if parts else None


def item_prompt(name: Any, category: Any, brand: Any, level2: Any, level1: Any, city: Any) -> str:
    """The prompt of one item; see the module docstring for the template."""
    name, category, brand = clean_part(name), clean_part(category), clean_part(brand)
    if name:
        sentences = [sentence(name)]
        if category:
            sentences.append(sentence(f"Category: {category}"))
    elif category:
        sentences = [sentence(category)]
    else:
        sentences = [UNNAMED]
    if brand:
        sentences.append(sentence(f"Brand: {brand}"))
    located = location_sentence(level2, level1, city)
    if located:
        sentences.append(located)
    return " ".join(sentences)


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise ValueError naming the columns of ``columns`` that ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks column(s) {missing}; has {list(frame.columns)}")


def column_values(frame: pd.DataFrame, column: str) -> list[Any]:
    """A column as a plain Python list (position order, index ignored)."""
    return frame[column].astype(object).tolist()


def item_prompts(items: pd.DataFrame, location: pd.DataFrame | None = None) -> list[str]:
    """Prompts for an items table, row by row (positions, not index labels).

    With ``location`` (same length), content comes from ``items`` and location from
    ``location``: the mismatched prompts prompt(c_i, l_j) of the geo negatives.
    """
    require_columns(items, CONTENT_COLUMNS, "items")
    if location is None:
        location = items
    elif len(location) != len(items):
        raise ValueError(f"location frame has {len(location)} rows, items has {len(items)}")
    require_columns(location, LOCATION_COLUMNS, "location" if location is not items else "items")
    content = [column_values(items, c) for c in CONTENT_COLUMNS]
    where = [column_values(location, c) for c in LOCATION_COLUMNS]
    return [item_prompt(*row) for row in zip(*content, *where, strict=True)]
