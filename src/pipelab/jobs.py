"""The jobs file of a multirun: how each job reports to the sweep callback (pipelab.sweep), without Hydra.

The callback opens the sweep's MLflow parent run and hands its id and the sweep folder to the jobs through the
environment; each job appends one JSON line to ``<sweep dir>/pipelab_jobs.jsonl``, which the callback reads at the
end for the sweep table and the DAG reads to check that every job left a record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV_PARENT = "PIPELAB_PARENT_RUN_ID"
ENV_SWEEP_DIR = "PIPELAB_SWEEP_DIR"
ENV_ROOT = "PIPELAB_ROOT"
JOBS_FILE = "pipelab_jobs.jsonl"


def parent_run_id() -> str | None:
    return os.environ.get(ENV_PARENT) or None


def note_job(row: dict[str, Any]) -> None:
    """Append this job's row to the sweep's jobs file (one short write: safe with parallel jobs)."""
    sweep_dir = os.environ.get(ENV_SWEEP_DIR)
    if not sweep_dir:
        return
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
