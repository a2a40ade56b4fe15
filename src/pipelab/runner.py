"""One run: config -> weights -> pipeline -> cases -> checks -> benchmark -> record + MLflow run.

Everything that can be wrong with the config or the inputs is checked before any weights load. A case that
raises is recorded with its error and the run goes on. A run that crashes after it started is marked FAILED
(with its traceback as an artifact and a FAILED record); Ctrl-C or SIGTERM marks it KILLED and writes no record.
"""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pipelab import bench, console, records, sweep, tracking
from pipelab.assets import AssetStore
from pipelab.config import ConfigError, load_model_config, validate_config
from pipelab.devices import resolve_device
from pipelab.redaction import redact, redact_values
from pipelab.schemas import to_jsonable, validate_output
from pipelab.tasks import Case, CaseResult, TaskContext, get_task
from pipelab.weights import ResolvedWeights, resolve_weights


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into the same path as Ctrl-C."""


@dataclass
class LoadedPipeline:
    pipe: Any
    cold_start_ms: float
    loads: int = 1
    uses: int = 0


# Module-level: survives the jobs of one multirun process (basic launcher) and of one joblib worker.
_PIPELINES: dict[tuple[str, ...], LoadedPipeline] = {}
LOAD_COUNT = {"loads": 0}


def pipeline_cache_key(task: str, weights: ResolvedWeights, device: str, dtype: str) -> tuple[str, ...]:
    return (task, str(weights.path), weights.revision, device, dtype)


def load_pipeline(
    task: str, weights: ResolvedWeights, device: str, dtype: str, model_cfg: Any
) -> tuple[LoadedPipeline, bool]:
    """The pipeline for (model, device, dtype), built once per process; (pipeline, cache hit)."""
    key = pipeline_cache_key(task, weights, device, dtype)
    if key in _PIPELINES:
        entry = _PIPELINES[key]
        entry.uses += 1
        return entry, True
    import torch
    from transformers import pipeline

    import pipelab  # noqa: F401  (registers the question-answering/summarization/translation pipelines)

    pipe, cold_ms = bench.time_cold_start(
        lambda: pipeline(
            task,
            model=str(weights.path),
            device=device,
            dtype=getattr(torch, dtype),
            trust_remote_code=bool(model_cfg.trust_remote_code),
            # A pickled pytorch_model.bin (profile.allow_pickle) loads through torch.load(weights_only=True).
            model_kwargs={"use_safetensors": weights.weights_format == "safetensors", "weights_only": True},
        )
    )
    LOAD_COUNT["loads"] += 1
    entry = LoadedPipeline(pipe, cold_ms, uses=1)
    _PIPELINES[key] = entry
    return entry, False


def resolve_model(cfg: DictConfig, root: Path, device: str) -> None:
    """model=auto -> the task's course default (task.default_model_gpu on cuda), in place."""
    if cfg.model.name != "auto":
        return
    name = cfg.task.default_model
    if device == "cuda" and cfg.task.get("default_model_gpu"):
        name = cfg.task.default_model_gpu
    with open_dict(cfg):
        cfg.model = load_model_config(root, name)


def is_prompted(cfg: DictConfig) -> bool:
    """An instruct model doing a task by prompting through text-generation (course PR #1277's alternative)."""
    return cfg.task.name in (cfg.model.get("prompted_tasks") or [])


def pipeline_task(cfg: DictConfig) -> str:
    return "text-generation" if is_prompted(cfg) else cfg.task.pipeline


def ablation_point(cfg: DictConfig) -> dict[str, Any]:
    return {axis: to_jsonable(OmegaConf.select(cfg, axis)) for axis in cfg.ablation.axes}


_SHORT = {
    "temperature": "T",
    "task.label_count": "labels",
    "bench.batch_size": "batch",
    "task.call.max_length": "max_len",
}


def run_name(cfg: DictConfig, weights: str) -> str:
    parts = [cfg.task.name, cfg.model.name + (" (prompted)" if is_prompted(cfg) else "")]
    if cfg.task.name == "text-generation":
        parts.append("greedy" if not cfg.task.generation.do_sample else f"T={cfg.temperature:g}")
    for axis, value in ablation_point(cfg).items():
        if axis not in ("temperature", "model.name"):  # both already in the name
            parts.append(f"{_SHORT.get(axis, axis.rsplit('.', 1)[-1])}={value}")
    if weights == "tiny-random":
        parts.append("[tiny]")
    return " ".join(parts)


