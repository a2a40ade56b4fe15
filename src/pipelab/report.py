"""Reports from run records: outputs.json, benchmarks.csv, comparison.md, metrics.json and plots.

Reads results/runs/<task>/*.json through ``pipelab.records`` and nothing else (never MLflow), so the same
records always give the same reports: runs are ordered by task, then by start time (the order of their sweep),
and no file carries a timestamp of its own.

    results/outputs.json         every run's inputs, outputs, validity and course checks, by task
    results/benchmarks.csv       one row per run: where it ran, its ablation point, latency, throughput, status
    results/comparison.md        per task: the course example, the verdict, latency, models, ablations in numbers
    results/metrics.json         headline numbers for `dvc metrics` / `dvc exp show`
    results/plots/*.png          latency per task, one figure per ablation, batch scaling
    results/plots/dvc/           the same curves as CSV for `dvc plots show` (numeric/ lines, categorical/ bars)
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelab.records import iter_records
from pipelab.tasks import TASK_NAMES

# Metrics every run has (validity, latency protocol, bookkeeping); anything else a record holds is the
# task's own (pipelab.tasks.*.summarize, generation timing) and goes into its ablation tables.
COMMON_METRICS = frozenset(
    {
        "cases_total",
        "cases_failed",
        "cases_invalid",
        "schema_valid_rate",
        "cold_start_ms",
        "first_call_ms",
        "pipeline_cache_hit",
        "pipeline_loads_in_process",
        "weights_resolve_ms",
        "bench_batch_size",
        "bench_iterations",
        "latency_mean_ms",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "latency_std_ms",
        "latency_cv_pct",
        "throughput_items_per_s",
        "peak_rss_mb",
        "course_checks_passed",
        "course_checks_total",
    }
)
# Bookkeeping counts that describe a run's size, not its quality: kept out of the ablation tables.
_NOT_FINDINGS = frozenset({"tokens_generated", "references"})
# Spread statistics of a task metric (QA's score_min/max/std/n): its mean carries the finding; the record
# keeps the rest.
_SPREAD_SUFFIXES = ("_n", "_min", "_max", "_std")
# Latency-like generation timings: the ablation curves plot latency p50 instead; the tables keep them.
_TIMING_METRICS = frozenset({"time_to_first_token_ms", "decode_tokens_per_s"})


def task_metric_names(runs: Iterable[Run]) -> list[str]:
    """The task's own metrics found in finished runs (what pipelab.tasks.*.summarize adds), sorted."""
    names = {k for r in runs if r.finished for k in r.metrics} - COMMON_METRICS - _NOT_FINDINGS
    return sorted(k for k in names if not k.endswith(_SPREAD_SUFFIXES))


BENCHMARK_COLUMNS = (
    "record",
    "name",
    "task",
    "model",
    "model_id",
    "revision",
    "weights",
    "device",
    "dtype",
    "profile",
    "ablation",
    "ablation_point",
    "status",
    "cases_total",
    "cases_failed",
    "cases_invalid",
    "schema_valid_rate",
    "cold_start_ms",
    "first_call_ms",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_std_ms",
    "latency_cv_pct",
    "throughput_items_per_s",
    "bench_batch_size",
    "bench_iterations",
    "peak_rss_mb",
    "time_to_first_token_ms",
    "decode_tokens_per_s",
    "course_verdict",
    "config_hash",
)
_LABELS = {
    "latency_p50_ms": "latency p50 (ms)",
    "throughput_items_per_s": "throughput (items/s)",
    "schema_valid_rate": "schema-valid rate",
    "latency_mean_ms": "latency per call, mean (ms)",
}
TINY_NOTE = "tiny weights: not checked"


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


