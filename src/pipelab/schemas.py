"""The output schema of every course task (seed 000, table 5.1) and its validator.

``validate_output(task, output)`` returns a list of problems (empty = valid), so a record can say exactly what
was wrong with an output instead of a bare False. Outputs are checked after ``to_jsonable``, i.e. as they are
written to records: numpy scalars are already plain floats there.
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


def _keys(item: Any, keys: dict[str, type | tuple[type, ...]], where: str) -> list[str]:
    if not isinstance(item, dict):
        return [f"{where}: expected a dict, got {type(item).__name__}"]
    problems = []
    for key, kind in keys.items():
        if key not in item:
            problems.append(f"{where}: missing key '{key}'")
        elif not isinstance(item[key], kind) or isinstance(item[key], bool):
            problems.append(f"{where}: '{key}' should be {getattr(kind, '__name__', kind)}, got {item[key]!r}")
    return problems


def _score(item: dict, where: str, key: str = "score") -> list[str]:
    score = item.get(key)
    if isinstance(score, int | float) and not (-SCORE_TOLERANCE <= score <= 1 + SCORE_TOLERANCE):
        return [f"{where}: {key} {score} outside [0, 1]"]
    return []


def _list_of(output: Any, check: Callable[[Any, str], list[str]], *, allow_empty: bool = False) -> list[str]:
    if not isinstance(output, list):
        return [f"expected a list, got {type(output).__name__}"]
    if not output and not allow_empty:
        return ["empty list"]
    problems: list[str] = []
    for i, item in enumerate(output):
        problems += check(item, f"[{i}]")
    return problems


def _label_score(item: Any, where: str) -> list[str]:
    problems = _keys(item, {"label": str, "score": (int, float)}, where)
    return problems or _score(item, where)


def _zero_shot(output: Any) -> list[str]:
    problems = _keys(output, {"sequence": str, "labels": list, "scores": list}, "output")
    if problems:
        return problems
    if len(output["labels"]) != len(output["scores"]):
        problems.append("labels and scores differ in length")
    if output["scores"] and abs(sum(output["scores"]) - 1.0) > 0.01:
        problems.append(f"scores sum to {sum(output['scores']):.4f}, not 1 (single-label mode)")
    if output["scores"] != sorted(output["scores"], reverse=True):
        problems.append("scores are not sorted high to low")
    return problems


def _generated(item: Any, where: str) -> list[str]:
    return _keys(item, {"generated_text": str}, where)


def _fill_mask(item: Any, where: str) -> list[str]:
    problems = _keys(item, {"sequence": str, "score": (int, float), "token": int, "token_str": str}, where)
    return problems or _score(item, where)


def _entity(item: Any, where: str) -> list[str]:
    problems = _keys(item, {"entity_group": str, "word": str, "score": (int, float), "start": int, "end": int}, where)
    if not problems and item["start"] > item["end"]:
        problems.append(f"{where}: start {item['start']} > end {item['end']}")
    return problems or _score(item, where)


def _qa(item: Any, where: str) -> list[str]:
    problems = _keys(item, {"answer": str, "score": (int, float), "start": int, "end": int}, where)
    if not problems and item["start"] > item["end"]:
        problems.append(f"{where}: start {item['start']} > end {item['end']}")
    return problems or _score(item, where)


def _text_key(key: str) -> Callable[[Any, str], list[str]]:
    return lambda item, where: _keys(item, {key: str}, where)


def validate_output(task: str, output: Any, *, aggregated: bool = True) -> list[str]:
    """Problems with `output` for `task` (empty list: the output matches the v4 schema).

    NER without aggregation returns token-level dicts (`entity`, `index`) instead of `entity_group`;
    pass aggregated=False for those.
    """
    if task == "text-classification":
        if isinstance(output, list) and output and isinstance(output[0], list):  # top_k=None: one list per input
            return [p for sub in output for p in _list_of(sub, _label_score)]
        return _list_of(output, _label_score)
    if task == "zero-shot-classification":
        return _zero_shot(output)
    if task == "text-generation":
        return _list_of(output, _generated)
    if task == "fill-mask":
        return _list_of(output, _fill_mask)
    if task == "ner":
        if aggregated:
            return _list_of(output, _entity, allow_empty=True)

        def token(item: Any, where: str) -> list[str]:
            found = _keys(item, {"entity": str, "word": str, "score": (int, float), "index": int}, where)
            return found or _score(item, where)

        return _list_of(output, token, allow_empty=True)
    if task == "question-answering":
        if isinstance(output, list):
            return _list_of(output, _qa)
        return _qa(output, "output")
    if task == "summarization":
        return _list_of(output, _text_key("summary_text"))
    if task == "translation":
        return _list_of(output, _text_key("translation_text"))
    if task == "image-classification":
        return _list_of(output, _label_score)
    if task == "automatic-speech-recognition":
        return _keys(output, {"text": str}, "output")
    raise ValueError(f"no schema for task '{task}'")


SCHEMA_TABLE = {
    "text-classification": "label, score in [0, 1]",
    "zero-shot-classification": "sequence, labels, scores (sum to 1)",
    "text-generation": "generated_text",
    "fill-mask": "sequence, score, token, token_str",
    "ner": "entity_group, word, score, start, end",
    "question-answering": "answer, score, start, end",
    "summarization": "summary_text",
    "translation": "translation_text",
    "image-classification": "label, score in [0, 1]",
    "automatic-speech-recognition": "text",
}
