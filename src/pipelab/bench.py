"""Latency, memory and generation-speed measurement for one callable.

The protocol, shared by every task of the grid:

1. the first call is timed on its own (``first_call_ms``): it pays for lazy initialisation, kernel selection
   and allocator growth, so mixing it into the steady-state samples would skew the tail;
2. ``warmup`` further calls run untimed;
3. timed calls run until *both* ``min_iterations`` calls and ``min_duration_s`` seconds are reached (or
   ``max_iterations`` as a safety cap), one ``time.perf_counter_ns`` pair per call.

Peak resident memory is sampled by a background thread while the first and warmup calls run, so a buffer
that lives only inside a call is still seen. The thread is stopped before the timed phase: on this project's
busy 2-core machines its wake-ups (GIL hand-over plus a ``/proc`` read) added 5-15% to the CPU time of 0.1-4 ms
calls at a 5 ms period, against under 2% for the timing loop alone. The timed calls are the same calls as
the warmup ones, so their working memory is already covered; one more RSS read after the timed phase catches
steady growth (caches, leaks). Nothing here knows about MLflow or Hydra: results flatten themselves to a
``dict[str, float]`` with :meth:`BenchResult.as_metrics`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import psutil

T = TypeVar("T")

#: Bytes per "MB" in every ``*_mb`` field: MiB, as ``torch.cuda`` memory tools and ``free -m`` report.
BYTES_PER_MB = 1024**2

_PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class BenchSettings:
    """How many calls to make and how often to sample memory.

    Attributes:
        warmup: untimed calls after the (separately timed) first call.
        min_iterations: the timed phase makes at least this many calls ...
        min_duration_s: ... and lasts at least this long; both must be reached.
        max_iterations: safety cap on timed calls, so a very fast call with a long ``min_duration_s``
            cannot run for millions of iterations.
        rss_interval_s: period of the background RSS sampler.
    """

    warmup: int = 10
    min_iterations: int = 10
    min_duration_s: float = 10.0
    max_iterations: int = 10_000
    rss_interval_s: float = 0.005

    def __post_init__(self) -> None:
        # Fail at construction (i.e. at config time), not halfway through a grid.
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.min_iterations < 1:
            raise ValueError(f"min_iterations must be >= 1, got {self.min_iterations}")
        if self.min_duration_s < 0:
            raise ValueError(f"min_duration_s must be >= 0, got {self.min_duration_s}")
        if self.max_iterations < self.min_iterations:
            raise ValueError(
                f"max_iterations ({self.max_iterations}) must be >= min_iterations ({self.min_iterations})"
            )
        if self.rss_interval_s <= 0:
            raise ValueError(f"rss_interval_s must be > 0, got {self.rss_interval_s}")


@dataclass
class LatencyStats:
    """Summary of per-call latencies in milliseconds.

    Percentiles use numpy's default ``"linear"`` method (Hyndman & Fan type 7): the p-th percentile of n
    sorted samples sits at fractional index ``(n - 1) * p / 100``, interpolated linearly between its two
    neighbours. ``std`` is the sample standard deviation (``ddof=1``, Bessel's correction), 0.0 for a single
    sample; ``cv_pct`` is ``100 * std / mean`` (0.0 when the mean is 0).
    """

    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    std: float
    cv_pct: float
    min: float
    max: float
    n: int

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        """Compute the summary of ``samples_ms`` (at least one sample)."""
        if len(samples_ms) == 0:
            raise ValueError("LatencyStats needs at least one sample")
        arr = np.asarray(samples_ms, dtype=np.float64)
        mean = float(arr.mean())
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        p50, p90, p95, p99 = (float(v) for v in np.percentile(arr, _PERCENTILES, method="linear"))
        return cls(
            mean=mean,
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            std=std,
            cv_pct=100.0 * std / mean if mean != 0 else 0.0,
            min=float(arr.min()),
            max=float(arr.max()),
            n=int(arr.size),
        )

    def as_metrics(self, prefix: str = "latency_") -> dict[str, float]:
        """Flatten to ``{prefix}`` + ``mean_ms``, ``p50_ms``, ``p90_ms``, ``p95_ms``, ``p99_ms``, ``std_ms``,
        ``cv_pct`` (min, max and n stay attributes: they are not part of the logged metric set)."""
        return {
            f"{prefix}mean_ms": self.mean,
            f"{prefix}p50_ms": self.p50,
            f"{prefix}p90_ms": self.p90,
            f"{prefix}p95_ms": self.p95,
            f"{prefix}p99_ms": self.p99,
            f"{prefix}std_ms": self.std,
            f"{prefix}cv_pct": self.cv_pct,
        }


class PeakRssSampler:
    """Context manager recording the peak resident set size (RSS) of this process.

    A daemon thread reads the RSS every ``interval_s`` while the block runs, plus once on entry and once on
    exit. Sampling in a thread (rather than reading once at the end) catches buffers that a call allocates
    and frees before returning, which is exactly the working memory of a pipeline call. The value is the
    whole process's RSS (model weights included), in MiB.

    Each wake-up takes the GIL for one ``/proc`` read (about 26 us hot, more under load), so run timed code
    outside the block when the timing matters, as :func:`measure` does.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak_mb(self) -> float:
        """Highest RSS seen so far, in MiB."""
        return self._peak_bytes / BYTES_PER_MB

    def sample_now(self) -> None:
        """Read the RSS once and fold it into the peak (also usable outside the ``with`` block)."""
        rss = self._process.memory_info().rss
        if rss > self._peak_bytes:
            self._peak_bytes = rss

    def _run(self) -> None:
        # Event.wait doubles as an interruptible sleep, so __exit__ does not wait a full period.
        while not self._stop.wait(self.interval_s):
            self.sample_now()

    def __enter__(self) -> PeakRssSampler:
        self._stop.clear()
        self.sample_now()
        self._thread = threading.Thread(target=self._run, name="pipelab-peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample_now()


@dataclass
class BenchResult:
    """Everything :func:`measure` observed.

    ``throughput_items_per_s`` is ``items_per_call / mean latency``: the steady-state rate of the timed calls,
    consistent with the latency statistics (loop bookkeeping between calls is excluded). ``duration_s`` is the
    wall-clock length of the timed phase, bookkeeping included. ``peak_rss_mb`` is the whole process's peak
    RSS in MiB (model weights included), ``cuda_max_allocated_mb`` the peak tensor memory of the timed phase.
    """

    samples_ms: list[float]
    stats: LatencyStats
    first_call_ms: float
    warmup: int
    iterations: int
    duration_s: float
    items_per_call: int
    throughput_items_per_s: float
    peak_rss_mb: float
    cuda_max_allocated_mb: float | None = None

    def as_metrics(self) -> dict[str, float]:
        """Flat ``{name: float}`` for a tracker; ``cuda_max_allocated_mb`` only when measured on CUDA."""
        metrics = self.stats.as_metrics()
        metrics["throughput_items_per_s"] = self.throughput_items_per_s
        metrics["first_call_ms"] = self.first_call_ms
        metrics["peak_rss_mb"] = self.peak_rss_mb
        if self.cuda_max_allocated_mb is not None:
            metrics["cuda_max_allocated_mb"] = self.cuda_max_allocated_mb
        metrics["bench_iterations"] = float(self.iterations)
        return metrics


def _timed_loop_cpu(call: Callable[[], object], settings: BenchSettings) -> tuple[list[int], int]:
    """Timed phase without device synchronisation; returns (per-call ns, wall ns of the phase)."""
    # Locals instead of attribute look-ups: the loop body is two clock reads, the call and one append.
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    min_iterations = settings.min_iterations
    max_iterations = settings.max_iterations
    min_duration_ns = int(settings.min_duration_s * 1e9)
    n = 0
    phase_start = clock()
    while True:
        t0 = clock()
        call()
        t1 = clock()
        append(t1 - t0)
        n += 1
        if n >= max_iterations or (n >= min_iterations and t1 - phase_start >= min_duration_ns):
            break
    return samples, clock() - phase_start


def _timed_loop_cuda(
    call: Callable[[], object], settings: BenchSettings, synchronize: Callable[[], None]
) -> tuple[list[int], int]:
    """Timed phase that synchronises the device around each call, so queued kernels count as latency."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    min_iterations = settings.min_iterations
    max_iterations = settings.max_iterations
    min_duration_ns = int(settings.min_duration_s * 1e9)
    n = 0
    synchronize()
    phase_start = clock()
    while True:
        synchronize()
        t0 = clock()
        call()
        synchronize()
        t1 = clock()
        append(t1 - t0)
        n += 1
        if n >= max_iterations or (n >= min_iterations and t1 - phase_start >= min_duration_ns):
            break
    return samples, clock() - phase_start


def measure(
    call: Callable[[], object],
    settings: BenchSettings,
    *,
    items_per_call: int = 1,
    device: str = "cpu",
) -> BenchResult:
    """Benchmark ``call`` with the protocol described in the module docstring.

    Args:
        call: a zero-argument callable doing one unit of work (e.g. one pipeline call on a fixed batch).
        settings: iteration and duration bounds.
        items_per_call: how many inputs one call processes (batch size), for the throughput.
        device: ``"cpu"`` or a CUDA device string (``"cuda"``, ``"cuda:1"``); on CUDA every timed call is
            bracketed by ``torch.cuda.synchronize`` and the peak allocated device memory of the timed phase
            is recorded (the allocator keeps that counter itself, at no cost to the calls).

    ``peak_rss_mb`` is the highest process RSS sampled every ``rss_interval_s`` during the first and warmup
    calls, or read once after the timed phase (see the module docstring for why not during it).
    """
    if items_per_call < 1:
        raise ValueError(f"items_per_call must be >= 1, got {items_per_call}")
    on_cuda = device.startswith("cuda")
    if on_cuda:
        import torch  # only needed on CUDA: CPU benchmarks of plain callables never pay for importing it

        cuda_device = torch.device(device)

        def synchronize() -> None:
            torch.cuda.synchronize(cuda_device)

    else:

        def synchronize() -> None:
            """Nothing to wait for on the CPU: calls return when their work is done."""

    clock = time.perf_counter_ns
    with PeakRssSampler(settings.rss_interval_s) as rss:
        synchronize()
        t0 = clock()
        call()
        synchronize()
        first_call_ns = clock() - t0

        for _ in range(settings.warmup):
            call()

    # The sampler thread is stopped here: its wake-ups would be charged to the timed calls.
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(cuda_device)
        samples_ns, phase_ns = _timed_loop_cuda(call, settings, synchronize)
        cuda_max_allocated_mb: float | None = torch.cuda.max_memory_allocated(cuda_device) / BYTES_PER_MB
    else:
        samples_ns, phase_ns = _timed_loop_cpu(call, settings)
        cuda_max_allocated_mb = None
    rss.sample_now()  # memory that kept growing over the timed calls

    samples_ms = [ns / 1e6 for ns in samples_ns]
    stats = LatencyStats.from_samples(samples_ms)
    return BenchResult(
        samples_ms=samples_ms,
        stats=stats,
        first_call_ms=first_call_ns / 1e6,
        warmup=settings.warmup,
        iterations=len(samples_ms),
        duration_s=phase_ns / 1e9,
        items_per_call=items_per_call,
        # A zero mean only happens for a call faster than the clock's resolution; report no rate, not inf.
        throughput_items_per_s=items_per_call * 1000.0 / stats.mean if stats.mean > 0 else 0.0,
        peak_rss_mb=rss.peak_mb,
        cuda_max_allocated_mb=cuda_max_allocated_mb,
    )


def time_cold_start(build: Callable[[], T]) -> tuple[T, float]:
    """Call ``build`` once (e.g. ``lambda: pipeline(task, model=path)``); return ``(object, ms)``."""
    t0 = time.perf_counter_ns()
    built = build()
    return built, (time.perf_counter_ns() - t0) / 1e6


@dataclass
class GenerationStats:
    """Streaming speed of one text-generation call.

    Attributes:
        time_to_first_token_ms: from the start of the pipeline call (pre-processing and prompt forward pass
            included, as a user waiting for output experiences it) to the first generated token.
        decode_tokens_per_s: ``(tokens_generated - 1) / (t_last - t_first)``: the rate after the first token,
            which excludes the prompt's forward pass; ``None`` with fewer than two tokens (no interval).
        tokens_generated: token ids emitted by ``generate`` (not characters, not a re-tokenisation of the
            decoded text, which may merge or split differently).
    """

    time_to_first_token_ms: float
    decode_tokens_per_s: float | None
    tokens_generated: int

    def as_metrics(self) -> dict[str, float]:
        """Flat ``{name: float}``; ``decode_tokens_per_s`` only when defined."""
        metrics = {
            "time_to_first_token_ms": self.time_to_first_token_ms,
            "tokens_generated": float(self.tokens_generated),
        }
        if self.decode_tokens_per_s is not None:
            metrics["decode_tokens_per_s"] = self.decode_tokens_per_s
        return metrics


class _TimingStreamer:
    """Streamer that timestamps generated tokens instead of decoding them (the interface of transformers'
    ``BaseStreamer``: ``put`` and ``end``, which is all ``generate`` calls; not imported here, so importing this
    module does not import transformers).

    ``generate`` first ``put``s the prompt ids, then each step's new token ids (already moved to the CPU by
    ``generate``, which also synchronises the device every step to check its stopping criteria, so the
    timestamps are accurate on CUDA too).
    """

    def __init__(self) -> None:
        self._prompt_seen = False
        self.tokens = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def put(self, value: Any) -> None:
        now = time.perf_counter_ns()
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self.first_ns is None:
            self.first_ns = now
        self.last_ns = now
        self.tokens += int(value.numel())

    def end(self) -> None:
        """Nothing to flush: counts and timestamps are final once generation stops."""


def measure_generation(pipe: Any, prompt: str, generate_kwargs: dict[str, Any]) -> GenerationStats:
    """Run ``pipe(prompt, streamer=..., **generate_kwargs)`` once and time its token stream.

    ``pipe`` is a text-generation pipeline (batch size 1: transformers' streamers do not support batches or
    beam search). Raises ``RuntimeError`` if no token was generated, since no time-to-first-token exists then.
    """
    if "streamer" in generate_kwargs:
        raise ValueError("measure_generation brings its own streamer; drop 'streamer' from generate_kwargs")
    streamer = _TimingStreamer()
    start_ns = time.perf_counter_ns()
    pipe(prompt, streamer=streamer, **generate_kwargs)
    if streamer.first_ns is None or streamer.last_ns is None:
        raise RuntimeError("the pipeline generated no token, so there is no time to first token")
    decode_ns = streamer.last_ns - streamer.first_ns
    decode_rate = (streamer.tokens - 1) / (decode_ns / 1e9) if streamer.tokens > 1 and decode_ns > 0 else None
    return GenerationStats(
        time_to_first_token_ms=(streamer.first_ns - start_ns) / 1e6,
        decode_tokens_per_s=decode_rate,
        tokens_generated=streamer.tokens,
    )