# --------------------------------------------------------------------------------------------------------
# Small formatting helpers
# --------------------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for people: 3 significant digits below 100, no decimals above; '-' for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not _is_number(value):
        return str(value)
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _cell(text: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _trim(value: Any, limit: int = 700) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        return bool(values) and all(len(r.point) == 1 for r in self.runs) and all(_is_number(v) for v in values)

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
        own = [m for m in task_metric_names(self.runs) if m not in _TIMING_METRICS and m != self.axis]
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


def model_runs(runs: list[Run], task: str) -> list[Run]:
    """One run per model of a task: the course run for the default model, a model-ablation run for others."""
    course = course_run(runs, task)
    by_model: dict[str, Run] = {course.model: course} if course else {}
    for run in runs:
        if run.task == task and run.model not in by_model and set(run.point) <= {"model.name"}:
            by_model[run.model] = run
    return list(by_model.values())


# --------------------------------------------------------------------------------------------------------
# outputs.json, benchmarks.csv, metrics.json
# --------------------------------------------------------------------------------------------------------


def outputs_document(runs: list[Run]) -> dict[str, Any]:
    """Every run's inputs and outputs, grouped by task (latencies live in benchmarks.csv)."""
    tasks: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        rec = run.record
        entry = {
            "record": run.path,
            "name": rec.get("name"),
            "status": run.status,
            "model": rec["model"],
            "device": rec.get("device"),
            "dtype": rec.get("dtype"),
            "profile": rec.get("profile"),
            "ablation": rec.get("ablation"),
            "config_hash": rec.get("config_hash"),
            "course_verdict": run.verdict,
            "expectations": rec.get("expectations", []),
            "cases": [
                {
                    k: case.get(k)
                    for k in ("id", "kind", "input", "kwargs", "output", "valid", "problems", "error", "notes")
                }
                for case in rec.get("cases", [])
            ],
        }
        if not run.finished:
            entry["error"] = rec.get("error")
        tasks.setdefault(run.task, []).append(entry)
    return {"records": len(runs), "tasks": tasks}


def benchmark_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per run with the columns of BENCHMARK_COLUMNS (numbers rounded to 4 decimals)."""
    rows = []
    for run in runs:
        rec, m = run.record, run.metrics
        row: dict[str, Any] = {
            "record": run.path,
            "name": rec.get("name"),
            "task": run.task,
            "model": run.model,
            "model_id": rec["model"].get("id"),
            "revision": rec["model"].get("revision"),
            "weights": rec["model"].get("weights"),
            "device": rec.get("device"),
            "dtype": rec.get("dtype"),
            "profile": rec.get("profile"),
            "ablation": run.ablation,
            "ablation_point": point_string(run.point),
            "status": run.status,
            "course_verdict": run.verdict,
            "config_hash": rec.get("config_hash"),
        }
        for column in BENCHMARK_COLUMNS:
            if column not in row:
                row[column] = _csv_number(m.get(column))
        rows.append(row)
    return rows


def _csv_number(value: Any) -> int | float | str:
    """Counts as integers, measurements to 4 decimals, missing as an empty cell."""
    if not _is_number(value):
        return ""
    return int(value) if float(value).is_integer() else round(value, 4)


def metrics_document(runs: list[Run]) -> dict[str, Any]:
    """Headline numbers for DVC: counts over all runs, and each task's course run."""
    finished = [r for r in runs if r.finished]
    cases_total = sum(r.metrics.get("cases_total", 0) for r in finished)
    valid = sum(r.metrics.get("schema_valid_rate", 0) * r.metrics.get("cases_total", 0) for r in finished)
    per_task = {}
    for task in dict.fromkeys(r.task for r in runs):
        course = course_run(runs, task)
        if course is None or not course.finished:
            per_task[task] = {"finished": 0}
            continue
        m = course.metrics
        per_task[task] = {"finished": 1} | {
            key: round(m[key], digits)
            for key, digits in (("latency_p50_ms", 3), ("throughput_items_per_s", 3), ("schema_valid_rate", 4))
            if _is_number(m.get(key))  # JSON has no NaN: a missing number is left out
        }
    return {
        "runs": {"total": len(runs), "finished": len(finished), "failed": sum(r.status == "FAILED" for r in runs)},
        "cases": {
            "total": int(cases_total),
            "raised": int(sum(r.metrics.get("cases_failed", 0) for r in finished)),
            "invalid": int(sum(r.metrics.get("cases_invalid", 0) for r in finished)),
            "schema_valid_rate": round(valid / cases_total, 4) if cases_total else 0.0,
        },
        "course_checks": {
            "passed": int(sum(r.metrics.get("course_checks_passed", 0) for r in finished)),
            "total": int(sum(r.metrics.get("course_checks_total", 0) for r in finished)),
        },
        "tasks": per_task,
    }


# --------------------------------------------------------------------------------------------------------
# Plots: PNG for people, CSV for `dvc plots`
# --------------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or over ssh
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    # No "Software"/date metadata: the same records give byte-identical PNGs.
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)


