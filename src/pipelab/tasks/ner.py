"""Named entity recognition with `aggregation_strategy` (grouped_entities is gone in transformers 5)."""

from __future__ import annotations

from typing import Any

from pipelab import agreement, schemas
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
        return numbers | entity_quality(ok)

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """Same entity set (type, word, span) as the reference, and the largest score difference of a shared one."""

        def spans(output: Any) -> dict[tuple[Any, ...], float]:
            return {
                (e.get("entity_group", e.get("entity")), e["word"], e.get("start"), e.get("end")): e["score"]
                for e in output
            }

        diffs = [abs(spans(got)[k] - v) for got, ref in pairs for k, v in spans(ref).items() if k in spans(got)]
        return {
            "agree_entity_set_rate": agreement.rate(pairs, lambda got, ref: set(spans(got)) == set(spans(ref))),
            "agree_max_score_diff": max(diffs, default=0.0),
        }


def _entity_key(entity: dict[str, Any]) -> tuple[str, str]:
    """(type, text without spaces): subword tokenizers put spaces of their own into unspaced scripts' words."""
    kind = entity.get("entity_group") or str(entity.get("entity", "")).split("-")[-1]
    return kind, "".join(str(entity.get("word", "")).split()).lower()


def entity_quality(results: list[CaseResult]) -> dict[str, float]:
    """Exact-match entity F1 (type and text) of the cases with gold entities, overall and per language.

    Micro-averaged over the cases of a language; a case with no gold and no prediction counts neither way.
    """
    counts: dict[str, list[int]] = {}  # language -> [true positives, predicted, gold]
    for r in results:
        if r.case.gold is None:
            continue
        found = {_entity_key(e) for e in r.output}
        wanted = {_entity_key(e) for e in r.case.gold}
        tally = counts.setdefault(r.case.language, [0, 0, 0])
        tally[0] += len(found & wanted)
        tally[1] += len(found)
        tally[2] += len(wanted)
    numbers: dict[str, float] = {}
    total = [sum(t[i] for t in counts.values()) for i in range(3)]
    for suffix, (hits, predicted, gold) in [("", total), *((f"_{k}", v) for k, v in sorted(counts.items()))]:
        if gold or predicted:
            precision = hits / predicted if predicted else 0.0
            recall = hits / gold if gold else 0.0
            numbers[f"entity_f1{suffix}"] = (
                100 * 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            )
    return numbers
