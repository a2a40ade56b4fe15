"""Translation: a bilingual model runs the cases of its own direction; a multilingual one runs them all."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from pipelab import agreement, metrics, schemas
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext


def direction_of(cfg: DictConfig) -> tuple[str, str] | None:
    """(src, tgt) of a bilingual model; None for a multilingual one (languages src/tgt 'any')."""
    langs = cfg.model.get("languages") or {}
    src, tgt = langs.get("src"), langs.get("tgt")
    if src in (None, "any") or tgt in (None, "any"):
        return None
    return src, tgt


class Translation(Task):
    name = "translation"
    generates = True
    order = 8
    text_key = "text"

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        return schemas.list_of(output, schemas.text_item("translation_text"))

    def bare_arguments(self, pipe: Any, case: Case) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (case.input["text"],), dict(case.kwargs)

    def prepare(self, case_cfg: DictConfig, ctx: TaskContext) -> list[Case]:
        direction = direction_of(ctx.cfg)
        cases = super().prepare(case_cfg, ctx)
        kept = []
        for case in cases:
            pair = (case.input["src_lang"], case.input["tgt_lang"])
            if direction is not None and pair != direction:
                continue  # another model's direction: not this run's case
            if direction is None:
                case.kwargs.update(src_lang=pair[0], tgt_lang=pair[1])
            kept.append(case)
        return kept

    def user_case(self, value: str, ctx: TaskContext) -> Case:
        case = super().user_case(value, ctx)
        src, tgt = direction_of(ctx.cfg) or ("en", "fr")
        case.input = {"text": value, "src_lang": src, "tgt_lang": tgt}
        case.display = case.input
        if direction_of(ctx.cfg) is None:
            case.kwargs.update(src_lang=src, tgt_lang=tgt)
        return case

    def call(self, pipe: Any, case: Case) -> Any:
        return pipe(case.input["text"], **case.kwargs)

    def call_batch(self, pipe: Any, case: Case, batch_size: int) -> Any:
        return pipe([case.input["text"]] * batch_size, batch_size=batch_size, **case.kwargs)

    def check_expectation(self, expectation: dict[str, Any], output: Any) -> tuple[bool, str]:
        text = output[0]["translation_text"]
        score = metrics.chrf([text], [expectation["reference"]])
        ok = score >= expectation["min_chrf"]
        return ok, f"{text!r} vs {expectation['reference']!r}: chrF {score:.1f} (pass at >= {expectation['min_chrf']})"

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        scored = [r for r in results if r.valid and r.case.input.get("reference")]
        if not scored:
            return {}
        hyps = [r.output[0]["translation_text"] for r in scored]
        refs = [r.case.input["reference"] for r in scored]
        return {"chrf": metrics.chrf(hyps, refs), "bleu": metrics.bleu(hyps, refs), "references": float(len(refs))}

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """chrF of the text against the reference's text (100: the same), and the exact-match rate."""
        return agreement.texts(pairs, lambda output: " ".join(item["translation_text"] for item in output))
