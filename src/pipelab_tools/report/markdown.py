"""comparison.md: per task the course example, the verdict, latency, models and the ablations in numbers.

The tables come from pipelab_tools.report.tables; this module writes the prose around them and the findings.
"""

from __future__ import annotations

from pipelab_tools.report.runs import (
    Ablation,
    Run,
    course_run,
    is_number,
    metric_label,
    model_runs,
    point_label,
    tasks_in,
)
from pipelab_tools.report.tables import (
    ablation_table,
    failed_runs_table,
    fmt,
    latency_table,
    models_table,
    stage_table,
    summary_table,
    trim,
)


def _findings(group: Ablation) -> list[str]:
    """One line per metric: its lowest and highest value and where, in numbers."""
    runs = [r for r in group.runs if r.finished]

    def where(run: Run) -> str:
        label = point_label(run.point)
        return f"{group.axis}={label}" if group.axis != "point" else label

    lines = []
    for metric in group.metric_names():
        values = [(r.metrics[metric], where(r)) for r in runs if is_number(r.metrics.get(metric))]
        if len(values) < 2:
            continue
        name = metric_label(metric)
        low, high = min(values), max(values)
        if low[0] == high[0]:
            lines.append(f"- {name}: {fmt(low[0])} at every point")
            continue
        ratio = f" (x{high[0] / low[0]:.2f})" if low[0] > 0 and metric.endswith(("_ms", "_per_s")) else ""
        lines.append(f"- {name}: {fmt(low[0])} at {low[1]} to {fmt(high[0])} at {high[1]}{ratio}")
    for run in group.runs:
        if run.unsupported:
            lines.append(f"- {where(run)}: not supported here: {trim(run.record.get('unsupported', ''), 300)}")
    failed = [r for r in group.runs if r.failed]
    if failed:
        lines.append(
            f"- {len(failed)} point(s) FAILED: "
            + "; ".join(f"{where(r)}: {trim(r.record.get('error', ''), 200)}" for r in failed)
        )
    return lines


def _latency_section(run: Run) -> list[str]:
    m = run.metrics
    bench = run.record.get("benchmark", {})
    settings = bench.get("settings", {})
    intro = (
        f"Bench case `{bench.get('bench_case')}`: {fmt(m.get('bench_iterations'))} timed calls after the first "
        f"call and {settings.get('warmup', '?')} warm-up call(s), batch size {fmt(m.get('bench_batch_size'))}, "
        f"on {run.record.get('device')}/{run.record.get('dtype')}."
    )
    return ["### Latency", "", intro, "", *latency_table(run), ""]


def _course_example(run: Run) -> list[str]:
    cases = run.record.get("cases", [])
    course_cases = [c for c in cases if c.get("kind") == "course"] or cases[:1]
    lines = []
    for case in course_cases:
        lines.append(f"**Course example `{case['id']}`**")
        lines += ["", "Input:", "", "```text", trim(case.get("input")), "```", ""]
        if case.get("error"):
            lines += ["Raised:", "", "```text", trim(case["error"]), "```", ""]
        else:
            status = "valid" if case.get("valid") else "INVALID: " + "; ".join(case.get("problems") or [])
            lines += [f"Output ({status}):", "", "```json", trim(case.get("output")), "```", ""]
    return lines


def _models_section(runs: list[Run], task: str) -> list[str]:
    members = model_runs(runs, task)
    if not members:
        return []
    lines = ["### Default vs custom model", ""]
    if len(members) == 1:
        lines += ["Only the course default model ran for this task (add a `model=` ablation to compare).", ""]
    return lines + models_table(members, course_run(runs, task)) + [""]


def _ablation_section(group: Ablation, plot: str | None) -> list[str]:
    lines = [f"### Ablation `{group.name}`", ""]
    if group.description:
        lines += [group.description[:1].upper() + group.description[1:] + ".", ""]
    lines += ablation_table(group) + [""]
    findings = _findings(group)
    if findings:
        lines += ["Findings:", "", *findings, ""]
    if plot:
        lines += [f"![{group.task} {group.name}]({plot})", ""]
    return lines


def _course_section(course: Run | None) -> list[str]:
    """The course run of a task: its example, verdict, checks and latency, or why there is none."""
    if course is None:
        return ["No course run of this task (only ablation runs).", ""]
    if not course.finished:
        return [
            f"The course run `{course.record.get('name')}` FAILED:",
            "",
            "```text",
            trim(course.record.get("error", "")),
            "```",
            "",
        ]
    model = course.record["model"]
    lines = [
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
    return lines + _latency_section(course)


def comparison_markdown(runs: list[Run], groups: list[Ablation], plots: dict[str, str]) -> str:
    """The human report. `plots` maps "latency" and "<task>/<ablation>" to paths relative to results/."""
    profiles = sorted({str(r.record.get("profile")) for r in runs})
    devices = sorted({str(r.record.get("device")) for r in runs})
    weights = sorted({str(r.record["model"].get("weights")) for r in runs})
    failed = [r for r in runs if r.failed]
    unsupported = sum(1 for r in runs if r.unsupported)
    lines = [
        "# pipelab: the course's pipeline() tasks, run, checked and timed",
        "",
        f"Built from {len(runs)} run records in `results/runs/` (profile {', '.join(profiles)}; weights "
        f"{', '.join(weights)}; device {', '.join(devices)}); {len(runs) - len(failed) - unsupported} finished, "
        f"{len(failed)} failed"
        + (f", {unsupported} not supported here" if unsupported else "")
        + ". Every number below is read from those records; `results/benchmarks.csv` has one "
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
    lines += ["## Summary", "", *summary_table(runs), ""]
    if "latency" in plots:
        lines += [f"![latency per task]({plots['latency']})", ""]
    stages = stage_table(runs)
    if stages:
        lines += [
            "## Where a call's time goes",
            "",
            "The bench case of each course run, timed stage by stage in separate calls after the latency loop: the "
            "pipeline's own `preprocess` (tokenizer, image or audio processor), `_forward` (the model; `generate` "
            "for generation) and `postprocess` (softmax, argmax, decoding), and the rest of the call (parameter "
            "handling, batching, device moves). Medians per call, in ms.",
            "",
            *stages,
            "",
        ]
        if "stages" in plots:
            lines += [f"![pipeline stages per task]({plots['stages']})", ""]
    if failed:
        lines += ["## Failed runs", "", *failed_runs_table(failed), ""]
    for task in tasks_in(runs):
        lines += [f"## {task}", ""]
        lines += _course_section(course_run(runs, task))
        lines += _models_section(runs, task)
        for group in groups:
            if group.task == task:
                lines += _ablation_section(group, plots.get(f"{task}/{group.name}"))
    return "\n".join(lines).rstrip() + "\n"
