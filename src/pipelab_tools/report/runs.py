"""The records as the reports see them: one Run per record, the ablation groups, and the names of points and metrics.

Reads results/runs/<task>/*.json through ``pipelab.records`` only; runs come ordered by task (course order), then
by start time (the order of their sweep), so the same records always give the same reports.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelab.bench import BenchResult, GenerationStats, LatencyStats
from pipelab.records import iter_records
from pipelab.stage_timing import STAGE_METRICS
from pipelab.tasks import TASK_NAMES

# The metric names pipelab.bench flattens its results to, read off stand-in results (every optional field set,
# CUDA's peak memory included) instead of listed again here: a statistic added there reaches the reports as is.
_STATS = LatencyStats.from_samples([1.0])
# latency_mean_ms ... latency_cv_pct, in bench's order (the order of their columns in benchmarks.csv)
LATENCY_METRICS: tuple[str, ...] = tuple(_STATS.as_metrics())
_BENCH_METRICS = BenchResult(
    samples_ms=[1.0],
    stats=_STATS,
    first_call_ms=1.0,
    warmup=0,
    iterations=1,
    duration_s=0.001,
    items_per_call=1,
    throughput_items_per_s=1000.0,
    peak_rss_mb=1.0,
    cuda_max_allocated_mb=1.0,
).as_metrics()
_GENERATION_METRICS = GenerationStats(
    time_to_first_token_ms=1.0, decode_tokens_per_s=1.0, tokens_generated=2
).as_metrics()

# Metrics every run has: validity and bookkeeping (pipelab.runner) and the benchmark result. Anything else a
# record holds is the task's own (pipelab.tasks.*.summarize, generation timing) and goes into its ablation tables.
COMMON_METRICS = frozenset(
    {
        "cases_total",
        "cases_failed",
        "cases_invalid",
        "schema_valid_rate",
        "cold_start_ms",
        "pipeline_cache_hit",
        "pipeline_loads_in_process",
        "weights_resolve_ms",
        "cases_ms",
        "bench_ms",
        "logging_ms",
        "bench_batch_size",
        "course_checks_passed",
        "course_checks_total",
        *_BENCH_METRICS,
        *STAGE_METRICS,
    }
)
# Bookkeeping counts that describe a run's size, not its quality: kept out of the ablation tables.
_NOT_FINDINGS = frozenset({"tokens_generated", "references"})
# Latency-like generation timings (time to first token, decode rate): benchmarks.csv has a column each; the
# ablation curves plot latency p50 instead, the tables keep them.
GENERATION_TIMINGS: tuple[str, ...] = tuple(m for m in _GENERATION_METRICS if m not in _NOT_FINDINGS)
# Spread statistics of a task metric (QA's score_min/max/std/n): its mean carries the finding; the record
# keeps the rest.
_SPREAD_SUFFIXES = ("_n", "_min", "_max", "_std")
# The stages of one bench call (pipelab.stage_timing), in the order a call runs them: the stacked bar's segments.
STAGE_TIMES: tuple[str, ...] = tuple(m for m in STAGE_METRICS if m.endswith("_ms"))
_LABELS = {
    "preprocess_ms": "preprocess (ms)",
    "forward_ms": "forward (ms)",
    "postprocess_ms": "postprocess (ms)",
    "other_ms": "other (ms)",
    "latency_p50_ms": "latency p50 (ms)",
    "latency_p50_ratio_to_reference": "p50 / reference p50",
    "weight_mb": "weights in memory (MB)",
    "throughput_items_per_s": "throughput (items/s)",
    "schema_valid_rate": "schema-valid rate",
    "latency_mean_ms": "latency per call, mean (ms)",
}
TINY_NOTE = "tiny weights: not checked"


def metric_label(metric: str) -> str:
    """A metric's name in table headers, findings and plot titles (its key where it has no label of its own)."""
    return _LABELS.get(metric, metric)


def task_metric_names(runs: Iterable[Run]) -> list[str]:
    """The task's own metrics found in finished runs (what pipelab.tasks.*.summarize adds), sorted."""
    names = {k for r in runs if r.finished for k in r.metrics} - COMMON_METRICS - _NOT_FINDINGS
    return sorted(k for k in names if not k.endswith(_SPREAD_SUFFIXES))


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): what the reports compute with, format and plot."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Run:
    """One record, and the names the reports use for it."""

    path: str  # relative to the results folder, e.g. "runs/ner/bert-large-conll03__0123456789ab.json"
    record: dict[str, Any]

    @property
    def task(self) -> str:
        return self.record["task"]

    @property
    def model(self) -> str:
        return self.record["model"]["name"]

    @property
    def status(self) -> str:
        return self.record.get("status", "UNKNOWN")

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    @property
    def unsupported(self) -> bool:
        """A point that cannot run here (bitsandbytes on a CPU, ONNX Runtime for generation): data, not a failure."""
        return self.status == "UNSUPPORTED"

    @property
    def failed(self) -> bool:
        """Neither finished nor a recorded 'not supported here'."""
        return not self.finished and not self.unsupported

    @property
    def ablation(self) -> str:
        return self.record.get("ablation", {}).get("name", "none")

    @property
    def point(self) -> dict[str, Any]:
        return self.record.get("ablation", {}).get("point", {}) or {}

    @property
    def metrics(self) -> dict[str, float]:
        return self.record.get("metrics", {}) or {}

    @property
    def verdict(self) -> str:
        if self.record.get("course_verdict"):
            return self.record["course_verdict"]
        if not self.finished:
            return "not checked: the run failed"
        return TINY_NOTE if self.record["model"].get("weights") == "tiny-random" else "not checked"


