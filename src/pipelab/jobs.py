"""The jobs file of a multirun: how each job reports to the sweep callback (pipelab.sweep), without Hydra.

The callback opens the sweep's MLflow parent run and hands its id, the sweep's own id and name, the sweep folder,
whether the tracking store answered, the keys the sweep varies and each job's values of them (which name the job's
child run) to the jobs through the environment; each job appends one JSON line to ``<sweep dir>/pipelab_jobs.jsonl``,
which the callback reads at the end for the sweep table and the DAG reads to check that every job left a record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipelab.launchers import job_log

ENV_PARENT = "PIPELAB_PARENT_RUN_ID"
ENV_SWEEP_DIR = "PIPELAB_SWEEP_DIR"
ENV_ROOT = "PIPELAB_ROOT"
ENV_AXES = "PIPELAB_SWEEP_AXES"  # JSON list: the override keys the sweep varies
ENV_POINT = "PIPELAB_SWEEP_POINT"  # JSON object: this job's value of each of them, as typed
ENV_SWEEP_ID = "PIPELAB_SWEEP_ID"
ENV_SWEEP_NAME = "PIPELAB_SWEEP_NAME"
ENV_TRACKING_DOWN = "PIPELAB_TRACKING_DOWN"  # "1": the sweep found the store down (tracking.required=false)
JOBS_FILE = "pipelab_jobs.jsonl"


def parent_run_id() -> str | None:
    return os.environ.get(ENV_PARENT) or None


def sweep_axes() -> list[str]:
    return json.loads(os.environ.get(ENV_AXES) or "[]")


def sweep_point() -> dict[str, str]:
    """This job's place in its sweep ({"temperature": "0.7"}); empty outside a sweep or when nothing varies."""
    return json.loads(os.environ.get(ENV_POINT) or "{}")


def sweep_info() -> dict[str, Any] | None:
    """The sweep this job belongs to, as its record keeps it (sync puts the run under this sweep's parent)."""
    sweep_id = os.environ.get(ENV_SWEEP_ID)
    if not sweep_id:
        return None
    return {
        "id": sweep_id,
        "name": os.environ.get(ENV_SWEEP_NAME, ""),
        "dir": os.environ.get(ENV_SWEEP_DIR, ""),
        "parent_run_id": parent_run_id(),
    }


def tracking_down_in_sweep() -> bool:
    return os.environ.get(ENV_TRACKING_DOWN) == "1"


def note_job(row: dict[str, Any]) -> None:
    """Append this job's row to the sweep's jobs file (one short write: safe with parallel jobs)."""
    sweep_dir = os.environ.get(ENV_SWEEP_DIR)
    if not sweep_dir:
        return
    log = job_log()
    if log:
        row = row | {"log": log}
    path = Path(sweep_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=str) + "\n")


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    path = sweep_dir / JOBS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sweep_status(rows: list[dict[str, Any]]) -> str:
    statuses = {r.get("status") for r in rows}
    if "KILLED" in statuses:
        return "KILLED"
    if "FAILED" in statuses or not rows:
        return "FAILED"
    return "FINISHED"


def sweep_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The parent run's metrics: jobs per status and in total."""
    counts = {s: sum(1 for r in rows if r.get("status") == s) for s in ("FINISHED", "FAILED", "SKIPPED", "KILLED")}
    return {f"jobs_{k.lower()}": float(v) for k, v in counts.items()} | {"jobs_total": float(len(rows))}
