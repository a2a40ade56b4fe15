"""How far a variant's outputs (quantized weights, another runtime) are from the reference's on the same cases.

Each task's ``agreement`` (pipelab.tasks) picks what to compare; these are the shared measures. Every function
takes ``pairs``: (variant output, reference output) of the cases that gave a valid output in both runs, as the
records keep them (``Task.recorded``). Metric names start with ``agree_``; the reports show them as the task's own
numbers in the ablation tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipelab import metrics

Pairs = Sequence[tuple[Any, Any]]


def _top(output: Any) -> Any:
    """The first item of a (possibly nested) list output: the top label, token, answer or entity."""
    while isinstance(output, list) and output:
        output = output[0]
    return output


def rate(pairs: Pairs, same: Callable[[Any, Any], bool]) -> float:
    """Share of the cases where `same(variant, reference)` holds."""
    return sum(1 for got, ref in pairs if same(got, ref)) / len(pairs)


def max_abs_diff(pairs: Pairs, value: Callable[[Any], float]) -> float:
    """Largest |value(variant) - value(reference)| over the cases."""
    return max(abs(float(value(got)) - float(value(ref))) for got, ref in pairs)


def top_label(pairs: Pairs, label: str = "label") -> dict[str, float]:
    """Top label (or token, answer) match rate and the largest difference of its score."""
    return {
        f"agree_top_{label}_rate": rate(pairs, lambda got, ref: _top(got).get(label) == _top(ref).get(label)),
        "agree_max_score_diff": max_abs_diff(pairs, lambda out: _top(out).get("score", 0.0)),
    }


def texts(pairs: Pairs, text: Callable[[Any], str]) -> dict[str, float]:
    """Mean sentence chrF of the variant's text against the reference's text (100: identical), exact-match rate."""
    scores = [100.0 if text(got) == text(ref) else metrics.chrf([text(got)], [text(ref)]) for got, ref in pairs]
    return {
        "agree_chrf": sum(scores) / len(scores),
        "agree_exact_rate": rate(pairs, lambda got, ref: text(got) == text(ref)),
    }
