"""A Hydra callback that groups a multirun under one MLflow parent run and prints its table at the end.

``on_multirun_start`` runs once in the launching process, before any job: it creates the MLflow store and the
experiment (so parallel jobs never race on a fresh SQLite file), opens the parent run, and hands its id to
the jobs through the environment (joblib's worker processes are started later and inherit it). It checks
first that the store answers: if not, the sweep stops before any job (or, with tracking.required=false, runs
with every record marked not logged). A store that dies during the sweep fails no job: each keeps its record. Each job
appends one JSON line to ``<sweep dir>/pipelab_jobs.jsonl``; at the end (or at exit, when a failed job makes
Hydra raise before ``on_multirun_end``) the parent run is closed with the sweep's status and the table printed.
A process that runs several sweeps (the DVC stage, stages/sweep_task.py) calls :func:`finish_open_sweeps` after
each, so a failed sweep's parent run is closed before the next sweep starts.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pipelab import console, tracking
from pipelab.jobs import (
    ENV_PARENT,
    ENV_ROOT,
    ENV_SWEEP_DIR,
    ENV_SWEEP_ID,
    ENV_SWEEP_NAME,
    ENV_TRACKING_DOWN,
    JOBS_FILE,
    read_jobs,
    sweep_metrics,
    sweep_status,
)

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
        overrides = " ".join(str(o) for o in config.hydra.overrides.task)
        sweep = {"id": uuid.uuid4().hex, "name": f"sweep {overrides}".strip(), "overrides": overrides}
        os.environ[ENV_SWEEP_ID] = sweep["id"]
        os.environ[ENV_SWEEP_NAME] = sweep["name"]
        os.environ.pop(ENV_TRACKING_DOWN, None)
        if config.tracking.enabled:
            uri = tracking.tracking_uri(config.tracking.uri, root)
            try:
                answers = tracking.require_store(uri, bool(config.tracking.required))
            except tracking.TrackingUnavailable as exc:
                print(f"pipelab: error: {exc}", file=sys.stderr, flush=True)
                sys.exit(2)  # before any job: Hydra's own handler would print a traceback for an exception
            if answers:
                experiment_id = tracking.ensure_experiment(uri, config.tracking.experiment)
                self._logger = tracking.RunLogger(uri, experiment_id, tolerant=True)
                self._logger.start(sweep["name"], tracking.sweep_tags(sweep | {"dir": str(self._sweep_dir)}))
                os.environ[ENV_PARENT] = self._logger.run_id or ""
            if not answers or (self._logger is not None and not self._logger.logged):
                os.environ[ENV_TRACKING_DOWN] = "1"  # no parent run: the jobs log nothing and sync logs it all
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
            self._logger.log(metrics=sweep_metrics(rows))
            self._logger.log_artifacts({"jobs.json": json.dumps(rows, indent=2, default=str)})
            self._logger.end(status)
        unlogged = sum(1 for r in rows if r.get("logged") is False)
        if unlogged:
            print(
                f"{unlogged} of {len(rows)} jobs not logged to MLflow (their records are complete): "
                "`python stages/sync.py` logs them once the store answers",
                flush=True,
            )
        for name in (ENV_PARENT, ENV_SWEEP_DIR, ENV_SWEEP_ID, ENV_SWEEP_NAME, ENV_TRACKING_DOWN):
            os.environ.pop(name, None)
