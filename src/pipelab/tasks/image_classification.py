"""Image classification on decoded PIL images (assets, synthetic edge images, or a user path)."""

from __future__ import annotations

from omegaconf import DictConfig

from pipelab.tasks.base import Case, CaseResult, Task, TaskContext, plain


class ImageClassification(Task):
    name = "image-classification"
    order = 9

    def prepare(self, case_cfg: DictConfig, ctx: TaskContext) -> list[Case]:
        spec = plain(case_cfg.input)
        image, display = ctx.assets.image(spec["image"], spec.get("convert"))
        kwargs = {**(plain(ctx.cfg.task.call) or {}), **(plain(case_cfg.kwargs) or {})}
        return [Case(case_cfg.id, case_cfg.kind, image, kwargs, display=display)]

    def user_case(self, value: str, ctx: TaskContext) -> Case:
        image, display = ctx.assets.image(value)
        return Case("user-input", "user", image, dict(plain(ctx.cfg.task.call) or {}), display=display)

    def annotate(self, case: Case, ctx: TaskContext) -> None:
        return None

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        ok = [r for r in results if r.valid]
        return {"top_score_mean": sum(r.output[0]["score"] for r in ok) / len(ok)} if ok else {}
