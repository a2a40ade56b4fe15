"""Text generation: the top-level `temperature` knob plus the task's generation settings, seeded per case."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from pipelab import agreement, metrics, schemas
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext, plain


def generation_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Call kwargs from the config. Greedy decoding gets no sampling knobs (v5 warns about them)."""
    gen = cfg.task.generation
    kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample}
    if gen.do_sample:
        kwargs["temperature"] = float(cfg.temperature)
        kwargs["num_return_sequences"] = gen.num_return_sequences
        if gen.top_k is not None:
            kwargs["top_k"] = gen.top_k
        if gen.top_p is not None:
            kwargs["top_p"] = gen.top_p
    return kwargs


def pad_on_the_left(pipe: Any) -> None:
    """Batched generation needs a pad token, on the left for a decoder-only model; GPT-2 has none, so EOS stands in.

    The pad id goes into the model's generation config, not into a case's kwargs: the pipeline is cached and later
    runs and sweeps reuse it, so the kwargs (recorded with every case) must not depend on which run changed it first.
    A pad id in the generation config also silences "Setting pad_token_id to eos_token_id" on every call.
    """
    tokenizer = pipe.tokenizer
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    generation = getattr(pipe.model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "left"


class TextGeneration(Task):
    name = "text-generation"
    generates = True
    order = 3

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        return schemas.list_of(output, schemas.text_item("generated_text"))

    def bench_extras(self, pipe: Any, case: Case) -> dict[str, float]:
        """Time to first token and decode speed of one streamed call (pipelab.bench)."""
        from pipelab import bench

        return bench.measure_generation(pipe, case.input, dict(case.kwargs)).as_metrics()

    def run_name_parts(self, cfg: DictConfig) -> dict[str, str]:
        # Greedy decoding ignores the temperature: say so instead of a T= that had no effect.
        return {"temperature": "greedy" if not cfg.task.generation.do_sample else f"T={cfg.temperature:g}"}

    def prepare(self, case_cfg: DictConfig, ctx: TaskContext) -> list[Case]:
        cases = super().prepare(case_cfg, ctx)
        for case in cases:
            case.kwargs = {**generation_kwargs(ctx.cfg), **(plain(case_cfg.kwargs) or {})}
        return cases

    def user_case(self, value: str, ctx: TaskContext) -> Case:
        case = super().user_case(value, ctx)
        case.kwargs = generation_kwargs(ctx.cfg)
        return case

    def annotate(self, case: Case, ctx: TaskContext) -> None:
        pad_on_the_left(ctx.pipe)
        super().annotate(case, ctx)

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        ok = [r for r in results if r.valid]
        if not ok:
            return {}
        pairs = []  # (prompt, continuation)
        for r in ok:
            for item in r.output:
                text = item["generated_text"]
                prompt = r.case.input
                pairs.append((prompt, text[len(prompt) :] if text.startswith(prompt) else text))
        continuations = [c for _, c in pairs]
        logprobs = [metrics.mean_token_logprob(ctx.pipe.model, ctx.pipe.tokenizer, p, c) for p, c in pairs if c.strip()]
        numbers = {
            "distinct_1": metrics.distinct_n(continuations, 1),
            "distinct_2": metrics.distinct_n(continuations, 2),
            "repetition_rate": metrics.repetition_rate(continuations),
            "generated_words_mean": metrics.mean_length_tokens(continuations),
        }
        if logprobs:
            numbers["token_logprob_mean"] = sum(logprobs) / len(logprobs)
        return numbers

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """chrF of the text against the reference's text (100: the same), and the exact-match rate."""
        return agreement.texts(pairs, lambda output: " ".join(item["generated_text"] for item in output))
