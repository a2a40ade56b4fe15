"""The reports' tables: outputs.json, benchmarks.csv, metrics.json, and the Markdown tables of comparison.md.

benchmarks.csv and metrics.json are computed from the records flattened by ``pd.json_normalize`` (one column per
record field and metric); the Markdown tables are DataFrames written by ``DataFrame.to_markdown``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelab_tools.report.runs import (
    GENERATION_TIMINGS,
    LATENCY_METRICS,
    STAGE_TIMES,
    Ablation,
    Run,
    course_run,
    finished_course_runs,
    is_number,
    metric_label,
    point_label,
    point_string,
    slug,
    task_metric_names,
    tasks_in,
)

# --------------------------------------------------------------------------------------------------------
# Formatting for people
# --------------------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    """A number for people: 3 significant digits below 100, no decimals above; '-' for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not is_number(value):
        return str(value)
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def trim(value: Any, limit: int = 700) -> str:
    """An input, output or error for the document: JSON unless already text, cut at `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(text: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table; cells are written as given (no number parsing: they are formatted already)."""
    frame = pd.DataFrame([[_cell(c) for c in row] for row in rows], columns=[_cell(h) for h in header])
    return frame.to_markdown(index=False, disable_numparse=True).splitlines()


# --------------------------------------------------------------------------------------------------------
# outputs.json, benchmarks.csv, metrics.json
# --------------------------------------------------------------------------------------------------------


def outputs_document(runs: list[Run]) -> dict[str, Any]:
    """Every run's inputs and outputs, grouped by task (latencies live in benchmarks.csv).

    A nested document, not a table: plain dicts, one entry per run with its cases as the record holds them.
    """
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


# benchmarks.csv column -> its field in the flattened record (pd.json_normalize joins nested keys with ".")
_RECORD_COLUMNS = {
    "name": "name",
    "task": "task",
    "model": "model.name",
    "model_id": "model.id",
    "revision": "model.revision",
    "weights": "model.weights",
    "device": "device",
    "dtype": "dtype",
    "profile": "profile",
    "config_hash": "config_hash",
}
# The metrics of benchmarks.csv: validity, then the latency protocol (pipelab.bench's statistics in its order),
# then the generation timings of text generation.
_METRIC_COLUMNS = (
    "cases_total",
    "cases_failed",
    "cases_invalid",
    "schema_valid_rate",
    "cold_start_ms",
    "first_call_ms",
    *LATENCY_METRICS,
    "throughput_items_per_s",
    "bench_batch_size",
    "bench_iterations",
    "peak_rss_mb",
    *GENERATION_TIMINGS,
    *STAGE_TIMES,
)
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
    *_METRIC_COLUMNS,
    "course_verdict",
    "config_hash",
)


def benchmark_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run with the columns of BENCHMARK_COLUMNS; a metric a run lacks is NaN (an empty cell)."""
    flat = pd.json_normalize([r.record for r in runs], max_level=1)
    table = flat.reindex(columns=[*_RECORD_COLUMNS.values(), *(f"metrics.{m}" for m in _METRIC_COLUMNS)])
    table.columns = [*_RECORD_COLUMNS, *_METRIC_COLUMNS]
    # Only finite numbers are written: a record may hold JSON's NaN or Infinity, an empty cell here.
    metrics = table[list(_METRIC_COLUMNS)].apply(pd.to_numeric, errors="coerce").astype(float)
    table[list(_METRIC_COLUMNS)] = metrics.where(np.isfinite(metrics))
    table = table.assign(
        record=[r.path for r in runs],
        ablation=[r.ablation for r in runs],
        ablation_point=[point_string(r.point) for r in runs],
        status=[r.status for r in runs],
        course_verdict=[r.verdict for r in runs],
    )
    return table[list(BENCHMARK_COLUMNS)]


def _csv_number(value: float) -> str:
    """Counts as integers, measurements to 4 decimals (missing ones are NaN: empty cells)."""
    number = float(value)
    return str(int(number)) if number.is_integer() else str(round(number, 4))


def write_benchmarks_csv(runs: list[Run], path: Path) -> None:
    """benchmarks.csv: one row per run; lines end in CRLF, RFC 4180's line ending (the plot CSVs' too)."""
    benchmark_table(runs).to_csv(path, index=False, float_format=_csv_number, lineterminator="\r\n")


def metrics_document(runs: list[Run]) -> dict[str, Any]:
    """Headline numbers for DVC: counts over the finished runs, and each task's course run."""
    counted = ["cases_total", "cases_failed", "cases_invalid", "schema_valid_rate"]
    counted += ["course_checks_passed", "course_checks_total"]
    finished = [r for r in runs if r.finished]
    counts = pd.json_normalize([r.metrics for r in finished]).reindex(columns=counted).fillna(0.0)
    totals = counts.sum()
    valid = (counts["schema_valid_rate"] * counts["cases_total"]).sum()
    per_task = {}
    for task in tasks_in(runs):
        course = course_run(runs, task)
        if course is None or not course.finished:
            per_task[task] = {"finished": 0}
            continue
        m = course.metrics
        per_task[task] = {"finished": 1} | {
            key: round(m[key], digits)
            for key, digits in (("latency_p50_ms", 3), ("throughput_items_per_s", 3), ("schema_valid_rate", 4))
            if is_number(m.get(key))  # JSON has no NaN: a missing number is left out
        }
    return {
        "runs": {
            "total": len(runs),
            "finished": len(finished),
            "unsupported": sum(r.status == "UNSUPPORTED" for r in runs),  # cannot run here (bitsandbytes off CUDA)
            "failed": sum(r.status == "FAILED" for r in runs),
        },
        "cases": {
            "total": int(totals["cases_total"]),
            "raised": int(totals["cases_failed"]),
            "invalid": int(totals["cases_invalid"]),
            "schema_valid_rate": round(float(valid / totals["cases_total"]), 4) if totals["cases_total"] else 0.0,
        },
        "course_checks": {
            "passed": int(totals["course_checks_passed"]),
            "total": int(totals["course_checks_total"]),
        },
        "tasks": per_task,
    }


