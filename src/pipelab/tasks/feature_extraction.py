"""Sentence embeddings: `pipe([a, b])` -> one [1][tokens][hidden] list of token vectors per sentence.

A case is a sentence pair {a, b}. The record keeps each sentence's shape and the cosine of the mean-pooled vectors
(all-MiniLM-L6-v2's own pooling), not the 2 x tokens x 384 floats; the schema is checked on the whole output.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from pipelab import agreement
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext


def mean_pooled(tokens: list[list[float]]) -> list[float]:
    """The mean of the token vectors of one sentence."""
    return [sum(column) / len(tokens) for column in zip(*tokens, strict=True)]


def cosine(u: list[float], v: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v))
    return sum(x * y for x, y in zip(u, v, strict=True)) / norm if norm else 0.0


class FeatureExtraction(Task):
    name = "feature-extraction"
    order = 11
    text_key = "a"  # `repeat` lengthens the pair's first sentence

    def prepare(self, case_cfg: DictConfig, ctx: TaskContext) -> list[Case]:
        cases = super().prepare(case_cfg, ctx)
        for case in cases:
            pair = case.input
            if not (isinstance(pair, dict) and set(pair) == {"a", "b"}):
                raise ValueError(f"case {case.id}: input must be a sentence pair {{a: ..., b: ...}}, got {pair!r}")
            case.input, case.display = [pair["a"], pair["b"]], pair
        return cases

    def user_case(self, value: str, ctx: TaskContext) -> Case:
        """`input="first || second"` embeds a pair (its cosine is recorded); a single text embeds alone."""
        texts = [part.strip() for part in value.split("||")] if "||" in value else [value]
        case = super().user_case(value, ctx)
        case.input, case.display = texts, dict(zip("ab", texts, strict=False))
        return case

    def annotate(self, case: Case, ctx: TaskContext) -> None:
        for text in case.input:
            self.truncation_note(case, ctx, text)

    def call_batch(self, pipe: Any, case: Case, batch_size: int) -> Any:
        return pipe(case.input * batch_size, batch_size=batch_size, **case.kwargs)

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        expected = len(case.input) if case is not None else None
        if not isinstance(output, list) or (expected is not None and len(output) != expected):
            return [f"expected one embedding per sentence ({expected}), got {type(output).__name__}"]
        problems: list[str] = []
        for i, sentence in enumerate(output):
            where = f"sentence {i}"
            if not (isinstance(sentence, list) and len(sentence) == 1 and isinstance(sentence[0], list)):
                problems.append(f"{where}: expected [1][tokens][hidden], got {type(sentence).__name__}")
                continue
            tokens = sentence[0]
            widths = {len(t) if isinstance(t, list) else -1 for t in tokens}
            if not tokens or len(widths) != 1 or min(widths) < 1:
                problems.append(f"{where}: token vectors are missing or of different widths ({sorted(widths)})")
                continue
            if not all(isinstance(x, float) and math.isfinite(x) for t in tokens for x in t):
                problems.append(f"{where}: a token vector holds a value that is not a finite float")
        return problems

    def recorded(self, output: Any, case: Case) -> dict[str, Any]:
        pooled = [mean_pooled(sentence[0]) for sentence in output]
        kept: dict[str, Any] = {"shapes": [[1, len(s[0]), len(s[0][0])] for s in output]}
        if len(pooled) == 2:
            kept["cosine"] = round(cosine(*pooled), 6)
        kept["norms"] = [round(math.sqrt(sum(x * x for x in v)), 6) for v in pooled]
        return kept

    def check_course(self, expectation: dict[str, Any], outputs: dict[str, Any]) -> tuple[bool, str]:
        close, far = outputs[expectation["case"]]["cosine"], outputs[expectation["than"]]["cosine"]
        margin = float(expectation["margin"])
        return close - far >= margin, (
            f"cosine {close:.4f} ({expectation['case']}) vs {far:.4f} ({expectation['than']}): "
            f"difference {close - far:.4f}, expected at least {margin}"
        )

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        """cosine_mean over the pairs; paraphrase_gap: the mean cosine difference the expectations compare."""
        cosines = {r.case.id: r.output["cosine"] for r in results if r.valid and "cosine" in r.output}
        if not cosines:
            return {}
        metrics = {"cosine_mean": sum(cosines.values()) / len(cosines)}
        compared = [(e.case, e.than) for e in ctx.cfg.task.expectations if e.case in cosines and e.than in cosines]
        if compared:
            metrics["paraphrase_gap"] = sum(cosines[a] - cosines[b] for a, b in compared) / len(compared)
        return metrics

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """The record keeps each pair's cosine and pooled norms: their largest differences from the reference."""
        return {
            "agree_max_cosine_diff": agreement.max_abs_diff(pairs, lambda out: out.get("cosine", 0.0)),
            "agree_max_norm_rel_diff": max(
                abs(g - r) / r if r else abs(g - r)
                for got, ref in pairs
                for g, r in zip(got["norms"], ref["norms"], strict=True)
            ),
        }
