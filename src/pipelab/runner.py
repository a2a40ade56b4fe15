"""One run: config -> weights -> pipeline -> cases -> checks -> benchmark -> record + MLflow run.

Everything that can be wrong with the config or the inputs is checked before any weights load. A case that
raises is recorded with its error and the run goes on. A run that crashes after it started is marked FAILED
(with its traceback as an artifact and a FAILED record); Ctrl-C or SIGTERM marks it KILLED and writes no record.
"""

from __future__ import annotations

import copy
import signal
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pipelab import bench, console, jobs, progress, quantization, records, stage_timing, tracking
from pipelab.assets import AssetStore
from pipelab.checks import course_checks
from pipelab.config import ConfigError, validate_config
from pipelab.devices import resolve_device
from pipelab.environment import environment
from pipelab.models import is_prompted, pipeline_task, resolve_model
from pipelab.pipeline_cache import REFERENCE, cache_stats, load_pipeline
from pipelab.redaction import redact, redact_values
from pipelab.run_record import (
    base_record,
    case_json,
    config_yaml,
    dataset_name,
    dataset_rows,
    mlflow_artifacts,
    mlflow_params,
    point_name,
    run_name,
    run_tags,
)
from pipelab.schemas import to_jsonable
from pipelab.tasks import Case, CaseResult, TaskContext, get_task
from pipelab.weights import resolve_weights

#: Statuses of a record that an identical config need not run again.
DONE_STATUSES = ("FINISHED", "UNSUPPORTED")


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
    uri = tracking.tracking_uri(cfg.tracking.uri, root)
    experiment_id = _experiment_if_store_answers(cfg, uri)  # first: a dead store costs seconds, not a model load
    state = _tracking_state(cfg, uri, experiment_id)
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
    progress.update(name=name, phase="checking the store")

    if not cfg.rerun and path.is_file() and records.read_record(path).get("status") in DONE_STATUSES:
        previous = records.read_record(path).get("tracking") or {}
        waiting = bool(previous.get("enabled")) and previous.get("logged") is False  # stages/sync.py logs it
        finished: str | bool | None = experiment_id is None or waiting  # judged on the record alone
        if not finished:
            try:
                finished = tracking.find_finished_run(uri, experiment_id, digest)
            except Exception:  # noqa: BLE001 (the store died since the check: the record decides)
                finished = True
        if finished:
            console.print_skip(name, path, finished if isinstance(finished, str) else None, waiting_for_sync=waiting)
            jobs.note_job({"name": name, "status": "SKIPPED", "record": str(path)})
            return RunOutcome("SKIPPED", path, finished if isinstance(finished, str) else None)

    logger = tracking.RunLogger(uri, experiment_id, tolerant=True) if experiment_id is not None else None
    tags = run_tags(cfg, weights, device, dtype, digest, path, root)
    logging_started = time.perf_counter()
    if logger is not None:
        parent = jobs.parent_run_id()
        # Under a sweep's parent run the name says only what the sweep varies (T=0.7): the parent says the rest.
        mlflow_name = point_name(cfg, task, weights.weights, jobs.sweep_point()) if parent else name
        logger.start(mlflow_name, tags | {tracking.RECORD_ID_TAG: state["record_id"]}, parent_run_id=parent)
        logger.log(params=mlflow_params(config_dict, weights.revision))
        inputs = dataset_rows([{"id": c.id, "kind": c.kind, "input": to_jsonable(c.display)} for c in cases])
        inputs = redact_values(inputs)
        logger.log_dataset(dataset_name(cfg.task.name, inputs), inputs, f"conf/task/{cfg.task.name}.yaml")
    logging_s = time.perf_counter() - logging_started
    unsupported = unsupported_reason(cfg, task, device)
    if unsupported is not None:
        return _record_unsupported(
            cfg, config_dict, weights, device, dtype, name, digest, tags, started, path, logger, unsupported
        )
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
        failed_record = redact(base | failure) | {"tracking": state}
        records.write_record(failed_path, failed_record)
        if logger is not None:
            logger.log_artifacts(mlflow_artifacts(failed_record))
            logger.end("FAILED")
            _mark_logged(failed_path, failed_record, logger)
        jobs.note_job(
            {"name": name, "status": "FAILED", "error": failure["error"], "record": str(failed_path)}
            | _logged_column(failed_record)
        )
        raise
    # Config and tags by key and value; cases by value only (their keys are the task's output schema).
    record = redact({k: v for k, v in record.items() if k != "cases"}) | {"cases": redact_values(record["cases"])}
    record["tracking"] = state
    records.write_record(path, record)  # before MLflow, marked not logged: a tracking failure below loses nothing
    if logger is not None:
        progress.update(phase="logging to MLflow")
        logging_started = time.perf_counter()
        logger.log(metrics=record["metrics"], tags={"course_verdict": record["course_verdict"]})
        logger.log_artifacts(mlflow_artifacts(record))
        logging_s += time.perf_counter() - logging_started
        # Everything MLflow took for this run but this last call; the record is rewritten with it.
        record["metrics"]["logging_ms"] = logging_s * 1000
        logger.log(metrics={"logging_ms": record["metrics"]["logging_ms"]})
        logger.end("FINISHED")
        _mark_logged(path, record, logger)
        record["mlflow_run_id"] = logger.run_id
    console.print_run_summary(record)
    jobs.note_job(console.job_line(record, path) | _logged_column(record))
    return RunOutcome("FINISHED", path, logger.run_id if logger else None, record["metrics"])


