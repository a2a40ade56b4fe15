"""Sentiment analysis: `pipe(text)` -> [{label, score}]."""

from __future__ import annotations

from typing import Any

from pipelab import schemas
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext


class TextClassification(Task):
    name = "text-classification"
    order = 1

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        if isinstance(output, list) and output and isinstance(output[0], list):  # top_k=None: one list per input
            return [p for sub in output for p in schemas.list_of(sub, schemas.label_score)]
        return schemas.list_of(output, schemas.label_score)

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        scores = [r.output[0]["score"] for r in results if r.valid and r.output and "score" in r.output[0]]
        return {"top_score_mean": sum(scores) / len(scores)} if scores else {}
