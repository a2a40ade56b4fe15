"""One run: config -> weights -> pipeline -> cases -> checks -> benchmark -> record + MLflow run.

Everything that can be wrong with the config or the inputs is checked before any weights load. A case that
raises is recorded with its error and the run goes on. A run that crashes after it started is marked FAILED
(with its traceback as an artifact and a FAILED record); Ctrl-C or SIGTERM marks it KILLED and writes no record.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pipelab import bench, console, jobs, records, tracking
from pipelab.assets import AssetStore
from pipelab.checks import course_checks
from pipelab.config import ConfigError, validate_config
from pipelab.devices import resolve_device
from pipelab.environment import environment
from pipelab.models import is_prompted, pipeline_task, resolve_model
from pipelab.pipeline_cache import cache_stats, load_pipeline
from pipelab.redaction import redact, redact_values
from pipelab.run_record import base_record, case_json, config_yaml, params_view, run_name, run_tags
from pipelab.schemas import to_jsonable
from pipelab.tasks import Case, CaseResult, TaskContext, get_task
from pipelab.weights import resolve_weights


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into the same path as Ctrl-C."""


@dataclass
class RunOutcome:
    status: str
    record_path: Path | None = None
    run_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _install_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


def run_job(cfg: DictConfig, root: Path) -> RunOutcome:
    """Run one composed config. Raises ConfigError/AssetError/WeightsUnavailable before anything is logged."""
    previous = _install_sigterm()
    try:
        return _run(cfg, root)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _prepare(cfg: DictConfig, root: Path) -> tuple[Any, TaskContext, list[Case], str, str]:
    validate_config(cfg, root)
    device, dtype = resolve_device(cfg.device.name, cfg.device.dtype)
    resolve_model(cfg, root, device)
    validate_config(cfg, root)  # again with the resolved model (task/model pairing)
    profile_call = cfg.profile.task_call.get(cfg.task.name)
    if profile_call:
        with open_dict(cfg):
            cfg.task.call = OmegaConf.merge(cfg.task.call, profile_call)
    task = get_task(cfg.task.name, prompted=is_prompted(cfg))
    assets = AssetStore(
        dict(OmegaConf.to_container(cfg.task.assets, resolve=True) or {}),
        root / cfg.data_dir,
        stand_ins=cfg.profile.name == "tiny",
        local_only=bool(cfg.profile.offline),
    )
    ctx = TaskContext(cfg=cfg, assets=assets)
    cases: list[Case] = []
    for case_cfg in cfg.task.cases:
        cases.extend(task.prepare(case_cfg, ctx))
    if cfg.input is not None:
        cases.append(task.user_case(cfg.input, ctx))
    if not cases:
        raise ConfigError(f"no case of task {cfg.task.name} applies to model {cfg.model.name}")
    return task, ctx, cases, device, dtype


