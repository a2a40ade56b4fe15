"""Building blocks of the output schemas (seed 000, table 5.1): each task module states its own schema with them.

A validator returns a list of problems (empty = valid), so a record can say exactly what was wrong with an
output instead of a bare False. Outputs are checked after ``to_jsonable``, i.e. as they are written to records:
numpy scalars are already plain floats there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

SCORE_TOLERANCE = 1e-4  # float32 softmax scores may exceed 1.0 by a few ulps


def to_jsonable(value: Any) -> Any:
    """Plain JSON types from pipeline outputs (NER scores are numpy.float32, some outputs hold tensors)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "tolist") and callable(value.tolist):  # torch tensors
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def keys(item: Any, fields: dict[str, type | tuple[type, ...]], where: str) -> list[str]:
    """`item` is a dict holding each of `fields` with a value of its type (a bool is not a number)."""
    if not isinstance(item, dict):
        return [f"{where}: expected a dict, got {type(item).__name__}"]
    problems = []
    for key, kind in fields.items():
        if key not in item:
            problems.append(f"{where}: missing key '{key}'")
        elif not isinstance(item[key], kind) or isinstance(item[key], bool):
            problems.append(f"{where}: '{key}' should be {getattr(kind, '__name__', kind)}, got {item[key]!r}")
    return problems


def score_in_unit(item: dict, where: str, key: str = "score") -> list[str]:
    """A probability: within [0, 1] up to float32 rounding."""
    score = item.get(key)
    if isinstance(score, int | float) and not (-SCORE_TOLERANCE <= score <= 1 + SCORE_TOLERANCE):
        return [f"{where}: {key} {score} outside [0, 1]"]
    return []


def list_of(output: Any, check: Callable[[Any, str], list[str]], *, allow_empty: bool = False) -> list[str]:
    """A list whose items each pass `check(item, "[i]")`."""
    if not isinstance(output, list):
        return [f"expected a list, got {type(output).__name__}"]
    if not output and not allow_empty:
        return ["empty list"]
    problems: list[str] = []
    for i, item in enumerate(output):
        problems += check(item, f"[{i}]")
    return problems


def label_score(item: Any, where: str) -> list[str]:
    """{label: str, score in [0, 1]} (text and image classification)."""
    problems = keys(item, {"label": str, "score": (int, float)}, where)
    return problems or score_in_unit(item, where)


def text_item(key: str) -> Callable[[Any, str], list[str]]:
    """A dict with one string field, e.g. {"summary_text": str}."""
    return lambda item, where: keys(item, {key: str}, where)


def span(item: Any, where: str, fields: dict[str, type | tuple[type, ...]]) -> list[str]:
    """`fields` plus a score in [0, 1] and start <= end (NER entities, QA answers)."""
    problems = keys(item, fields, where)
    if not problems and item["start"] > item["end"]:
        problems.append(f"{where}: start {item['start']} > end {item['end']}")
    return problems or score_in_unit(item, where)
