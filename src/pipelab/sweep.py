"""A Hydra callback that groups a multirun under one MLflow parent run and prints its table at the end.

``on_multirun_start`` runs once in the launching process, before any job: it creates the MLflow store and the
experiment (so parallel jobs never race on a fresh SQLite file), opens the parent run, and hands its id to
the jobs through the environment (joblib's worker processes are started later and inherit it). Each job
appends one JSON line to ``<sweep dir>/pipelab_jobs.jsonl``; at the end (or at exit, when a failed job makes
Hydra raise before ``on_multirun_end``) the parent run is closed with the sweep's status and the table printed.
A process that runs several sweeps (the DVC stage, stages/sweep_task.py) calls :func:`finish_open_sweeps` after
each, so a failed sweep's parent run is closed before the next sweep starts.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pipelab import console, tracking
from pipelab.jobs import ENV_PARENT, ENV_ROOT, ENV_SWEEP_DIR, JOBS_FILE, read_jobs, sweep_status

_OPEN: list[SweepCallback] = []


def finish_open_sweeps() -> None:
    """Close every sweep this process started and Hydra did not end (a failed job raises past on_multirun_end)."""
    for callback in list(_OPEN):
        callback._finish()


atexit.register(finish_open_sweeps)


class SweepCallback(Callback):
    def __init__(self) -> None:
        self._logger: tracking.RunLogger | None = None
        self._sweep_dir: Path | None = None
        self._done = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(os.environ.get(ENV_ROOT, Path.cwd()))
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        if not self._sweep_dir.is_absolute():
            self._sweep_dir = Path.cwd() / self._sweep_dir
        self._sweep_dir.mkdir(parents=True, exist_ok=True)
        (self._sweep_dir / JOBS_FILE).unlink(missing_ok=True)
        os.environ[ENV_SWEEP_DIR] = str(self._sweep_dir)
        if config.tracking.enabled:
            uri = tracking.tracking_uri(config.tracking.uri, root)
            experiment_id = tracking.ensure_experiment(uri, config.tracking.experiment)
            overrides = " ".join(str(o) for o in config.hydra.overrides.task)
            self._logger = tracking.RunLogger(uri, experiment_id)
            self._logger.start(
                f"sweep {overrides}".strip(),
                {"pipelab.sweep": "true", "sweep_dir": str(self._sweep_dir), "overrides": overrides},
            )
            os.environ[ENV_PARENT] = self._logger.run_id or ""
        _OPEN.append(self)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._done or self._sweep_dir is None:
            return
        self._done = True
        if self in _OPEN:
            _OPEN.remove(self)
        rows = read_jobs(self._sweep_dir)
        console.print_sweep_table(rows)
        status = sweep_status(rows)
        if self._logger is not None:
            counts = {
                s: sum(1 for r in rows if r.get("status") == s) for s in ("FINISHED", "FAILED", "SKIPPED", "KILLED")
            }
            self._logger.log(
                metrics={f"jobs_{k.lower()}": float(v) for k, v in counts.items()} | {"jobs_total": float(len(rows))}
            )
            self._logger.log_artifacts({"jobs.json": json.dumps(rows, indent=2, default=str)})
            self._logger.end(status)
        os.environ.pop(ENV_PARENT, None)
        os.environ.pop(ENV_SWEEP_DIR, None)
