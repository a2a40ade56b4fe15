"""Speech recognition on decoded 16 kHz mono float32 arrays (soundfile + librosa, no ffmpeg)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from pipelab import schemas
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext, plain


def word_error_rate(hypothesis: str, reference: str) -> float:
    """Word-level Levenshtein distance / reference words, on lower-cased words without punctuation."""

    def words(text: str) -> list[str]:
        return "".join(ch.lower() if ch.isalnum() or ch.isspace() else " " for ch in text).split()

    hyp, ref = words(hypothesis), words(reference)
    if not ref:
        return float(bool(hyp))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


class SpeechRecognition(Task):
    name = "automatic-speech-recognition"
    order = 10

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        return schemas.keys(output, {"text": str}, "output")

    def bare_arguments(self, pipe: Any, case: Case) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The 16 kHz float32 array itself: the pipeline pops keys out of a dict input, so a dict could not be
        reused across calls; an array at the feature extractor's rate is the same input without the dict."""
        rate, expected = case.input["sampling_rate"], pipe.feature_extractor.sampling_rate
        if rate != expected:
            raise ValueError(f"bench audio is at {rate} Hz, the feature extractor wants {expected} Hz")
        return (case.input["raw"],), dict(case.kwargs)

    def prepare(self, case_cfg: DictConfig, ctx: TaskContext) -> list[Case]:
        audio, display = ctx.assets.audio(plain(case_cfg.input)["audio"])
        kwargs = {**(plain(ctx.cfg.task.call) or {}), **(plain(case_cfg.kwargs) or {})}
        return [Case(case_cfg.id, case_cfg.kind, audio, kwargs, display=display)]

    def user_case(self, value: str, ctx: TaskContext) -> Case:
        audio, display = ctx.assets.audio(value)
        return Case("user-input", "user", audio, dict(plain(ctx.cfg.task.call) or {}), display=display)

    def annotate(self, case: Case, ctx: TaskContext) -> None:
        return None

    def call(self, pipe: Any, case: Case) -> Any:
        # The pipeline consumes the dict it is given: pass a copy so a timed re-run has its input.
        return pipe(dict(case.input), **case.kwargs)

    def call_batch(self, pipe: Any, case: Case, batch_size: int) -> Any:
        return pipe([dict(case.input) for _ in range(batch_size)], batch_size=batch_size, **case.kwargs)

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        scored = [
            r for r in results if r.valid and isinstance(r.case.display, dict) and r.case.display.get("reference")
        ]
        if not scored:
            return {}
        wers = [word_error_rate(r.output["text"], r.case.display["reference"]) for r in scored]
        return {"wer_mean": sum(wers) / len(wers)}