def plot_latency_by_task(runs: list[Run], path: Path) -> bool:
    """Box plot of the raw warm-latency samples of each task's course run (log scale: tasks differ 100x)."""
    courses = [c for task in dict.fromkeys(r.task for r in runs) if (c := course_run(runs, task)) and c.finished]
    samples = [(c, c.record.get("benchmark", {}).get("samples_ms") or []) for c in courses]
    samples = [(c, s) for c, s in samples if s]
    if not samples:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(samples) + 1.4))
    ax.boxplot([s for _, s in samples], orientation="horizontal", showmeans=True)
    ax.set_yticks(range(1, len(samples) + 1), [f"{c.task}\n{c.model}" for c, _ in samples], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("warm latency per call (ms, log scale)")
    first = samples[0][0].record
    ax.set_title(f"Latency per task, course runs ({first.get('profile')} profile, {first.get('device')})")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return True


def plot_ablation(ablation: Ablation, path: Path) -> bool:
    """One panel per metric: a line over a numeric axis, bars over categories (models, strategies)."""
    runs = [r for r in ablation.runs if r.finished]
    metrics = [m for m in ablation.plot_metrics() if any(_is_number(r.metrics.get(m)) for r in runs)]
    if not runs or not metrics:
        return False
    plt = _pyplot()
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    labels = [point_label(r.point) for r in runs]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        values = [r.metrics.get(metric, float("nan")) for r in runs]
        if ablation.numeric:
            xs = [float(next(iter(r.point.values()))) for r in runs]
            order = sorted(range(len(xs)), key=xs.__getitem__)
            ax.plot([xs[i] for i in order], [values[i] for i in order], marker="o")
            ax.set_xlabel(ablation.axis)
            if ablation.axis == "batch_size":
                ax.set_xscale("log", base=2)
        else:
            ax.bar(range(len(values)), values, color="#4c72b0")
            ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(_LABELS.get(metric, metric), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(f"{ablation.task}: ablation {ablation.name}", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_batch_scaling(ablation: Ablation, path: Path) -> bool:
    """Items/s and time per call against batch size, on log-2 axes."""
    runs = sorted(
        (r for r in ablation.runs if r.finished and _is_number(r.metrics.get("throughput_items_per_s"))),
        key=lambda r: r.metrics.get("bench_batch_size", 0),
    )
    if not runs:
        return False
    plt = _pyplot()
    sizes = [r.metrics["bench_batch_size"] for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(sizes, [r.metrics["throughput_items_per_s"] for r in runs], marker="o")
    left.set_ylabel("throughput (items/s)")
    right.plot(sizes, [r.metrics.get("latency_mean_ms", float("nan")) for r in runs], marker="o", color="#dd8452")
    right.set_ylabel("time per batched call, mean (ms)")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(int(s)) for s in sizes])
        ax.set_xlabel("batch size (items per call)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{ablation.task}: batch scaling ({runs[0].model})", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    return True


def write_dvc_plot_data(runs: list[Run], groups: list[Ablation], out_dir: Path) -> list[Path]:
    """Two-column CSVs for `dvc plots`: numeric/ (a line over a numeric axis), categorical/ (bars).

    dvc.yaml gives each folder one definition (x: point, y: value), so any ablation added to params.yaml gets
    its plots without an edit there; the file name says task, ablation and metric.
    """
    written = []

    def write(kind: str, name: str, points: list[tuple[Any, float]]) -> None:
        path = out_dir / kind / f"{_slug(name)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["point", "value"])
            writer.writerows((p, round(v, 6)) for p, v in points)
        written.append(path)

    courses = [c for task in dict.fromkeys(r.task for r in runs) if (c := course_run(runs, task)) and c.finished]
    if courses:
        write("categorical", "course--latency_p50_ms", [(c.task, c.metrics["latency_p50_ms"]) for c in courses])
    for group in groups:
        finished = [r for r in group.runs if r.finished]
        for metric in group.plot_metrics():
            points = [(r, r.metrics.get(metric)) for r in finished]
            points = [(r, v) for r, v in points if _is_number(v)]
            if not points:
                continue
            if group.numeric:
                data = sorted((float(next(iter(r.point.values()))), v) for r, v in points)
                write("numeric", f"{group.task}--{group.name}--{metric}", data)
            else:
                write(
                    "categorical",
                    f"{group.task}--{group.name}--{metric}",
                    [(point_label(r.point), v) for r, v in points],
                )
    return written


# --------------------------------------------------------------------------------------------------------
# comparison.md
# --------------------------------------------------------------------------------------------------------


def _findings(group: Ablation) -> list[str]:
    """One line per metric: its lowest and highest value and where, in numbers."""
    runs = [r for r in group.runs if r.finished]

    def where(run: Run) -> str:
        label = point_label(run.point)
        return f"{group.axis}={label}" if group.axis != "point" else label

    lines = []
    for metric in group.metric_names():
        values = [(r.metrics[metric], where(r)) for r in runs if _is_number(r.metrics.get(metric))]
        if len(values) < 2:
            continue
        name = _LABELS.get(metric, metric)
        low, high = min(values), max(values)
        if low[0] == high[0]:
            lines.append(f"- {name}: {fmt(low[0])} at every point")
            continue
        ratio = f" (x{high[0] / low[0]:.2f})" if low[0] > 0 and metric.endswith(("_ms", "_per_s")) else ""
        lines.append(f"- {name}: {fmt(low[0])} at {low[1]} to {fmt(high[0])} at {high[1]}{ratio}")
    failed = [r for r in group.runs if not r.finished]
    if failed:
        lines.append(
            f"- {len(failed)} point(s) FAILED: "
            + "; ".join(f"{where(r)}: {_trim(r.record.get('error', ''), 200)}" for r in failed)
        )
    return lines


def _latency_table(run: Run) -> list[str]:
    m = run.metrics
    bench = run.record.get("benchmark", {})
    settings = bench.get("settings", {})
    intro = (
        f"Bench case `{bench.get('bench_case')}`: {fmt(m.get('bench_iterations'))} timed calls after the first "
        f"call and {settings.get('warmup', '?')} warm-up call(s), batch size {fmt(m.get('bench_batch_size'))}, "
        f"on {run.record.get('device')}/{run.record.get('dtype')}."
    )
    header = ["cold start", "first call", "mean", "p50", "p90", "p95", "p99", "std", "CV", "items/s", "peak RSS"]
    row = [
        f"{fmt(m.get('cold_start_ms'))} ms",
        f"{fmt(m.get('first_call_ms'))} ms",
        f"{fmt(m.get('latency_mean_ms'))} ms",
        f"{fmt(m.get('latency_p50_ms'))} ms",
        f"{fmt(m.get('latency_p90_ms'))} ms",
        f"{fmt(m.get('latency_p95_ms'))} ms",
        f"{fmt(m.get('latency_p99_ms'))} ms",
        f"{fmt(m.get('latency_std_ms'))} ms",
        f"{fmt(m.get('latency_cv_pct'))} %",
        fmt(m.get("throughput_items_per_s")),
        f"{fmt(m.get('peak_rss_mb'))} MB",
    ]
    return [intro, "", *_table(header, [row])]


def _course_example(run: Run) -> list[str]:
    cases = run.record.get("cases", [])
    course_cases = [c for c in cases if c.get("kind") == "course"] or cases[:1]
    lines = []
    for case in course_cases:
        lines.append(f"**Course example `{case['id']}`**")
        lines += ["", "Input:", "", "```text", _trim(case.get("input")), "```", ""]
        if case.get("error"):
            lines += ["Raised:", "", "```text", _trim(case["error"]), "```", ""]
        else:
            status = "valid" if case.get("valid") else "INVALID: " + "; ".join(case.get("problems") or [])
            lines += [f"Output ({status}):", "", "```json", _trim(case.get("output")), "```", ""]
    return lines


def _models_table(runs: list[Run], task: str) -> list[str]:
    members = model_runs(runs, task)
    if not members:
        return []
    default = course_run(runs, task)
    own = task_metric_names(members)
    header = ["model", "role", "hub id", "architecture", "status", "verdict", "valid", "p50 ms", "items/s", *own]
    rows = []
    for r in members:
        m = r.metrics
        role = "course default" if default is not None and r is default else "custom"
        valid = f"{fmt(m.get('schema_valid_rate', 0) * 100)} %" if r.finished else "-"
        rows.append(
            [
                f"`{r.model}`",
                role,
                r.record["model"].get("hub_id") or "-",
                r.record["model"].get("architecture") or "-",
                r.status,
                r.verdict,
                valid,
                fmt(m.get("latency_p50_ms")),
                fmt(m.get("throughput_items_per_s")),
                *(fmt(m.get(k)) for k in own),
            ]
        )
    lines = ["### Default vs custom model", ""]
    if len(members) == 1:
        lines += ["Only the course default model ran for this task (add a `model=` ablation to compare).", ""]
    return lines + _table(header, rows) + [""]


def _ablation_section(group: Ablation, plot: str | None) -> list[str]:
    metrics = group.metric_names()
    by_model = group.axis == "model"  # the point is the model: no separate model column
    header = [group.axis, *([] if by_model else ["model"]), "status", *(_LABELS.get(m, m) for m in metrics)]
    rows = [
        [
            point_label(r.point),
            *([] if by_model else [r.model]),
            r.status,
            *(fmt(r.metrics.get(m)) if r.finished else "-" for m in metrics),
        ]
        for r in group.runs
    ]
    lines = [f"### Ablation `{group.name}`", ""]
    if group.description:
        lines += [group.description[:1].upper() + group.description[1:] + ".", ""]
    lines += _table(header, rows) + [""]
    findings = _findings(group)
    if findings:
        lines += ["Findings:", "", *findings, ""]
    if plot:
        lines += [f"![{group.task} {group.name}]({plot})", ""]
    return lines


def comparison_markdown(runs: list[Run], groups: list[Ablation], plots: dict[str, str]) -> str:
    """The human report. `plots` maps "latency" and "<task>/<ablation>" to paths relative to results/."""
    profiles = sorted({str(r.record.get("profile")) for r in runs})
    devices = sorted({str(r.record.get("device")) for r in runs})
    weights = sorted({str(r.record["model"].get("weights")) for r in runs})
    failed = [r for r in runs if not r.finished]
    lines = [
        "# pipelab: the course's pipeline() tasks, run, checked and timed",
        "",
        f"Built from {len(runs)} run records in `results/runs/` (profile {', '.join(profiles)}; weights "
        f"{', '.join(weights)}; device {', '.join(devices)}); {len(runs) - len(failed)} finished, "
        f"{len(failed)} failed. Every number below is read from those records; `results/benchmarks.csv` has one "
        "row per run and `results/outputs.json` every output.",
        "",
    ]
    if "tiny-random" in weights:
        lines += [
            "> Tiny profile: models with random weights stand in for the course checkpoints. Their outputs are "
            "junk by construction; what these runs check is that every task runs end to end and returns the "
            "course's output schema. Course expectations are checked on `profile=hub` only.",
            "",
        ]
    summary = []
    for task in dict.fromkeys(r.task for r in runs):
        course = course_run(runs, task)
        if course is None:
            continue
        m = course.metrics
        summary.append(
            [
                f"[{task}](#{_slug(task).lower()})",
                f"`{course.model}`",
                course.status,
                course.verdict,
                f"{fmt(m.get('schema_valid_rate', 0) * m.get('cases_total', 0))}/{fmt(m.get('cases_total'))}"
                if course.finished
                else "-",
                fmt(m.get("latency_p50_ms")),
                fmt(m.get("throughput_items_per_s")),
                sum(1 for r in runs if r.task == task),
            ]
        )
    lines += ["## Summary", ""]
    lines += _table(
        ["task", "default model", "status", "course verdict", "valid cases", "p50 ms", "items/s", "runs"], summary
    )
    lines.append("")
    if "latency" in plots:
        lines += [f"![latency per task]({plots['latency']})", ""]
    if failed:
        lines += ["## Failed runs", ""]
        lines += _table(
            ["run", "record", "error"],
            [[r.record.get("name"), f"`{r.path}`", _trim(r.record.get("error", ""), 300)] for r in failed],
        )
        lines.append("")
    for task in dict.fromkeys(r.task for r in runs):
        lines += [f"## {task}", ""]
        course = course_run(runs, task)
        if course is None:
            lines += ["No course run of this task (only ablation runs).", ""]
        elif not course.finished:
            lines += [
                f"The course run `{course.record.get('name')}` FAILED:",
                "",
                "```text",
                _trim(course.record.get("error", "")),
                "```",
                "",
            ]
        else:
            model = course.record["model"]
            lines += [
                f"Course default model `{course.model}` ({model.get('id')} @ `{str(model.get('revision'))[:12]}`, "
                f"{model.get('weights')}); {fmt(course.metrics.get('cases_total'))} cases, "
                f"{fmt(course.metrics.get('cases_failed'))} raised, {fmt(course.metrics.get('cases_invalid'))} "
                "with an invalid schema.",
                "",
            ]
            lines += _course_example(course)
            lines += [f"**Verdict:** {course.verdict}", ""]
            for item in course.record.get("expectations", []):
                lines.append(f"- {'pass' if item['passed'] else 'FAIL'} `{item['case']}`: {item['detail']}")
            if course.record.get("expectations"):
                lines.append("")
            lines += ["### Latency", "", *_latency_table(course), ""]
        lines += _models_table(runs, task)
        for group in groups:
            if group.task == task:
                lines += _ablation_section(group, plots.get(f"{task}/{group.name}"))
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------------------
# `dvc plots show`, offline
# --------------------------------------------------------------------------------------------------------

# DVC fills {plot_divs} (and {refresh_tag}); without a {scripts} placeholder it adds none of its <script> tags,
# which load vega from a CDN and leave the page blank offline.
_OFFLINE_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>pipelab: DVC plots</title>
    <script type="text/javascript">
BUNDLE
    </script>
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_plots_template(bundle: str) -> str:
    """An HTML template for `dvc plots show` with the vega, vega-lite and vega-embed code inline.

    `bundle` is ``vl_convert.javascript_bundle()``: one classic script that defines ``window.vegaEmbed``,
    which DVC's plot divs call.
    """
    for marker in ("</script", "{plot_divs}", "{refresh_tag}", "{scripts}"):
        if marker in bundle:
            raise ValueError(f"the vega bundle contains {marker!r}: it cannot be inlined in DVC's template")
    return _OFFLINE_PAGE.replace("BUNDLE", bundle)


# --------------------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    outputs: Path
    benchmarks: Path
    comparison: Path
    metrics: Path
    plots: tuple[Path, ...]
    dvc_plot_data: tuple[Path, ...]


def write_reports(results_dir: Path) -> ReportFiles:
    """Read every record under results_dir/runs and write all report files next to them."""
    runs = load_runs(results_dir)
    if not runs:
        raise FileNotFoundError(f"no run records under {results_dir / 'runs'}: run the sweeps first")
    groups = ablations(runs)
    plot_dir = results_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)

    pngs: list[Path] = []
    links: dict[str, str] = {}
    if plot_latency_by_task(runs, plot_dir / "latency_by_task.png"):
        pngs.append(plot_dir / "latency_by_task.png")
        links["latency"] = "plots/latency_by_task.png"
    for group in groups:
        is_batch = group.axis == "batch_size"
        name = f"{'batch_scaling' if is_batch else 'ablation'}_{_slug(group.task)}_{_slug(group.name)}.png"
        drawn = plot_batch_scaling(group, plot_dir / name) if is_batch else plot_ablation(group, plot_dir / name)
        if drawn:
            pngs.append(plot_dir / name)
            links[f"{group.task}/{group.name}"] = f"plots/{name}"
    csvs = write_dvc_plot_data(runs, groups, plot_dir / "dvc")

    outputs = results_dir / "outputs.json"
    outputs.write_text(json.dumps(outputs_document(runs), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    benchmarks = results_dir / "benchmarks.csv"
    with benchmarks.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=BENCHMARK_COLUMNS)
        writer.writeheader()
        writer.writerows(benchmark_rows(runs))
    metrics = results_dir / "metrics.json"
    metrics.write_text(json.dumps(metrics_document(runs), indent=2) + "\n", encoding="utf-8")
    comparison = results_dir / "comparison.md"
    comparison.write_text(comparison_markdown(runs, groups, links), encoding="utf-8")
    return ReportFiles(outputs, benchmarks, comparison, metrics, tuple(pngs), tuple(csvs))