# --------------------------------------------------------------------------------------------------------
# comparison.md's tables
# --------------------------------------------------------------------------------------------------------


def summary_table(runs: list[Run]) -> list[str]:
    """One row per task with a course run: its model, status, verdict, valid cases, latency and run count."""
    rows = []
    for task in tasks_in(runs):
        course = course_run(runs, task)
        if course is None:
            continue
        m = course.metrics
        rows.append(
            [
                f"[{task}](#{slug(task).lower()})",
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
    header = ["task", "default model", "status", "course verdict", "valid cases", "p50 ms", "items/s", "runs"]
    return markdown_table(header, rows)


def failed_runs_table(failed: list[Run]) -> list[str]:
    """The failed runs with their record and the start of their error."""
    rows = [[r.record.get("name"), f"`{r.path}`", trim(r.record.get("error", ""), 300)] for r in failed]
    return markdown_table(["run", "record", "error"], rows)


# The course run's latency table: header, metric, unit.
_LATENCY_COLUMNS = (
    ("cold start", "cold_start_ms", " ms"),
    ("first call", "first_call_ms", " ms"),
    ("mean", "latency_mean_ms", " ms"),
    ("p50", "latency_p50_ms", " ms"),
    ("p90", "latency_p90_ms", " ms"),
    ("p95", "latency_p95_ms", " ms"),
    ("p99", "latency_p99_ms", " ms"),
    ("std", "latency_std_ms", " ms"),
    ("CV", "latency_cv_pct", " %"),
    ("items/s", "throughput_items_per_s", ""),
    ("peak RSS", "peak_rss_mb", " MB"),
)


def latency_table(run: Run) -> list[str]:
    """One row: cold start, first call, the latency statistics, throughput and peak memory of one run."""
    row = [f"{fmt(run.metrics.get(metric))}{unit}" for _, metric, unit in _LATENCY_COLUMNS]
    return markdown_table([header for header, _, _ in _LATENCY_COLUMNS], [row])


def models_table(members: list[Run], default: Run | None) -> list[str]:
    """One row per model of a task (`members`, from model_runs); `default` is the task's course run."""
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
    return markdown_table(header, rows)


def ablation_table(group: Ablation) -> list[str]:
    """One row per point of an ablation: its label, model, status and the group's metrics."""
    metrics = group.metric_names()
    by_model = group.axis == "model"  # the point is the model: no separate model column
    header = [group.axis, *([] if by_model else ["model"]), "status", *(metric_label(m) for m in metrics)]
    rows = [
        [
            point_label(r.point),
            *([] if by_model else [r.model]),
            r.status,
            *(fmt(r.metrics.get(m)) if r.finished else "-" for m in metrics),
        ]
        for r in group.runs
    ]
    return markdown_table(header, rows)


def stage_table(runs: list[Run]) -> list[str]:
    """Per task's course run: the bench call's preprocess / forward / postprocess / other ms and the forward share."""
    header = ["task", "model", *(metric_label(m) for m in STAGE_TIMES), "sum (ms)", "forward share"]
    rows = []
    for run in finished_course_runs(runs):
        m = run.metrics
        if not all(is_number(m.get(k)) for k in STAGE_TIMES):
            continue
        total = sum(m[k] for k in STAGE_TIMES)
        share = f"{100 * m['forward_ms'] / total:.0f} %" if total > 0 else "-"
        rows.append([run.task, f"`{run.model}`", *(fmt(m[k]) for k in STAGE_TIMES), fmt(total), share])
    return markdown_table(header, rows) if rows else []
