"""Extractive QA through pipelab's v4-compatible question-answering pipeline."""

from __future__ import annotations

from typing import Any

from pipelab import agreement, metrics, schemas
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext


class QuestionAnswering(Task):
    name = "question-answering"
    order = 6
    text_key = "context"

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        fields = {"answer": str, "score": (int, float), "start": int, "end": int}
        if isinstance(output, list):  # top_k > 1
            return schemas.list_of(output, lambda item, where: schemas.span(item, where, fields))
        return schemas.span(output, "output", fields)

    def bare_arguments(self, pipe: Any, case: Case) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (), {"question": case.input["question"], "context": case.input["context"], **case.kwargs}

    def user_case(self, value: str, ctx: TaskContext) -> Case:
        case = super().user_case(value, ctx)
        context = ctx.cfg.task.cases[0].input.context
        case.input = {"question": value, "context": context}
        case.display = case.input
        return case

    def call(self, pipe: Any, case: Case) -> Any:
        return pipe(question=case.input["question"], context=case.input["context"], **case.kwargs)

    def call_batch(self, pipe: Any, case: Case, batch_size: int) -> Any:
        questions = [case.input["question"]] * batch_size
        contexts = [case.input["context"]] * batch_size
        return pipe(question=questions, context=contexts, batch_size=batch_size, **case.kwargs)

    def check_expectation(self, expectation: dict[str, Any], output: Any) -> tuple[bool, str]:
        answer = output["answer"] if isinstance(output, dict) else output[0]["answer"]
        return answer == expectation["answer"], f"answer {answer!r}, expected {expectation['answer']!r}"

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        def top_score(r: CaseResult) -> float:
            return float((r.output if isinstance(r.output, dict) else r.output[0])["score"])

        numbers: dict[str, float] = {}
        for group, kinds in (("answerable", {"course", "custom"}), ("unanswerable", {"unanswerable"})):
            scores = [top_score(r) for r in results if r.valid and r.case.kind in kinds]
            if scores:
                for key, value in metrics.score_distribution(scores).items():
                    numbers[f"{group}_score_{key}"] = value
        return numbers | answer_quality(results)

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """Same answer span as the reference, and the largest difference of its score."""
        return agreement.top_label(pairs, "answer")


def answer_quality(results: list[CaseResult]) -> dict[str, float]:
    """SQuAD exact match and F1 of the cases with gold answers, overall and per language (`f1_th`, `exact_match_ar`).

    F1 counts characters in scripts without spaces between words (Thai): see pipelab.metrics.answer_tokens.
    """
    scored: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if not (r.valid and r.case.gold):
            continue
        answer = (r.output if isinstance(r.output, dict) else r.output[0])["answer"]
        pair = (metrics.exact_match(answer, r.case.gold), metrics.token_f1(answer, r.case.gold))
        scored.setdefault(r.case.language, []).append(pair)
    numbers: dict[str, float] = {}
    everything = [pair for pairs in scored.values() for pair in pairs]
    for suffix, pairs in [("", everything), *((f"_{lang}", pairs) for lang, pairs in sorted(scored.items()))]:
        if pairs:
            numbers[f"exact_match{suffix}"] = 100 * sum(em for em, _ in pairs) / len(pairs)
            numbers[f"f1{suffix}"] = 100 * sum(f1 for _, f1 in pairs) / len(pairs)
    return numbers
