"""Named entity recognition with `aggregation_strategy` (grouped_entities is gone in transformers 5)."""

from __future__ import annotations

from typing import Any

from pipelab.tasks.base import CaseResult, Task, TaskContext


class Ner(Task):
    name = "ner"

    def check_expectation(self, expectation: dict[str, Any], output: Any) -> tuple[bool, str]:
        found = {(e.get("entity_group"), e.get("word")) for e in output}
        wanted = {(e["entity_group"], e["word"]) for e in expectation["entities"]}
        missing = sorted(wanted - found)
        return not missing, f"found {sorted(found)}; missing {missing}" if missing else f"found all of {sorted(wanted)}"

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        ok = [r for r in results if r.valid]
        if not ok:
            return {}
        entities = [e for r in ok for e in r.output]
        numbers = {"entities_per_case": len(entities) / len(ok)}
        if entities:
            numbers["entity_score_mean"] = sum(e["score"] for e in entities) / len(entities)
            numbers["entity_span_chars_mean"] = sum(e.get("end", 0) - e.get("start", 0) for e in entities) / len(
                entities
            )
        return numbers
