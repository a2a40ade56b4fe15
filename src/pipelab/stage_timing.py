"""Where one pipeline call's time goes: its own preprocess, _forward and postprocess stages (seed 000, fig. 2.1).

A transformers ``Pipeline`` call is ``preprocess`` (tokenizer, image or audio processor) -> ``_forward`` (the model;
``generate`` for generation) -> ``postprocess`` (softmax, argmax, decoding into plain dicts), with the base class's
bookkeeping around them (parameter sanitising, batching, device moves, ``no_grad``). :func:`time_stages` wraps the
three methods *of one pipeline instance* (instance attributes shadowing the class's, removed afterwards), makes a
few ordinary calls and returns the median milliseconds of each stage per call, plus ``other_ms``: the rest of the
call. The outputs are untouched (the wrappers return what the stages return), and the calls are separate from the
benchmark's timed loop, so the loop times the plain pipeline.

ChunkPipelines (question answering, zero-shot, speech recognition) make ``preprocess`` a generator that the base
class interleaves with ``_forward``: each ``next()`` is timed on its own, so the chunking counts as preprocessing
and the model calls as forward. Nothing here imports torch or transformers: any object with those three methods
works.
"""

from __future__ import annotations

import functools
import inspect
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

# The pipeline's method -> the metric it is reported as (``<stage>_ms``), in the order a call runs them.
STAGES: dict[str, str] = {"preprocess": "preprocess", "_forward": "forward", "postprocess": "postprocess"}
#: Every metric :func:`time_stages` returns (the reports read the names from here).
STAGE_METRICS: tuple[str, ...] = (*(f"{s}_ms" for s in STAGES.values()), "other_ms", "stage_calls")


def _timed_generator(generator: Iterator[Any], add: Callable[[int], None]) -> Iterator[Any]:
    """Yield what ``generator`` yields, timing each ``next()`` (the work between two yields) and nothing else."""
    clock = time.perf_counter_ns
    while True:
        t0 = clock()
        try:
            item = next(generator)
        except StopIteration:
            add(clock() - t0)
            return
        add(clock() - t0)
        yield item


def _wrap(method: Callable[..., Any], add: Callable[[int], None]) -> Callable[..., Any]:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter_ns()
        result = method(*args, **kwargs)
        add(time.perf_counter_ns() - t0)
        if inspect.isgenerator(result):  # ChunkPipeline.preprocess: the work happens as it is iterated
            return _timed_generator(result, add)
        return result

    return timed


def time_stages(pipe: Any, call: Callable[[], object], calls: int = 3) -> dict[str, float]:
    """Median ms per call of each stage over ``calls`` calls of ``call`` (which calls ``pipe``), and ``other_ms``.

    Returns ``{}`` when ``pipe`` lacks one of the stages (not a transformers pipeline). The wrappers are removed
    even when a call raises.
    """
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    if not all(callable(getattr(pipe, name, None)) for name in STAGES):
        return {}
    per_call: dict[str, list[float]] = {metric: [] for metric in (*STAGES.values(), "other")}
    spent = dict.fromkeys(STAGES.values(), 0)
    shadowed = {name: pipe.__dict__[name] for name in STAGES if name in vars(pipe)}

    def adder(stage: str) -> Callable[[int], None]:
        def add(ns: int) -> None:
            spent[stage] += ns

        return add

    for name, stage in STAGES.items():
        setattr(pipe, name, _wrap(getattr(pipe, name), adder(stage)))
    try:
        for _ in range(calls):
            spent.update(dict.fromkeys(spent, 0))
            t0 = time.perf_counter_ns()
            call()
            total = time.perf_counter_ns() - t0
            for stage, ns in spent.items():
                per_call[stage].append(ns / 1e6)
            per_call["other"].append(max(0, total - sum(spent.values())) / 1e6)
    finally:
        for name in STAGES:
            if name in shadowed:
                setattr(pipe, name, shadowed[name])
            else:
                delattr(pipe, name)
    result = {f"{stage}_ms": statistics.median(values) for stage, values in per_call.items()}
    result["stage_calls"] = float(calls)
    return result