def _experiment_if_store_answers(cfg: DictConfig, uri: str) -> str | None:
    """The experiment id, or None when tracking is off or the store does not answer (tracking.required=false).

    A single run checks the store itself (TrackingUnavailable if required); a sweep's job takes the sweep's
    verdict, checked once before its first job, so a store that dies mid-sweep fails no job.
    """
    if not cfg.tracking.enabled:
        return None
    if jobs.sweep_info() is not None:
        if jobs.tracking_down_in_sweep():
            return None
    elif not tracking.require_store(uri, bool(cfg.tracking.required)):
        return None
    try:
        return tracking.ensure_experiment(uri, cfg.tracking.experiment)
    except Exception as exc:  # noqa: BLE001 (it answered the check, then failed: keep the record, log later)
        print(f"pipelab: warning: MLflow at {tracking.display_uri(uri)} failed ({exc}); record marked not logged")
        return None


def _tracking_state(cfg: DictConfig, uri: str, experiment_id: str | None) -> dict[str, Any]:
    """The record's `tracking` field: where the run belongs in MLflow and whether it got there (sync reads it)."""
    if not cfg.tracking.enabled:
        return {"enabled": False, "logged": False}
    return {
        "enabled": True,
        "logged": False,  # until the MLflow run has ended: a record is never marked logged before it is
        "uri": tracking.display_uri(uri),
        "experiment": str(cfg.tracking.experiment),
        "record_id": uuid.uuid4().hex,  # the MLflow tag sync looks the run up by: no run is created twice
        "run_id": None,
        "sweep": jobs.sweep_info(),
        "error": None if experiment_id is not None else "the tracking store did not answer",
    }


def _mark_logged(path: Path, record: dict[str, Any], logger: tracking.RunLogger) -> None:
    record["tracking"] = record["tracking"] | {"logged": logger.logged, "run_id": logger.run_id, "error": logger.error}
    records.write_record(path, record)


def _logged_column(record: dict[str, Any]) -> dict[str, Any]:
    state = record.get("tracking") or {}
    return {"logged": state["logged"]} if state.get("enabled") else {}


def unsupported_reason(cfg: DictConfig, task: Any, device: str) -> str | None:
    """Why this run's quantization or runtime cannot run here (recorded as an UNSUPPORTED point), or None."""
    reason = quantization.unsupported_reason(cfg.quantization, device)
    if reason is None and cfg.runtime == "onnxruntime":
        from pipelab import onnx_runtime

        reason = onnx_runtime.unsupported_reason(task, device, cfg.quantization, is_prompted(cfg))
    return reason


def _record_unsupported(
    cfg, config_dict, weights, device, dtype, name, digest, tags, started, path, logger, reason
) -> RunOutcome:  # noqa: ANN001
    """A point that cannot run here is data, not a crash: a record and an MLflow run that say why."""
    finished = datetime.now(UTC)
    record = base_record(cfg, config_dict, weights, device, dtype, name, digest, tags, started) | {
        "status": "UNSUPPORTED",
        "unsupported": reason,
        "finished_at": finished.isoformat(),
        "duration_s": (finished - started).total_seconds(),
        "metrics": {},
        "cases": [],
    }
    record = redact(record)
    records.write_record(path, record)
    run_id = None
    if logger is not None:
        logger.log(tags={"unsupported": reason[:5000]})
        logger.log_artifacts({"config.yaml": config_yaml(config_dict)})
        logger.end("FINISHED")  # MLflow has no status for "not supported here"; the tag says it
        run_id = logger.run_id
    print(f"\n== {name} ==\nnot supported here: {reason}", flush=True)
    jobs.note_job({"name": name, "status": "UNSUPPORTED", "error": reason, "record": str(path)})
    return RunOutcome("UNSUPPORTED", path, run_id)


