"""Tests for the latency protocol in pipelab.bench.

No assertion here depends on the machine being fast: iteration counts are checked exactly, and timings only
against lower bounds that ``time.sleep`` guarantees.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import psutil
import pytest
import torch
from transformers import Pipeline, pipeline

from pipelab.bench import (
    BenchResult,
    BenchSettings,
    GenerationStats,
    LatencyStats,
    PeakRssSampler,
    measure,
    measure_generation,
    time_cold_start,
)
from pipelab.tiny import build_tiny_model

BUFFER_BYTES = 300 * 1024**2
PAGE_BYTES = 4096


def _allocate_and_touch(nbytes: int) -> np.ndarray:
    """A buffer with every page written, so it is resident (np.empty alone only reserves addresses)."""
    buffer = np.empty(nbytes, dtype=np.uint8)
    buffer[::PAGE_BYTES] = 1
    return buffer


class CallCounter:
    """Zero-argument callable that counts its calls and optionally sleeps."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.calls = 0
        self.sleep_s = sleep_s

    def __call__(self) -> None:
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)


# --- LatencyStats -------------------------------------------------------------------------------------------


def test_latency_stats_match_hand_computed_values_for_skewed_samples() -> None:
    stats = LatencyStats.from_samples([1, 2, 3, 4, 100])

    # mean = 110 / 5
    assert stats.mean == pytest.approx(22.0)
    # Linear percentiles: index (n - 1) * p / 100 over the sorted samples [1, 2, 3, 4, 100].
    assert stats.p50 == pytest.approx(3.0)  # index 2.0
    assert stats.p90 == pytest.approx(4 + 0.6 * 96)  # index 3.6 -> 61.6
    assert stats.p95 == pytest.approx(4 + 0.8 * 96)  # index 3.8 -> 80.8
    assert stats.p99 == pytest.approx(4 + 0.96 * 96)  # index 3.96 -> 96.16
    # Deviations -21, -20, -19, -18, 78: squares sum to 7610; sample variance 7610 / 4 = 1902.5.
    assert stats.std == pytest.approx(math.sqrt(1902.5))
    assert stats.cv_pct == pytest.approx(100 * math.sqrt(1902.5) / 22)
    assert (stats.min, stats.max, stats.n) == (1.0, 100.0, 5)


def test_latency_stats_of_one_sample_have_zero_spread() -> None:
    stats = LatencyStats.from_samples([7.5])
    assert (stats.mean, stats.p50, stats.p99, stats.std, stats.cv_pct) == (7.5, 7.5, 7.5, 0.0, 0.0)


def test_latency_stats_reject_no_samples() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        LatencyStats.from_samples([])


def test_latency_stats_flatten_to_prefixed_metric_names() -> None:
    metrics = LatencyStats.from_samples([1, 2, 3]).as_metrics()
    assert list(metrics) == [
        "latency_mean_ms",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "latency_std_ms",
        "latency_cv_pct",
    ]
    assert metrics["latency_mean_ms"] == pytest.approx(2.0)
    assert "decode_mean_ms" in LatencyStats.from_samples([1.0]).as_metrics(prefix="decode_")


