"""Log the records that could not reach MLflow when they ran (`python stages/sync.py`), idempotently.

A run whose tracking store did not answer (tracking.required=false) or died under it keeps a complete record whose
`tracking` field says `logged: false`, with where it belonged: the store, the experiment, its sweep (id, name,
folder, parent run id) and a record id. Sync reads those records (never the runs' outputs), and for each sweep finds
its parent run (the one the sweep opened, else the one a previous sync created, else a new one), logs each run
under it through tracking.py, and marks the record logged (an atomic rewrite) only after its run has ended in
MLflow. Runs are looked up by record id before one is created, so a second sync, or one interrupted half-way and
started again, logs nothing twice. Parents still RUNNING (the sweep's end never reached the store) are ended with
the sweep's status, from its jobs file when the sweep folder is still there, else from their children.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelab import records, tracking
from pipelab.jobs import read_jobs, sweep_metrics, sweep_status
from pipelab.run_record import mlflow_artifacts, mlflow_params


@dataclass
class SyncReport:
    logged: list[str] = field(default_factory=list)  # record paths logged by this sync
    already: list[str] = field(default_factory=list)  # found in MLflow already (a previous, interrupted sync)
    parents_created: int = 0
    parents_ended: int = 0
    seconds: float = 0.0


def needs_sync(record: dict[str, Any]) -> bool:
    state = record.get("tracking") or {}
    return bool(state.get("enabled")) and state.get("logged") is False


def pending(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, record) for path, record in records.iter_records(results_dir) if needs_sync(record)]


def _millis(iso: str | None) -> int | None:
    return int(datetime.fromisoformat(iso).timestamp() * 1000) if iso else None


def _store_uri(record: dict[str, Any], uri_override: str | None, root: Path) -> str:
    """--uri, else the store the run was meant for (unless its password was stripped), else today's default."""
    if uri_override:
        return uri_override
    uri = record["tracking"].get("uri")
    if uri and ":***@" not in uri:
        return uri
    return tracking.tracking_uri(None, root)


def _log_one(uri: str, experiment_id: str, record: dict[str, Any], parent_run_id: str | None) -> tuple[str, bool]:
    tags = dict(record.get("tags") or {})
    if "course_verdict" in record:
        tags["course_verdict"] = record["course_verdict"]
    return tracking.log_record_run(
        uri,
        experiment_id,
        record_id=record["tracking"]["record_id"],
        name=record["name"],
        tags=tags,
        params=mlflow_params(record["config"], record["model"]["revision"]),
        metrics=dict(record.get("metrics") or {}),
        artifacts=mlflow_artifacts(record),
        status=record["status"],
        start_time=_millis(record.get("started_at")),
        end_time=_millis(record.get("finished_at")),
        parent_run_id=parent_run_id,
    )


def _end_parent(uri: str, experiment_id: str, run_id: str, sweep: dict[str, Any]) -> None:
    """End a sweep's parent run as the sweep callback would have: status, job counts, jobs.json."""
    rows = read_jobs(Path(sweep["dir"])) if sweep.get("dir") and Path(sweep["dir"]).is_dir() else []
    logger = tracking.RunLogger(uri, experiment_id)
    logger.attach(run_id)
    if rows:
        logger.log(metrics=sweep_metrics(rows))
        logger.log_artifacts({"jobs.json": json.dumps(rows, indent=2, default=str)})
        status = sweep_status(rows)
    else:
        statuses = tracking.sweep_children_statuses(uri, experiment_id, run_id)
        status = "FINISHED" if statuses and all(s == "FINISHED" for s in statuses) else "FAILED"
    logger.end(status)


def _lock(results_dir: Path) -> Any:
    """One sync at a time per results folder (two at once could both create the same run)."""
    key = hashlib.sha256(str(results_dir.resolve()).encode()).hexdigest()[:16]
    handle = open(Path(tempfile.gettempdir()) / f"pipelab-sync-{key}.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise tracking.TrackingUnavailable(f"another sync of {results_dir} is running; wait for it to end") from None
    return handle


def _sync_group(uri: str, experiment: str, members: list[tuple[Path, dict[str, Any]]], report: SyncReport) -> None:
    """One sweep's records (or the single runs') into one store and experiment."""
    experiment_id = tracking.ensure_experiment(uri, experiment)
    sweep = members[0][1]["tracking"].get("sweep")
    parent_run_id, parent_status = None, None
    if sweep:
        parent_run_id, parent_status, created = tracking.sweep_run(uri, experiment_id, sweep)
        report.parents_created += created
    for path, record in members:
        run_id, logged = _log_one(uri, experiment_id, record, parent_run_id)
        record["tracking"] = record["tracking"] | {"logged": True, "run_id": run_id, "error": None}
        if sweep and parent_run_id:
            record["tracking"]["sweep"] = sweep | {"parent_run_id": parent_run_id}
        records.write_record(path, record)  # atomic: marked logged only once its run has ended in MLflow
        (report.logged if logged else report.already).append(str(path))
    if sweep and parent_run_id and parent_status == "RUNNING":
        _end_parent(uri, experiment_id, parent_run_id, sweep)
        report.parents_ended += 1


def sync(results_dir: Path, root: Path, uri_override: str | None = None) -> SyncReport:
    """Log every record under results_dir that is marked not logged. Raises TrackingUnavailable if a store is down."""
    started = time.perf_counter()
    report = SyncReport()
    handle = _lock(results_dir)
    try:
        groups: dict[tuple[str, str, str], list[tuple[Path, dict[str, Any]]]] = {}
        for path, record in pending(results_dir):
            state = record["tracking"]
            sweep_id = (state.get("sweep") or {}).get("id", "")
            key = (_store_uri(record, uri_override, root), state.get("experiment", "pipelab"), sweep_id)
            groups.setdefault(key, []).append((path, record))
        checked: set[str] = set()
        for (uri, experiment, _), members in groups.items():
            if uri not in checked:
                tracking.require_store(uri, required=True)
                checked.add(uri)
            try:
                _sync_group(uri, experiment, members, report)
            except tracking.TrackingUnavailable:
                raise
            except Exception as exc:
                raise tracking.TrackingUnavailable(
                    f"sync stopped: MLflow at {tracking.display_uri(uri)} failed ({type(exc).__name__}: "
                    f"{str(exc)[:300]}) after {len(report.logged)} records were logged; the others stay marked "
                    "not logged: run `python stages/sync.py` again once the store answers (it resumes)"
                ) from exc
    finally:
        handle.close()
    report.seconds = time.perf_counter() - started
    return report