def load_runs(results_dir: Path) -> list[Run]:
    """Every record under results_dir/runs, by task (course order), then in the order the runs started."""
    runs = [Run(path.relative_to(results_dir).as_posix(), record) for path, record in iter_records(results_dir)]
    order = {task: i for i, task in enumerate(TASK_NAMES)}
    return sorted(runs, key=lambda r: (order.get(r.task, len(order)), r.task, r.record.get("started_at", ""), r.path))


def tasks_in(runs: Iterable[Run]) -> list[str]:
    """The tasks of these runs, in run order: the order of every per-task table, section and plot."""
    return list(dict.fromkeys(r.task for r in runs))


# --------------------------------------------------------------------------------------------------------
# Names of ablation points
# --------------------------------------------------------------------------------------------------------


def _short_axis(axis: str) -> str:
    return "model" if axis == "model.name" else axis.rsplit(".", 1)[-1]


def point_label(point: dict[str, Any]) -> str:
    """`T=0.7`-style label of an ablation point; axes at null (not set at that point) are left out."""
    if len(point) == 1:
        return str(next(iter(point.values())))
    return " ".join(f"{_short_axis(axis)}={value}" for axis, value in point.items() if value is not None) or "-"


def point_string(point: dict[str, Any]) -> str:
    """The exact ablation point for the CSV: `axis=value;axis=value` with full config keys."""
    return ";".join(
        f"{axis}={json.dumps(value) if not isinstance(value, str) else value}" for axis, value in point.items()
    )


def slug(text: str) -> str:
    """`text` as a file name or Markdown anchor: runs of anything but letters, digits and `._-` become `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


# --------------------------------------------------------------------------------------------------------
# Groups the reports are made of
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ablation:
    """The runs of one ablation sweep of one task, in sweep order."""

    task: str
    name: str
    description: str
    runs: tuple[Run, ...]

    @property
    def numeric(self) -> bool:
        """One axis with a number at every point: plotted as a curve; anything else as bars."""
        values = [r.point.get(axis) for r in self.runs for axis in r.point]
        return bool(values) and all(len(r.point) == 1 for r in self.runs) and all(is_number(v) for v in values)

    @property
    def axis(self) -> str:
        axes = [axis for r in self.runs for axis in r.point]
        return _short_axis(axes[0]) if len(set(axes)) == 1 else "point"

    def metric_names(self) -> list[str]:
        """The table's columns: latency, throughput and validity, then the task's own metrics."""
        return ["latency_p50_ms", "throughput_items_per_s", "schema_valid_rate", *task_metric_names(self.runs)]

    def plot_metrics(self) -> list[str]:
        """The curves worth a plot: throughput for batch size, else latency p50 and the task's own metrics.

        Left out: the validity rate (1.0 on every healthy point), generation timings (latency p50 shows the
        same), and a metric that only repeats the axis (label_count over the label-count ablation).
        """
        if self.axis == "batch_size":
            return ["throughput_items_per_s", "latency_p50_ms"]
        own = [m for m in task_metric_names(self.runs) if m not in GENERATION_TIMINGS and m != self.axis]
        return ["latency_p50_ms", *own]


def ablations(runs: list[Run]) -> list[Ablation]:
    """Ablation groups (not the course sweeps), by task, in the order their first run started."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if run.ablation != "none":
            groups.setdefault((run.task, run.ablation), []).append(run)
    result = []
    for (task, name), members in groups.items():
        description = members[0].record.get("config", {}).get("ablation", {}).get("description", "")
        result.append(Ablation(task, name, description, tuple(members)))
    return result


def course_run(runs: list[Run], task: str) -> Run | None:
    """The task's course run (ablation none, course default model).

    If the folder holds several (runs by hand next to the DAG's), the latest finished one, else the latest.
    """
    candidates = [r for r in runs if r.task == task and r.ablation == "none"]
    default = [r for r in candidates if r.model == r.record.get("config", {}).get("task", {}).get("default_model")]
    chosen = default or candidates
    finished = [r for r in chosen if r.finished]
    return (finished or chosen or [None])[-1]


def finished_course_runs(runs: list[Run]) -> list[Run]:
    """Each task's course run where it finished, in task order: the latency plot and its DVC curve."""
    return [c for task in tasks_in(runs) if (c := course_run(runs, task)) and c.finished]


def model_runs(runs: list[Run], task: str) -> list[Run]:
    """One run per model of a task: the course run for the default model, a model-ablation run for others."""
    course = course_run(runs, task)
    by_model: dict[str, Run] = {course.model: course} if course else {}
    for run in runs:
        if run.task == task and run.model not in by_model and set(run.point) <= {"model.name"}:
            by_model[run.model] = run
    return list(by_model.values())
