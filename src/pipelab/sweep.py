"""A Hydra callback that groups a multirun under one MLflow parent run and prints its table at the end.

``on_multirun_start`` runs once in the launching process, before any job: it creates the MLflow store and the
experiment (so parallel jobs never race on a fresh SQLite file), checks first that the store answers (if not, the
sweep stops before any job or, with tracking.required=false, runs with every record marked not logged), opens the
parent run, named after the task and what the sweep varies (``text-generation: temperature 0.7/1.0/1.5 [tiny]``),
and hands its id, the sweep's id and the varied keys to the jobs through the environment (joblib's worker processes
are started later and inherit it); ``on_job_start`` tells each job its values of those keys, which name its child
run (``T=0.7``). A store that dies during the sweep fails no job: each keeps its record. Each job
appends one JSON line to ``<sweep dir>/pipelab_jobs.jsonl``; at the end (or at exit, when a failed job makes
Hydra raise before ``on_multirun_end``) the parent run gets the sweep's summary metrics and its jobs' datasets
(read from their records), is closed with the sweep's status, and the table is printed.
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

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipelab import console, launchers, progress, records, tracking
from pipelab.config import ConfigError
from pipelab.jobs import (
    ENV_AXES,
    ENV_PARENT,
    ENV_POINT,
    ENV_ROOT,
    ENV_SWEEP_DIR,
    ENV_SWEEP_ID,
    ENV_SWEEP_NAME,
    ENV_TRACKING_DOWN,
    JOBS_FILE,
    read_jobs,
    sweep_axes,
    sweep_metrics,
    sweep_status,
)
from pipelab.run_record import dataset_name, dataset_rows

_OPEN: list[SweepCallback] = []
# The live progress line of each open sweep, by callback: kept out of the callback itself, which the joblib
# launcher pickles to its workers (a thread cannot be pickled).
_LIVE: dict[int, progress.LiveLine] = {}

# The parent run's own metrics, over its jobs' records: `<metric>_<stat>`, so a collapsed sweep row in the
# MLflow runs table shows its range (the column picker lists them beside the children's metric).
SUMMARY_STATS: dict[str, tuple[str, ...]] = {"latency_p50_ms": ("min", "max"), "schema_valid_rate": ("min",)}
_STATS = {"min": min, "max": max}
# Run tags the parent copies when all its jobs agree, so the collapsed row fills the same tag columns.
SHARED_TAGS = ("task", "model", "weights", "profile", "device", "ablation")


def _key(override: Any) -> str:
    return str(override.key_or_group).lstrip("+~")


def varied_axes(config: DictConfig) -> dict[str, list[str]]:
    """Override key -> its values, for each key the sweep gives more than one value, in the order Hydra's basic
    sweeper expands them: the config's `hydra.sweeper.params` (an ablation's), then the command line's."""
    node = config.hydra.sweeper.get("params")
    params = (OmegaConf.to_container(node, resolve=False) if node is not None else None) or {}
    typed = [f"{key}={value}" for key, value in params.items()]
    typed += [str(o) for o in config.hydra.overrides.task]
    axes: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(typed):
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            if len(values) > 1:
                axes[_key(override)] = values
        else:
            axes.pop(_key(override), None)  # a later single value replaces an earlier sweep of the same key
    return axes


def sweep_name(config: DictConfig, axes: dict[str, list[str]]) -> str:
    """The parent run's name: the task (or how many), what varies and its values, the tiny marker."""
    tasks = axes.get("task")
    lead = f"{len(tasks)} tasks" if tasks else str(config.task.name)
    varied = "; ".join(f"{key.rsplit('.', 1)[-1]} {'/'.join(values)}" for key, values in axes.items() if key != "task")
    if varied:
        lead += f": {varied}"
    elif not tasks and config.model.name != "auto":
        lead += f" {config.model.name}"
    return lead + (" [tiny]" if config.profile.name == "tiny" else "")


def common_tags(jobs_records: list[dict[str, Any]]) -> dict[str, str]:
    """The run tags every job of the sweep shares (task, weights, ...), for the parent's own tag columns."""
    if not jobs_records:
        return {}
    first = jobs_records[0].get("tags") or {}
    return {
        k: first[k]
        for k in SHARED_TAGS
        if k in first and all((r.get("tags") or {}).get(k) == first[k] for r in jobs_records)
    }


