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

One module per job: runs (records, ablation groups, names), tables (the JSON, CSV and Markdown tables), plots
(PNGs and DVC plot data), markdown (comparison.md). stages/aggregate.py calls write_reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelab_tools.report.markdown import comparison_markdown
from pipelab_tools.report.plots import write_dvc_plot_data, write_pngs
from pipelab_tools.report.runs import ablations, load_runs
from pipelab_tools.report.tables import BENCHMARK_COLUMNS, fmt, metrics_document, outputs_document, write_benchmarks_csv

# BENCHMARK_COLUMNS and fmt: the CSV's header and the document's number format, which tests check files against.
__all__ = ["BENCHMARK_COLUMNS", "ReportFiles", "fmt", "write_reports"]


@dataclass(frozen=True)
class ReportFiles:
    """What write_reports wrote, for its caller to list (stages/aggregate.py prints them)."""

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
    pngs = write_pngs(runs, groups, results_dir / "plots")
    csvs = write_dvc_plot_data(runs, groups, results_dir / "plots" / "dvc")

    outputs = results_dir / "outputs.json"
    outputs.write_text(json.dumps(outputs_document(runs), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    benchmarks = results_dir / "benchmarks.csv"
    write_benchmarks_csv(runs, benchmarks)
    metrics = results_dir / "metrics.json"
    metrics.write_text(json.dumps(metrics_document(runs), indent=2) + "\n", encoding="utf-8")
    comparison = results_dir / "comparison.md"
    links = {key: path.relative_to(results_dir).as_posix() for key, path in pngs.items()}
    comparison.write_text(comparison_markdown(runs, groups, links), encoding="utf-8")
    return ReportFiles(outputs, benchmarks, comparison, metrics, tuple(pngs.values()), tuple(csvs))
