"""Sentiment analysis: `pipe(text)` -> [{label, score}]."""

from __future__ import annotations

from pipelab.tasks.base import CaseResult, Task, TaskContext


class TextClassification(Task):
    name = "text-classification"

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        scores = [r.output[0]["score"] for r in results if r.valid and r.output and "score" in r.output[0]]
        return {"top_score_mean": sum(scores) / len(scores)} if scores else {}