def summary_metrics(metrics: list[dict[str, float]]) -> dict[str, float]:
    """SUMMARY_STATS over the jobs that have the metric."""
    summary = {}
    for name, stats in SUMMARY_STATS.items():
        values = [m[name] for m in metrics if m.get(name) is not None]
        if values:
            summary |= {f"{name}_{stat}": float(_STATS[stat](values)) for stat in stats}
    return summary


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
        try:
            launchers.check_launcher(config)  # before the parent run opens: a launcher that cannot run leaves nothing
        except ConfigError as exc:
            # Hydra turns a callback's exception into a warning and goes on to the launcher's traceback: exit here,
            # as stages/run.py does for a bad single run.
            print(f"pipelab: error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
        root = Path(os.environ.get(ENV_ROOT, Path.cwd()))
        self._sweep_dir = progress.sweep_dir_of(config)
        self._sweep_dir.mkdir(parents=True, exist_ok=True)
        (self._sweep_dir / JOBS_FILE).unlink(missing_ok=True)
        os.environ[ENV_SWEEP_DIR] = str(self._sweep_dir)
        axes = varied_axes(config)
        os.environ[ENV_AXES] = json.dumps(list(axes))
        overrides = " ".join(str(o) for o in config.hydra.overrides.task)
        sweep = {"id": uuid.uuid4().hex, "name": sweep_name(config, axes), "overrides": overrides}
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
                tags = tracking.sweep_tags(sweep | {"dir": str(self._sweep_dir)})
                self._logger.start(sweep["name"], tags | {"launcher": launchers.launcher_name(config)})
                os.environ[ENV_PARENT] = self._logger.run_id or ""
            if not answers or (self._logger is not None and not self._logger.logged):
                os.environ[ENV_TRACKING_DOWN] = "1"  # no parent run: the jobs log nothing and sync logs it all
        _OPEN.append(self)
        live = progress.start_sweep(config, self._sweep_dir)  # after the MLflow store is up: jobs come next
        if live is not None:
            _LIVE[id(self)] = live

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process (a joblib worker, or this one): its values of the varied keys, from its own
        overrides (they name its child run), and its number for the progress line."""
        axes = sweep_axes()
        typed = OverridesParser.create().parse_overrides([str(o) for o in config.hydra.overrides.task])
        values = {_key(o): o.get_value_element_as_str() for o in typed}
        os.environ[ENV_POINT] = json.dumps({key: values[key] for key in axes if key in values})
        if config.hydra.mode == RunMode.MULTIRUN:  # single runs have no sweep folder to report to
            progress.start_job(progress.sweep_dir_of(config), int(config.hydra.job.num))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        ok = getattr(job_return.status, "name", "") == "COMPLETED"
        progress.end_job(str(job_return.return_value) if ok else "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._done or self._sweep_dir is None:
            return
        self._done = True
        if self in _OPEN:
            _OPEN.remove(self)
        live = _LIVE.pop(id(self), None)
        if live is not None:
            live.stop()  # before the table: it prints on a whole screen again
        rows = read_jobs(self._sweep_dir)
        console.print_sweep_table(rows)
        status = sweep_status(rows)
        if self._logger is not None:
            jobs_records = [records.read_record(Path(r["record"])) for r in rows if r.get("record")]
            self._logger.log(
                metrics=sweep_metrics(rows) | summary_metrics([r.get("metrics") or {} for r in jobs_records]),
                tags=common_tags(jobs_records),
            )
            self._log_datasets(jobs_records)
            self._logger.log_artifacts({"jobs.json": json.dumps(rows, indent=2, default=str)})
            self._logger.end(status)
        unlogged = sum(1 for r in rows if r.get("logged") is False)
        if unlogged:
            print(
                f"{unlogged} of {len(rows)} jobs not logged to MLflow (their records are complete): "
                "`python stages/sync.py` logs them once the store answers",
                flush=True,
            )
        for name in (ENV_PARENT, ENV_SWEEP_DIR, ENV_AXES, ENV_POINT, ENV_SWEEP_ID, ENV_SWEEP_NAME, ENV_TRACKING_DOWN):
            os.environ.pop(name, None)

    def _log_datasets(self, jobs_records: list[dict[str, Any]]) -> None:
        """Each distinct input set of the jobs once, so the collapsed row's Dataset column says what went in."""
        assert self._logger is not None
        seen: set[str] = set()
        for record in jobs_records:
            rows = dataset_rows(record.get("cases") or [])
            digest = tracking.dataset_digest(rows)
            if rows and digest not in seen:
                seen.add(digest)
                self._logger.log_dataset(dataset_name(record["task"], rows), rows, f"conf/task/{record['task']}.yaml")
