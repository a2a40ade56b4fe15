"""The reports' plots: PNGs for people (matplotlib), and the same curves as CSV for `dvc plots show`.

results/plots/*.png          latency per task, one figure per ablation, batch scaling
results/plots/dvc/           numeric/ (a line over a numeric axis), categorical/ (bars)
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from pipelab.forked import fork_map
from pipelab_tools.report.runs import (
    STAGE_TIMES,
    Ablation,
    Run,
    finished_course_runs,
    is_number,
    metric_label,
    point_label,
    slug,
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or over ssh
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, *, laid_out: bool = False) -> None:
    # No "Software"/date metadata: the same records give byte-identical PNGs. A figure laid out by
    # fig.tight_layout() (`laid_out`) already fits its labels: a "tight" bounding box would lay it out a second
    # time (~17% of its time). Asking the figure does not work: tight_layout() leaves no layout engine behind.
    fig.savefig(path, dpi=110, bbox_inches=None if laid_out else "tight", metadata={"Software": None})
    _pyplot().close(fig)


def plot_latency_by_task(runs: list[Run], path: Path) -> bool:
    """Box plot of the raw warm-latency samples of each task's course run (log scale: tasks differ 100x)."""
    samples = [(c, c.record.get("benchmark", {}).get("samples_ms") or []) for c in finished_course_runs(runs)]
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


def plot_stages_by_task(runs: list[Run], path: Path) -> bool:
    """One stacked bar per task's course run: the share of preprocess, forward, postprocess and the rest of a call.

    Shares, not milliseconds: tasks differ 100x in latency, so absolute bars would hide the small ones; each bar's
    label gives its total in ms.
    """
    courses = [c for c in finished_course_runs(runs) if all(is_number(c.metrics.get(k)) for k in STAGE_TIMES)]
    if not courses:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(courses) + 1.6))
    colors = ("#4c72b0", "#dd8452", "#55a868", "#b0b0b0")
    totals = [sum(c.metrics[k] for k in STAGE_TIMES) for c in courses]
    left = [0.0] * len(courses)
    for metric, color in zip(STAGE_TIMES, colors, strict=True):
        shares = [100 * c.metrics[metric] / t if t > 0 else 0.0 for c, t in zip(courses, totals, strict=True)]
        ax.barh(range(len(courses)), shares, left=left, color=color, label=metric_label(metric).replace(" (ms)", ""))
        left = [a + b for a, b in zip(left, shares, strict=True)]
    labels = [f"{c.task}\n{c.model} ({t:.3g} ms)" for c, t in zip(courses, totals, strict=True)]
    ax.set_yticks(range(len(courses)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of one bench call (%), median of the stage-timing calls")
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.2 / len(courses)))
    ax.set_title("Where a call's time goes: the pipeline's own stages (course runs)")
    _save(fig, path)
    return True


def plot_ablation(ablation: Ablation, path: Path) -> bool:
    """One panel per metric: a line over a numeric axis, bars over categories (models, strategies)."""
    runs = [r for r in ablation.runs if r.finished]
    metrics = [m for m in ablation.plot_metrics() if any(is_number(r.metrics.get(m)) for r in runs)]
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
        ax.set_title(metric_label(metric), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(f"{ablation.task}: ablation {ablation.name}", fontsize=11)
    fig.tight_layout()
    _save(fig, path, laid_out=True)
    return True


def plot_batch_scaling(ablation: Ablation, path: Path) -> bool:
    """Items/s and time per call against batch size, on log-2 axes."""
    runs = sorted(
        (r for r in ablation.runs if r.finished and is_number(r.metrics.get("throughput_items_per_s"))),
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
    _save(fig, path, laid_out=True)
    return True


def write_pngs(runs: list[Run], groups: list[Ablation], plot_dir: Path) -> dict[str, Path]:
    """Every PNG there is data for, keyed as comparison.md links them: "latency", "stages" and "<task>/<ablation>".

    A batch-size ablation gets the batch-scaling figure (batch_scaling_<task>_<ablation>.png), any other
    ablation one panel per metric (ablation_<task>_<ablation>.png). Figures are drawn by one forked process per core
    (matplotlib takes ~0.15 s a panel: the course grid's 21 figures took 23 s in one process).
    """
    plot_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, Any, Any, Path]] = [
        ("latency", plot_latency_by_task, runs, plot_dir / "latency_by_task.png"),
        ("stages", plot_stages_by_task, runs, plot_dir / "stages_by_task.png"),
    ]
    for group in groups:
        is_batch = group.axis == "batch_size"
        path = plot_dir / f"{'batch_scaling' if is_batch else 'ablation'}_{slug(group.task)}_{slug(group.name)}.png"
        jobs.append((f"{group.task}/{group.name}", plot_batch_scaling if is_batch else plot_ablation, group, path))
    _pyplot()  # imported before any fork: the workers import nothing
    drawn = fork_map(_draw, [(plot, data, path) for _, plot, data, path in jobs])
    return {key: path for (key, _, _, path), done in zip(jobs, drawn, strict=True) if done}


def _draw(job: tuple[Any, Any, Path]) -> bool:
    plot, data, path = job
    return plot(data, path)


def write_dvc_plot_data(runs: list[Run], groups: list[Ablation], out_dir: Path) -> list[Path]:
    """Two-column CSVs for `dvc plots`: numeric/ (a line over a numeric axis), categorical/ (bars).

    dvc.yaml gives each folder one definition (x: point, y: value), so any ablation added to params.yaml gets
    its plots without an edit there; the file name says task, ablation and metric.
    """
    written = []

    def write(kind: str, name: str, points: list[tuple[Any, float]]) -> None:
        path = out_dir / kind / f"{slug(name)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["point", "value"])
            writer.writerows((p, round(v, 6)) for p, v in points)
        written.append(path)

    courses = finished_course_runs(runs)
    if courses:
        write("categorical", "course--latency_p50_ms", [(c.task, c.metrics["latency_p50_ms"]) for c in courses])
        for metric in STAGE_TIMES:  # the stacked bar's segments, one bar chart each
            points = [(c.task, c.metrics[metric]) for c in courses if is_number(c.metrics.get(metric))]
            if points:
                write("categorical", f"course--{metric}", points)
    for group in groups:
        finished = [r for r in group.runs if r.finished]
        for metric in group.plot_metrics():
            points = [(r, r.metrics.get(metric)) for r in finished]
            points = [(r, v) for r, v in points if is_number(v)]
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
