"""Mask filling: `{mask}` in a case becomes the tokenizer's own mask token (<mask> or [MASK])."""

from __future__ import annotations

from typing import Any

from pipelab import agreement, schemas
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext

MASK_PLACEHOLDER = "{mask}"


class FillMask(Task):
    name = "fill-mask"
    order = 4

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        def item(entry: Any, where: str) -> list[str]:
            fields = {"sequence": str, "score": (int, float), "token": int, "token_str": str}
            return schemas.keys(entry, fields, where) or schemas.score_in_unit(entry, where)

        return schemas.list_of(output, item)

    def annotate(self, case: Case, ctx: TaskContext) -> None:
        mask = ctx.pipe.tokenizer.mask_token
        if MASK_PLACEHOLDER not in case.input and mask not in case.input:
            case.notes.append(f"no {MASK_PLACEHOLDER} in the input: the pipeline will say no mask was found")
        case.input = case.input.replace(MASK_PLACEHOLDER, mask)
        case.display = case.input
        super().annotate(case, ctx)

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        ok = [r for r in results if r.valid]
        if not ok:
            return {}
        return {"top_score_mean": sum(r.output[0]["score"] for r in ok) / len(ok)}

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """Top token, top-k overlap (share of the reference's tokens the variant also ranks), top score."""
        overlap = [len({o["token"] for o in got} & {o["token"] for o in ref}) / len(ref) for got, ref in pairs]
        return agreement.top_label(pairs, "token") | {"agree_top5_overlap": sum(overlap) / len(overlap)}
