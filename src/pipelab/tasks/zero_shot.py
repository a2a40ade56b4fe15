"""Zero-shot classification: `pipe(sequence, candidate_labels=...)` -> {sequence, labels, scores}."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from pipelab import agreement, metrics, schemas
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext


def fit_labels(labels: list[str], count: int, pool: list[str]) -> list[str]:
    """Cut or fill the candidate labels to `count`: the case's own first, then unused pool labels."""
    fitted = list(labels[:count])
    for label in pool:
        if len(fitted) >= count:
            break
        if label not in fitted:
            fitted.append(label)
    if len(fitted) < count:
        raise ValueError(f"label_count {count} needs more labels than the case and label_pool offer ({fitted})")
    return fitted


class ZeroShot(Task):
    name = "zero-shot-classification"
    order = 2
    text_key = "sequence"

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        problems = schemas.keys(output, {"sequence": str, "labels": list, "scores": list}, "output")
        if problems:
            return problems
        if len(output["labels"]) != len(output["scores"]):
            problems.append("labels and scores differ in length")
        if output["scores"] and abs(sum(output["scores"]) - 1.0) > 0.01:
            problems.append(f"scores sum to {sum(output['scores']):.4f}, not 1 (single-label mode)")
        if output["scores"] != sorted(output["scores"], reverse=True):
            problems.append("scores are not sorted high to low")
        return problems

    def bare_arguments(self, pipe: Any, case: Case) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (case.input["sequence"],), {"candidate_labels": case.input["candidate_labels"], **case.kwargs}

    def prepare(self, case_cfg: DictConfig, ctx: TaskContext) -> list[Case]:
        cases = super().prepare(case_cfg, ctx)
        count = ctx.cfg.task.label_count
        for case in cases:
            if count is not None:
                labels = fit_labels(case.input["candidate_labels"], count, list(ctx.cfg.task.label_pool))
                case.input = dict(case.input, candidate_labels=labels)
                case.display = case.input
        return cases

    def user_case(self, value: str, ctx: TaskContext) -> Case:
        labels = list(ctx.cfg.task.cases[0].input.candidate_labels)
        case = super().user_case(value, ctx)
        case.input = {"sequence": value, "candidate_labels": labels}
        case.display = case.input
        return case

    def call(self, pipe: Any, case: Case) -> Any:
        return pipe(case.input["sequence"], candidate_labels=case.input["candidate_labels"], **case.kwargs)

    def call_batch(self, pipe: Any, case: Case, batch_size: int) -> Any:
        sequences = [case.input["sequence"]] * batch_size
        return pipe(sequences, candidate_labels=case.input["candidate_labels"], batch_size=batch_size, **case.kwargs)

    def check_expectation(self, expectation: dict[str, Any], output: Any) -> tuple[bool, str]:
        label, score = output["labels"][0], float(output["scores"][0])
        ok = label == expectation["label"] and abs(score - expectation["score"]) <= expectation["tol"]
        return (
            ok,
            f"top {label} {score:.4f}, expected {expectation['label']} {expectation['score']} +/- {expectation['tol']}",
        )

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        ok = [r for r in results if r.valid]
        if not ok:
            return {}
        return {
            "label_count": float(len(ok[0].output["labels"])),
            "top_score_mean": sum(r.output["scores"][0] for r in ok) / len(ok),
            "score_entropy_mean": sum(metrics.entropy(r.output["scores"]) for r in ok) / len(ok),
        }

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """Top label, and the largest score difference of any candidate label."""

        def scores(output: Any) -> dict[str, float]:
            return dict(zip(output["labels"], output["scores"], strict=True))

        return {
            "agree_top_label_rate": agreement.rate(pairs, lambda got, ref: got["labels"][0] == ref["labels"][0]),
            "agree_max_score_diff": max(abs(scores(got)[k] - v) for got, ref in pairs for k, v in scores(ref).items()),
        }
