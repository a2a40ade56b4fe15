"""What a person sees in the terminal: a one-screen summary per run, a table per sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def job_line(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """The row a finished run contributes to its sweep's table."""
    m = record["metrics"]
    return {
        "name": record["name"],
        "status": record["status"],
        "cases": int(m["cases_total"]),
        "valid": int(round(m["schema_valid_rate"] * m["cases_total"])),
        "errors": int(m["cases_failed"]),
        "latency_mean_ms": m.get("latency_mean_ms"),
        "verdict": record["course_verdict"],
        "record": str(path),
        "cache_hit": bool(m.get("pipeline_cache_hit")),
        **{f"{key}_ms": m.get(f"{key}_ms") for key, _ in TIME_PARTS},
    }


# Where a run's time goes, in the order it is spent (metrics `<key>_ms`); the sweep table sums them.
TIME_PARTS = (
    ("weights_resolve", "weights"),
    ("cold_start", "model load"),
    ("cases", "cases"),
    ("bench", "bench loop"),
    ("logging", "MLflow"),
)


def print_run_summary(record: dict[str, Any]) -> None:
    m = record["metrics"]
    model = record["model"]
    lines = [
        "",
        f"== {record['name']} ==",
        f"model    {model['id']} @ {model['revision'][:12]} ({model['weights']}) "
        f"on {record['device']}/{record['dtype']}",
        f"cases    {int(m['cases_total'])} total, {int(round(m['schema_valid_rate'] * m['cases_total']))} valid, "
        f"{int(m['cases_failed'])} raised, {int(m['cases_invalid'])} invalid schema",
        f"latency  cold start {_ms(m.get('cold_start_ms'))}"
        + (" (cached pipeline)" if m.get("pipeline_cache_hit") else "")
        + f", first call {_ms(m.get('first_call_ms'))}, warm mean {_ms(m.get('latency_mean_ms'))} "
        f"(p50 {_ms(m.get('latency_p50_ms'))}, p95 {_ms(m.get('latency_p95_ms'))}, "
        f"n={int(m.get('bench_iterations', 0))})",
        f"course   {record['course_verdict']}",
    ]
    state = record.get("tracking") or {}
    if state.get("enabled") and not state.get("logged"):
        lines.append(
            f"mlflow   NOT LOGGED to {state.get('uri')} ({state.get('error')}): the record is complete; "
            "`python stages/sync.py` logs it once the store answers"
        )
    for case in record["cases"]:
        if case["error"]:
            lines.append(f"  error  {case['id']}: {case['error'][:150]}")
        elif not case["valid"]:
            lines.append(f"  invalid {case['id']}: {'; '.join(case['problems'])[:150]}")
    for item in record.get("expectations", []):
        lines.append(f"  {'pass' if item['passed'] else 'FAIL'}   {item['case']}: {item['detail']}")
    print("\n".join(lines), flush=True)


def print_skip(name: str, path: Path, run_id: str | None, *, waiting_for_sync: bool = False) -> None:
    print(
        f"\n== {name} ==\nskipped  an identical config already finished (record {path}"
        + (f", MLflow run {run_id}" if run_id else "")
        + (", not logged to MLflow yet: `python stages/sync.py` logs it" if waiting_for_sync else "")
        + "); pass rerun=true to run it again",
        flush=True,
    )


def print_sweep_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    header: tuple[str, ...] = ("job", "status", "cases", "valid", "errors", "cold start", "warm mean", "course")
    table = [
        (
            r.get("name", "?"),
            r.get("status", "?"),
            str(r.get("cases", "-")),
            str(r.get("valid", "-")),
            str(r.get("errors", "-")),
            _ms(r.get("cold_start_ms")),
            _ms(r.get("latency_mean_ms")),
            (r.get("verdict") or r.get("error") or "")[:48],
        )
        for r in rows
    ]
    # A launcher that sends each job's output to a file (submitit) says where: the table names every job's log.
    if any(r.get("log") for r in rows):
        header += ("log",)
        table = [row + (r.get("log") or "-",) for row, r in zip(table, rows, strict=True)]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print("\n" + fmt.format(*header))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print(fmt.format(*row))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    print(f"\n{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), flush=True)
    # A cached pipeline reports the load it reused: count a model's load once per sweep table.
    totals = {
        key: sum(r.get(f"{key}_ms") or 0.0 for r in rows if key != "cold_start" or not r.get("cache_hit"))
        for key, _ in TIME_PARTS
    }
    print("time     " + ", ".join(f"{label} {totals[key] / 1000:.1f} s" for key, label in TIME_PARTS), flush=True)