def _run_cases(task: Any, ctx: TaskContext, pipe: Any, cases: list[Case], seed: int) -> list[CaseResult]:
    """Every case through `pipe`: output, schema check and what the record keeps; a case that raises is data."""
    from transformers import set_seed

    ctx.pipe = pipe
    results: list[CaseResult] = []
    for number, case in enumerate(cases, 1):
        progress.update(phase="cases", case=number, cases=len(cases), case_id=case.id)
        result = CaseResult(case)
        try:
            task.annotate(case, ctx)
            set_seed(seed)
            t0 = time.perf_counter()
            raw = task.call(pipe, case)
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
    return results


def _bench_call(task: Any, pipe: Any, case: Case, batch: int) -> Any:
    if batch == 1:
        return lambda: task.call(pipe, case)
    return lambda: task.call_batch(pipe, case, batch)


def _execute(cfg, root, task, ctx, cases, device, dtype, weights, name, digest, tags, started) -> dict[str, Any]:  # noqa: ANN001
    from transformers import set_seed

    variant = (str(cfg.quantization), str(cfg.runtime))

    def load(which: tuple[str, str]) -> Any:
        return load_pipeline(
            pipeline_task(cfg),
            weights,
            device,
            dtype,
            cfg.model,
            max_models=int(cfg.pipeline_cache.max_models),
            max_memory_mb=cfg.pipeline_cache.max_memory_mb,
            variant=which,
            export_dir=root / cfg.data_dir / "onnx",
        )

    progress.update(phase="loading the model")
    loaded, cache_hit = load(variant)
    cases_started = time.perf_counter()
    results = _run_cases(task, ctx, loaded.pipe, cases, cfg.seed)
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
    progress.update(phase="bench loop")
    bench_started = time.perf_counter()
    call = _bench_call(task, loaded.pipe, bench_case, batch)
    measured = bench.measure(call, settings, items_per_call=batch, device=device)
    bench_metrics = measured.as_metrics()
    bench_metrics |= task.bench_extras(loaded.pipe, bench_case)
    if int(cfg.bench.stage_calls):  # separate calls: the wrappers never touch the timed loop above
        bench_metrics |= stage_timing.time_stages(loaded.pipe, call, int(cfg.bench.stage_calls))
    bench_ms = (time.perf_counter() - bench_started) * 1000
    comparison: dict[str, float] = {}
    if variant != REFERENCE or cfg.compare_to_reference:
        comparison = _compare_to_reference(
            cfg, task, ctx, cases, results, loaded, measured, load, settings, bench_case, device
        )
        ctx.pipe = loaded.pipe

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
    metrics |= comparison
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


def _compare_to_reference(
    cfg, task, ctx, cases, results, loaded, measured, load, settings, bench_case, device
) -> dict[str, float]:  # noqa: ANN001, E501
    """This variant against the reference (quantization none, runtime torch) of the same weights, in this run.

    The reference's outputs come from the same cases run here, not from another run's record: the same process,
    seed and inputs, whatever order the sweep's points run in (or whether the reference point ran at all), and the
    record's reduced outputs (feature-extraction keeps cosines) are compared like for like. Its latency is measured
    with the same protocol right after this variant's, so the ratio compares two runs of one moment of a shared
    machine. The reference point itself compares with itself (ratio 1, full agreement) so every point has the
    same columns.
    """
    from transformers import set_seed

    size = {"weight_mb": loaded.weight_bytes / bench.BYTES_PER_MB}
    if loaded.export_ms is not None:
        size |= {"export_ms": loaded.export_ms, "export_cached": float(loaded.export_cached)}
    if (str(cfg.quantization), str(cfg.runtime)) == REFERENCE:
        return (
            size
            | {"latency_p50_ratio_to_reference": 1.0, "weight_ratio_to_reference": 1.0}
            | task.agreement(results, results)
        )
    reference, _ = load(REFERENCE)
    reference_cases = copy.deepcopy(cases)  # annotate may rewrite inputs (fill-mask's mask token): start afresh
    reference_results = _run_cases(task, ctx, reference.pipe, reference_cases, cfg.seed)
    set_seed(cfg.seed)
    ref_case = next(c for c in reference_cases if c.id == bench_case.id)
    ref_measured = bench.measure(
        _bench_call(task, reference.pipe, ref_case, int(cfg.bench.batch_size)), settings, device=device
    )
    ratio = measured.stats.p50 / ref_measured.stats.p50 if ref_measured.stats.p50 > 0 else float("nan")
    return (
        size
        | {
            "reference_latency_p50_ms": ref_measured.stats.p50,
            "latency_p50_ratio_to_reference": ratio,
            "weight_ratio_to_reference": loaded.weight_bytes / reference.weight_bytes
            if reference.weight_bytes
            else 0.0,
        }
        | task.agreement(results, reference_results)
    )