# --- BenchSettings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup": -1},
        {"min_iterations": 0},
        {"min_duration_s": -0.1},
        {"min_iterations": 10, "max_iterations": 9},
        {"rss_interval_s": 0.0},
    ],
)
def test_bench_settings_reject_inconsistent_bounds(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BenchSettings(**kwargs)


# --- measure: iteration protocol ----------------------------------------------------------------------------


def test_measure_makes_first_call_then_warmup_then_exactly_min_iterations_without_min_duration() -> None:
    call = CallCounter()
    result = measure(call, BenchSettings(warmup=3, min_iterations=7, min_duration_s=0.0))

    assert result.iterations == 7
    assert len(result.samples_ms) == 7
    assert result.stats.n == 7
    assert result.warmup == 3
    assert call.calls == 1 + 3 + 7  # first call + warmup + timed


def test_measure_keeps_calling_until_min_duration_is_reached() -> None:
    sleep_s, min_duration_s = 0.005, 0.15
    call = CallCounter(sleep_s=sleep_s)
    result = measure(call, BenchSettings(warmup=1, min_iterations=2, min_duration_s=min_duration_s))

    assert result.duration_s >= min_duration_s
    # Every call sleeps at least 5 ms, so the duration bound is met after 30 calls at the latest: the loop
    # must stop as soon as both bounds hold rather than run on.
    assert 2 <= result.iterations <= round(min_duration_s / sleep_s)
    assert call.calls == 1 + 1 + result.iterations
    # Samples are per-call milliseconds: each one covers at least the sleep.
    assert min(result.samples_ms) >= sleep_s * 1000


def test_measure_stops_at_max_iterations_even_if_min_duration_is_not_reached() -> None:
    call = CallCounter()
    result = measure(call, BenchSettings(warmup=0, min_iterations=3, min_duration_s=3600.0, max_iterations=5))
    assert result.iterations == 5
    assert call.calls == 1 + 5


def test_measure_rejects_non_positive_items_per_call() -> None:
    with pytest.raises(ValueError, match="items_per_call"):
        measure(CallCounter(), BenchSettings(min_duration_s=0.0), items_per_call=0)


def test_bench_result_flattens_to_exactly_the_cpu_metric_keys() -> None:
    result = measure(
        CallCounter(sleep_s=0.001),
        BenchSettings(warmup=1, min_iterations=4, min_duration_s=0.0),
        items_per_call=8,
    )
    metrics = result.as_metrics()

    assert isinstance(result, BenchResult)
    assert result.cuda_max_allocated_mb is None
    assert set(metrics) == {
        "latency_mean_ms",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "latency_std_ms",
        "latency_cv_pct",
        "throughput_items_per_s",
        "first_call_ms",
        "peak_rss_mb",
        "bench_iterations",
    }
    assert all(isinstance(value, float) for value in metrics.values())
    assert metrics["bench_iterations"] == 4.0
    # Throughput is items per call over the mean latency in seconds.
    assert metrics["throughput_items_per_s"] == pytest.approx(8 / (result.stats.mean / 1000))
    assert metrics["first_call_ms"] >= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_measure_on_cuda_records_peak_allocated_device_memory() -> None:
    def call() -> torch.Tensor:
        # 64 MiB of float32 allocated inside each timed call.
        return torch.ones(16 * 1024**2, device="cuda").sum()

    result = measure(call, BenchSettings(warmup=1, min_iterations=3, min_duration_s=0.0), device="cuda")
    assert result.cuda_max_allocated_mb is not None
    assert result.cuda_max_allocated_mb >= 64
    assert result.as_metrics()["cuda_max_allocated_mb"] == result.cuda_max_allocated_mb


# --- peak RSS -----------------------------------------------------------------------------------------------


def test_peak_rss_sampler_sees_a_buffer_freed_before_the_block_ends() -> None:
    with PeakRssSampler(interval_s=0.005) as sampler:
        buffer = _allocate_and_touch(BUFFER_BYTES)
        time.sleep(0.05)  # several sampling periods with the buffer resident
        del buffer
    rss_after_mb = psutil.Process().memory_info().rss / 1024**2  # the buffer is gone by now

    # Only a sampler running during the block can have seen the buffer: it was freed before __exit__.
    assert sampler.peak_mb - rss_after_mb > 0.8 * BUFFER_BYTES / 1024**2


def test_measure_peak_rss_rises_when_calls_allocate_a_large_buffer() -> None:
    settings = BenchSettings(warmup=2, min_iterations=3, min_duration_s=0.0)

    def allocate_nothing() -> None:
        time.sleep(0.02)

    def allocate_buffer() -> None:
        buffer = _allocate_and_touch(BUFFER_BYTES)
        time.sleep(0.02)  # keep it resident for a few sampling periods, like a call's working memory
        del buffer

    quiet = measure(allocate_nothing, settings)
    hungry = measure(allocate_buffer, settings)

    assert quiet.peak_rss_mb > 0
    assert hungry.peak_rss_mb - quiet.peak_rss_mb > 0.8 * BUFFER_BYTES / 1024**2


def test_measure_samples_rss_during_first_and_warmup_calls_but_not_during_timed_calls() -> None:
    sampler_running: list[bool] = []

    def call() -> None:
        sampler_running.append(any(t.name == "pipelab-peak-rss" for t in threading.enumerate()))

    measure(call, BenchSettings(warmup=2, min_iterations=4, min_duration_s=0.0))
    # first call + 2 warmup calls see the sampler thread; the 4 timed calls run without its wake-ups.
    assert sampler_running == [True] * 3 + [False] * 4


# --- cold start ---------------------------------------------------------------------------------------------


def test_time_cold_start_returns_the_built_object_and_its_build_time() -> None:
    def build() -> dict[str, str]:
        time.sleep(0.02)
        return {"built": "yes"}

    built, ms = time_cold_start(build)
    assert built == {"built": "yes"}
    assert ms >= 20.0


# --- generation ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gpt2_pipe(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """A text-generation pipeline on the project's tiny random GPT-2 (real GPT-2 tokenizer class, trained BPE)."""
    model_dir = build_tiny_model("gpt2-causal-lm", tmp_path_factory.mktemp("tiny") / "gpt2")
    return pipeline("text-generation", model=str(model_dir), device="cpu")


def test_measure_generation_counts_exactly_max_new_tokens_when_eos_is_suppressed(tiny_gpt2_pipe: Pipeline) -> None:
    max_new_tokens = 12
    stats = measure_generation(
        tiny_gpt2_pipe,
        "The cat sat on",
        # min_new_tokens masks EOS until the limit, so generation cannot stop early on a random model.
        {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens, "do_sample": False},
    )

    assert isinstance(stats, GenerationStats)
    assert stats.tokens_generated == max_new_tokens
    assert stats.time_to_first_token_ms > 0
    assert stats.decode_tokens_per_s is not None and stats.decode_tokens_per_s > 0
    assert stats.as_metrics() == {
        "time_to_first_token_ms": stats.time_to_first_token_ms,
        "tokens_generated": float(max_new_tokens),
        "decode_tokens_per_s": stats.decode_tokens_per_s,
    }


def test_measure_generation_reports_no_decode_rate_for_a_single_token(tiny_gpt2_pipe: Pipeline) -> None:
    stats = measure_generation(tiny_gpt2_pipe, "Hi", {"max_new_tokens": 1, "min_new_tokens": 1, "do_sample": False})
    assert stats.tokens_generated == 1
    assert stats.decode_tokens_per_s is None
    assert "decode_tokens_per_s" not in stats.as_metrics()


def test_measure_generation_refuses_a_caller_streamer(tiny_gpt2_pipe: Pipeline) -> None:
    with pytest.raises(ValueError, match="streamer"):
        measure_generation(tiny_gpt2_pipe, "Hi", {"streamer": object()})
