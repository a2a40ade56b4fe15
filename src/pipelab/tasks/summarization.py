"""Summarization through pipelab's v4-compatible summarization pipeline."""

from __future__ import annotations

from typing import Any

from pipelab import agreement, metrics, schemas
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext


class Summarization(Task):
    name = "summarization"
    generates = True
    order = 7

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        return schemas.list_of(output, schemas.text_item("summary_text"))

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        ok = [r for r in results if r.valid and r.case.kind in ("course", "custom")]
        if not ok:
            return {}
        lengths = [len(r.output[0]["summary_text"].split()) for r in ok]
        ratios = [metrics.compression_ratio(r.case.input, r.output[0]["summary_text"]) for r in ok]
        return {"summary_words_mean": sum(lengths) / len(lengths), "compression_ratio_mean": sum(ratios) / len(ratios)}

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """chrF of the text against the reference's text (100: the same), and the exact-match rate."""
        return agreement.texts(pairs, lambda output: " ".join(item["summary_text"] for item in output))