def environment(root: Path, device: str) -> dict[str, Any]:
    import torch
    import transformers

    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": __import__("os").cpu_count(),
        "git_commit": commit or "unknown",
        "device_name": device,
    }
    if device == "cuda":
        info["device_name"] = torch.cuda.get_device_name(0)
    return info


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
    name = run_name(cfg, weights.weights)

    uri = tracking.tracking_uri(cfg.tracking.uri, root)
    experiment_id = tracking.ensure_experiment(uri, cfg.tracking.experiment) if cfg.tracking.enabled else None
    if not cfg.rerun and path.is_file() and records.read_record(path).get("status") == "FINISHED":
        finished = experiment_id is None or tracking.find_finished_run(uri, experiment_id, digest)
        if finished:
            console.print_skip(name, path, finished if isinstance(finished, str) else None)
            sweep.note_job(cfg, {"name": name, "status": "SKIPPED", "record": str(path)})
            return RunOutcome("SKIPPED", path, finished if isinstance(finished, str) else None)

    logger = tracking.RunLogger(uri, experiment_id) if experiment_id is not None else None
    tags = {
        "task": cfg.task.name,
        "model": cfg.model.name,
        "model_id": weights.model_id,
        "model_revision": weights.revision,
        "weights": weights.weights,
        "device": device,
        "dtype": dtype,
        "profile": cfg.profile.name,
        "ablation": cfg.ablation.name,
        "pipelab.config_hash": digest,
        "pipelab.record": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
        "course_reproduction": "not claimed: tiny random weights" if weights.weights == "tiny-random" else "checked",
    }
    tags |= weights.tags()
    if cfg.model.trust_remote_code:
        tags["trust_remote_code"] = "true"
    if logger is not None:
        logger.start(name, tags, parent_run_id=sweep.parent_run_id(cfg))
        logger.log(params=tracking.flatten(_params_view(config_dict)) | {"model.resolved_revision": weights.revision})
    try:
        record = _execute(cfg, root, task, ctx, cases, device, dtype, weights, name, digest, tags, started)
    except KeyboardInterrupt:
        if logger is not None:
            logger.end("KILLED")
        sweep.note_job(cfg, {"name": name, "status": "KILLED"})
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
        base = _base_record(cfg, config_dict, weights, device, dtype, name, digest, tags, started)
        records.write_record(failed_path, redact(base | failure))
        if logger is not None:
            logger.log_artifacts({"traceback.txt": failure["traceback"], "config.yaml": _config_yaml(config_dict)})
            logger.end("FAILED")
        sweep.note_job(cfg, {"name": name, "status": "FAILED", "error": failure["error"], "record": str(failed_path)})
        raise
    # Config and tags by key and value; cases by value only (their keys are the task's output schema).
    record = redact({k: v for k, v in record.items() if k != "cases"}) | {"cases": redact_values(record["cases"])}
    records.write_record(path, record)
    if logger is not None:
        logger.log(metrics=record["metrics"], tags={"course_verdict": record["course_verdict"]})
        logger.log_artifacts(
            {
                "config.yaml": _config_yaml(config_dict),
                "outputs.json": json.dumps(record["cases"], indent=2, ensure_ascii=False, default=str),
                "latency_samples_ms.json": json.dumps(record["benchmark"].get("samples_ms", [])),
            }
        )
        logger.end("FINISHED")
        record["mlflow_run_id"] = logger.run_id
    console.print_run_summary(record)
    sweep.note_job(cfg, console.job_line(record, path))
    return RunOutcome("FINISHED", path, logger.run_id if logger else None, record["metrics"])


def _params_view(config: dict[str, Any]) -> dict[str, Any]:
    """The config as params: cases and expectations are counted (the full text is the config.yaml artifact)."""
    view = json.loads(json.dumps(config, default=str))
    task = view.get("task", {})
    task["cases"] = len(task.get("cases", []))
    task["expectations"] = len(task.get("expectations", []))
    return redact(view)


def _config_yaml(config: dict[str, Any]) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(redact(config)))


def _base_record(cfg, config_dict, weights, device, dtype, name, digest, tags, started) -> dict[str, Any]:  # noqa: ANN001
    return {
        "record_version": records.RECORD_VERSION,
        "name": name,
        "task": cfg.task.name,
        "model": {
            "name": cfg.model.name,
            "id": weights.model_id,
            "hub_id": cfg.model.hub_id,
            "revision": weights.revision,
            "weights": weights.weights,
            "weights_revision": weights.weights_revision,
            "weights_pr": weights.weights_pr,
            "weights_format": weights.weights_format,
            "architecture": cfg.model.architecture,
        },
        "device": device,
        "dtype": dtype,
        "profile": cfg.profile.name,
        "ablation": {"name": cfg.ablation.name, "point": ablation_point(cfg)},
        "config_hash": digest,
        "tags": tags,
        "config": redact(config_dict),
        "started_at": started.isoformat(),
    }


