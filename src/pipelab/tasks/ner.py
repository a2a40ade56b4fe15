"""Named entity recognition with `aggregation_strategy` (grouped_entities is gone in transformers 5)."""

from __future__ import annotations

from typing import Any

from pipelab import schemas
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext


class Ner(Task):
    name = "ner"
    order = 5

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        """Grouped entities; with aggregation_strategy=none the pipeline returns tokens (`entity`, `index`)."""
        if case is not None and case.kwargs.get("aggregation_strategy", "simple") == "none":

            def token(item: Any, where: str) -> list[str]:
                fields = {"entity": str, "word": str, "score": (int, float), "index": int}
                return schemas.keys(item, fields, where) or schemas.score_in_unit(item, where)

            return schemas.list_of(output, token, allow_empty=True)
        fields = {"entity_group": str, "word": str, "score": (int, float), "start": int, "end": int}
        return schemas.list_of(output, lambda item, where: schemas.span(item, where, fields), allow_empty=True)

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
