"""Speech recognition on decoded 16 kHz mono float32 arrays (soundfile + librosa, no ffmpeg)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from pipelab import agreement, schemas
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


def model_window_s(pipe: Any) -> float | None:
    """Seconds of audio the model takes in one pass (Whisper: 30), or None for a model with no fixed window."""
    extractor = getattr(pipe, "feature_extractor", None)
    samples = getattr(extractor, "n_samples", None)
    rate = getattr(extractor, "sampling_rate", None)
    return samples / rate if samples and rate else None


def long_audio_kwargs(settings: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The pipeline kwargs of task.long_audio (mode chunked or long_form), merged into the case's generate_kwargs."""
    extra: dict[str, Any] = {}
    if settings["mode"] == "chunked":
        # ignore_warning: the pipeline warns on every call that chunking a seq2seq model is "experimental"; the
        # record's note and the WER say what it gave.
        extra |= {"chunk_length_s": settings["chunk_length_s"], "ignore_warning": True}
        if settings.get("stride_length_s") is not None:
            extra["stride_length_s"] = settings["stride_length_s"]
    else:
        extra["return_timestamps"] = True
    if settings.get("max_new_tokens"):
        extra["generate_kwargs"] = {
            **(kwargs.get("generate_kwargs") or {}),
            "max_new_tokens": settings["max_new_tokens"],
        }
    return extra


class SpeechRecognition(Task):
    name = "automatic-speech-recognition"
    generates = True
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
        """A clip beyond the model's window gets the long-audio call of task.long_audio, and a note that says so."""
        window_s = model_window_s(ctx.pipe)
        seconds = case.input["raw"].size / case.input["sampling_rate"]
        settings = plain(ctx.cfg.task.get("long_audio"))
        if window_s is None or seconds <= window_s or not settings:
            return
        case.kwargs = {**case.kwargs, **long_audio_kwargs(settings, case.kwargs)}
        how = (
            f"cut into {settings['chunk_length_s']:g} s chunks"
            if settings["mode"] == "chunked"
            else "transcribed by Whisper's long-form generation (return_timestamps=True)"
        )
        case.notes.append(f"{seconds:.1f} s clip, beyond the model's {window_s:g} s window: {how}")

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
        numbers = {"wer_mean": sum(wers) / len(wers)}
        window_s = model_window_s(ctx.pipe)
        long = [
            wer
            for r, wer in zip(scored, wers, strict=True)
            if window_s is not None and r.case.display.get("seconds", 0) > window_s
        ]
        if long:  # the clips beyond the model's window, on their own: chunk borders cost words
            numbers["wer_long_audio"] = sum(long) / len(long)
        return numbers

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """chrF of the transcript against the reference's transcript (100: the same), and the exact-match rate."""
        return agreement.texts(pairs, lambda output: output["text"])