def _execute(cfg, root, task, ctx, cases, device, dtype, weights, name, digest, tags, started) -> dict[str, Any]:  # noqa: ANN001
    from transformers import set_seed

    loaded, cache_hit = load_pipeline(pipeline_task(cfg), weights, device, dtype, cfg.model)
    ctx.pipe = loaded.pipe
    aggregated = cfg.task.call.get("aggregation_strategy", "simple") != "none"
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
            result.problems = validate_output(cfg.task.name, result.output, aggregated=aggregated)
            result.valid = not result.problems
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a case that raises is data: record it and go on
            result.error = f"{type(exc).__name__}: {exc}"
        results.append(result)

    checks = _course_checks(cfg, task, results, weights)
    bench_case = next((c for c in cases if c.id == cfg.task.bench_case), cases[0])
    batch = int(cfg.bench.batch_size)
    settings = bench.BenchSettings(
        warmup=int(cfg.bench.warmup),
        min_iterations=int(cfg.bench.min_iterations),
        min_duration_s=float(cfg.bench.min_duration_s),
    )
    set_seed(cfg.seed)
    call = (
        (lambda: task.call(loaded.pipe, bench_case))
        if batch == 1
        else (lambda: task.call_batch(loaded.pipe, bench_case, batch))
    )
    measured = bench.measure(call, settings, items_per_call=batch, device=device)
    bench_metrics = measured.as_metrics()
    if cfg.task.name == "text-generation":
        gen = bench.measure_generation(loaded.pipe, bench_case.input, dict(bench_case.kwargs))
        bench_metrics |= gen.as_metrics()

    ok = [r for r in results if r.error is None]
    metrics: dict[str, float] = {
        "cases_total": float(len(results)),
        "cases_failed": float(len(results) - len(ok)),
        "cases_invalid": float(sum(1 for r in ok if not r.valid)),
        "schema_valid_rate": sum(r.valid for r in results) / len(results),
        "cold_start_ms": loaded.cold_start_ms,
        "pipeline_cache_hit": float(cache_hit),
        "pipeline_loads_in_process": float(LOAD_COUNT["loads"]),
        "weights_resolve_ms": weights.resolve_ms,
        "bench_batch_size": float(batch),
    }
    metrics |= bench_metrics
    metrics |= {k: float(v) for k, v in task.summarize(results, ctx).items()}
    if checks["total"]:
        metrics["course_checks_passed"] = float(checks["passed"])
        metrics["course_checks_total"] = float(checks["total"])
    finished = datetime.now(UTC)
    record = _base_record(
        cfg, OmegaConf.to_container(cfg, resolve=True), weights, device, dtype, name, digest, tags, started
    )
    record |= {
        "status": "FINISHED",
        "finished_at": finished.isoformat(),
        "duration_s": (finished - started).total_seconds(),
        "environment": environment(root, device),
        "cases": [_case_json(r) for r in results],
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


def _case_json(r: CaseResult) -> dict[str, Any]:
    return {
        "id": r.case.id,
        "kind": r.case.kind,
        "input": to_jsonable(r.case.display),
        "kwargs": to_jsonable(r.case.kwargs),
        "output": r.output,
        "valid": r.valid,
        "problems": r.problems,
        "error": r.error,
        "notes": r.case.notes,
        "latency_ms": r.latency_ms,
    }


def _course_checks(cfg: DictConfig, task: Any, results: list[CaseResult], weights: ResolvedWeights) -> dict[str, Any]:
    """Course expectations: checked on pretrained weights of the course's default model only."""
    expectations = OmegaConf.to_container(cfg.task.expectations, resolve=True) or []
    if weights.weights == "tiny-random":
        return {"total": 0, "passed": 0, "items": [], "verdict": "tiny weights: not checked"}
    if not expectations:
        return {"total": 0, "passed": 0, "items": [], "verdict": "no course expectation for this task"}
    course_models = {cfg.task.default_model, cfg.task.get("default_model_gpu")}
    if cfg.model.name not in course_models:
        return {
            "total": 0,
            "passed": 0,
            "items": [],
            "verdict": f"not checked: {cfg.model.name} is not the course model",
        }
    by_id = {r.case.id: r for r in results}
    items = []
    for exp in expectations:
        r = by_id.get(exp["case"])
        if r is None or r.error or not r.valid:
            why = "case missing" if r is None else (r.error or "; ".join(r.problems))
            items.append({"case": exp["case"], "passed": False, "detail": f"no valid output: {why}"})
            continue
        passed, detail = task.check_expectation(exp, r.output)
        items.append({"case": exp["case"], "passed": bool(passed), "detail": detail})
    passed = sum(i["passed"] for i in items)
    verdict = (
        f"reproduces the course ({passed}/{len(items)})"
        if passed == len(items)
        else f"differs from the course ({passed}/{len(items)} checks pass)"
    )
    return {"total": len(items), "passed": passed, "items": items, "verdict": verdict}