def _run(cfg: DictConfig, root: Path) -> RunOutcome:
    started = datetime.now(UTC)
    task, ctx, cases, device, dtype = _prepare(cfg, root)
    weights = resolve_weights(cfg.model, cfg.profile, root / cfg.data_dir)
    if weights.weights == "tiny-random":
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    digest = records.config_hash(config_dict, weights.hash_revision)
    results_dir = root / cfg.results_dir
    path = records.record_path(results_dir, cfg.task.name, cfg.model.name, digest)
    name = run_name(cfg, task, weights.weights)

    uri = tracking.tracking_uri(cfg.tracking.uri, root)
    experiment_id = tracking.ensure_experiment(uri, cfg.tracking.experiment) if cfg.tracking.enabled else None
    if not cfg.rerun and path.is_file() and records.read_record(path).get("status") == "FINISHED":
        finished = experiment_id is None or tracking.find_finished_run(uri, experiment_id, digest)
        if finished:
            console.print_skip(name, path, finished if isinstance(finished, str) else None)
            jobs.note_job({"name": name, "status": "SKIPPED", "record": str(path)})
            return RunOutcome("SKIPPED", path, finished if isinstance(finished, str) else None)

    logger = tracking.RunLogger(uri, experiment_id) if experiment_id is not None else None
    tags = run_tags(cfg, weights, device, dtype, digest, path, root)
    logging_started = time.perf_counter()
    if logger is not None:
        logger.start(name, tags, parent_run_id=jobs.parent_run_id())
        logger.log(params=tracking.flatten(params_view(config_dict)) | {"model.resolved_revision": weights.revision})
    logging_s = time.perf_counter() - logging_started
    try:
        record = _execute(cfg, root, task, ctx, cases, device, dtype, weights, name, digest, tags, started)
    except KeyboardInterrupt:
        if logger is not None:
            logger.end("KILLED")
        jobs.note_job({"name": name, "status": "KILLED"})
        raise
    except Exception as exc:
        failure = {
            "status": "FAILED",
            "name": name,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        # Never replace a finished record of the same config with a failure: keep the failure beside it.
        failed_path = path
        if path.is_file() and records.read_record(path).get("status") == "FINISHED":
            failed_path = path.with_name(path.stem + ".failed.json")
        base = base_record(cfg, config_dict, weights, device, dtype, name, digest, tags, started)
        records.write_record(failed_path, redact(base | failure))
        if logger is not None:
            logger.log_artifacts({"traceback.txt": failure["traceback"], "config.yaml": config_yaml(config_dict)})
            logger.end("FAILED")
        jobs.note_job({"name": name, "status": "FAILED", "error": failure["error"], "record": str(failed_path)})
        raise
    # Config and tags by key and value; cases by value only (their keys are the task's output schema).
    record = redact({k: v for k, v in record.items() if k != "cases"}) | {"cases": redact_values(record["cases"])}
    records.write_record(path, record)  # before MLflow: a tracking failure below loses no record
    if logger is not None:
        logging_started = time.perf_counter()
        logger.log(metrics=record["metrics"], tags={"course_verdict": record["course_verdict"]})
        logger.log_artifacts(
            {
                "config.yaml": config_yaml(config_dict),
                "outputs.json": json.dumps(record["cases"], indent=2, ensure_ascii=False, default=str),
                "latency_samples_ms.json": json.dumps(record["benchmark"].get("samples_ms", [])),
            }
        )
        logging_s += time.perf_counter() - logging_started
        # Everything MLflow took for this run but this last call; the record is rewritten with it.
        record["metrics"]["logging_ms"] = logging_s * 1000
        logger.log(metrics={"logging_ms": record["metrics"]["logging_ms"]})
        logger.end("FINISHED")
        records.write_record(path, record)
        record["mlflow_run_id"] = logger.run_id
    console.print_run_summary(record)
    jobs.note_job(console.job_line(record, path))
    return RunOutcome("FINISHED", path, logger.run_id if logger else None, record["metrics"])


def _execute(cfg, root, task, ctx, cases, device, dtype, weights, name, digest, tags, started) -> dict[str, Any]:  # noqa: ANN001
    from transformers import set_seed

    loaded, cache_hit = load_pipeline(
        pipeline_task(cfg),
        weights,
        device,
        dtype,
        cfg.model,
        max_models=int(cfg.pipeline_cache.max_models),
        max_memory_mb=cfg.pipeline_cache.max_memory_mb,
    )
    ctx.pipe = loaded.pipe
    cases_started = time.perf_counter()
    results: list[CaseResult] = []
    for case in cases:
        result = CaseResult(case)
        try:
            task.annotate(case, ctx)
            set_seed(cfg.seed)
            t0 = time.perf_counter()
            raw = task.call(loaded.pipe, case)
            result.latency_ms = (time.perf_counter() - t0) * 1000
            result.output = to_jsonable(raw)
            result.problems = task.validate(result.output, case)
            result.valid = not result.problems
            if result.valid:  # an invalid output stays whole in the record: it is the evidence
                result.output = task.recorded(result.output, case)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a case that raises is data: record it and go on
            result.error = f"{type(exc).__name__}: {exc}"
        results.append(result)

    cases_ms = (time.perf_counter() - cases_started) * 1000
    checks = course_checks(cfg, task, results, weights)
    bench_case = next((c for c in cases if c.id == cfg.task.bench_case), cases[0])
    batch = int(cfg.bench.batch_size)
    settings = bench.BenchSettings(
        warmup=int(cfg.bench.warmup),
        min_iterations=int(cfg.bench.min_iterations),
        min_duration_s=float(cfg.bench.min_duration_s),
    )
    set_seed(cfg.seed)
    bench_started = time.perf_counter()
    call = (
        (lambda: task.call(loaded.pipe, bench_case))
        if batch == 1
        else (lambda: task.call_batch(loaded.pipe, bench_case, batch))
    )
    measured = bench.measure(call, settings, items_per_call=batch, device=device)
    bench_metrics = measured.as_metrics()
    bench_metrics |= task.bench_extras(loaded.pipe, bench_case)
    bench_ms = (time.perf_counter() - bench_started) * 1000

    ok = [r for r in results if r.error is None]
    metrics: dict[str, float] = {
        "cases_total": float(len(results)),
        "cases_failed": float(len(results) - len(ok)),
        "cases_invalid": float(sum(1 for r in ok if not r.valid)),
        "schema_valid_rate": sum(r.valid for r in results) / len(results),
        "cold_start_ms": loaded.cold_start_ms,
        "pipeline_cache_hit": float(cache_hit),
        "pipeline_loads_in_process": float(cache_stats()["loads"]),
        # Where the run's time went (the sweep table sums them): weights, the cases, the latency protocol.
        "weights_resolve_ms": weights.resolve_ms,
        "cases_ms": cases_ms,
        "bench_ms": bench_ms,
        "bench_batch_size": float(batch),
    }
    metrics |= bench_metrics
    metrics |= {k: float(v) for k, v in task.summarize(results, ctx).items()}
    if checks["total"]:
        metrics["course_checks_passed"] = float(checks["passed"])
        metrics["course_checks_total"] = float(checks["total"])
    finished = datetime.now(UTC)
    record = base_record(
        cfg, OmegaConf.to_container(cfg, resolve=True), weights, device, dtype, name, digest, tags, started
    )
    record |= {
        "status": "FINISHED",
        "finished_at": finished.isoformat(),
        "duration_s": (finished - started).total_seconds(),
        "environment": environment(root, device),
        "cases": [case_json(r) for r in results],
        "expectations": checks["items"],
        "course_verdict": checks["verdict"],
        "metrics": metrics,
        "benchmark": {
            "bench_case": bench_case.id,
            "settings": {
                "warmup": settings.warmup,
                "min_iterations": settings.min_iterations,
                "min_duration_s": settings.min_duration_s,
                "batch_size": batch,
            },
            "samples_ms": measured.samples_ms,
            "first_call_ms": measured.first_call_ms,
            "cold_start_ms": loaded.cold_start_ms,
            "cache_hit": cache_hit,
        },
    }
    return record
