"""Course expectations: checked on pretrained weights of the course's default model only."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipelab.tasks import CaseResult, Task
from pipelab.weights import ResolvedWeights


def _none(verdict: str) -> dict[str, Any]:
    return {"total": 0, "passed": 0, "items": [], "verdict": verdict}


def course_checks(cfg: DictConfig, task: Task, results: list[CaseResult], weights: ResolvedWeights) -> dict[str, Any]:
    """{total, passed, items, verdict}: each expectation of conf/task/<task>.yaml against its case's output."""
    expectations = OmegaConf.to_container(cfg.task.expectations, resolve=True) or []
    if weights.weights == "tiny-random":
        return _none("tiny weights: not checked")
    if not expectations:
        return _none("no course expectation for this task")
    course_models = {cfg.task.default_model, cfg.task.get("default_model_gpu")}
    if cfg.model.name not in course_models:
        return _none(f"not checked: {cfg.model.name} is not the course model")
    by_id = {r.case.id: r for r in results}
    outputs = {r.case.id: r.output for r in results if r.valid and not r.error}
    items = []
    for exp in expectations:
        missing = [c for c in (exp["case"], exp.get("than")) if c is not None and c not in outputs]
        if missing:
            r = by_id.get(missing[0])
            why = "case missing" if r is None else (r.error or "; ".join(r.problems))
            items.append({"case": exp["case"], "passed": False, "detail": f"no valid output for {missing[0]}: {why}"})
            continue
        passed, detail = task.check_course(exp, outputs)
        items.append({"case": exp["case"], "passed": bool(passed), "detail": detail})
    passed = sum(i["passed"] for i in items)
    verdict = (
        f"reproduces the course ({passed}/{len(items)})"
        if passed == len(items)
        else f"differs from the course ({passed}/{len(items)} checks pass)"
    )
    return {"total": len(items), "passed": passed, "items": items, "verdict": verdict}
