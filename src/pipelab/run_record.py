"""What a run is called and what its record and MLflow run hold: name, ablation point, tags, params, record body.

records.py writes and reads records; this module builds their content from a run's config and results.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipelab import records
from pipelab.models import is_prompted
from pipelab.redaction import redact
from pipelab.schemas import to_jsonable
from pipelab.tasks import CaseResult, Task
from pipelab.weights import ResolvedWeights

_SHORT = {
    "temperature": "T",
    "task.label_count": "labels",
    "bench.batch_size": "batch",
    "task.call.max_length": "max_len",
}


def ablation_point(cfg: DictConfig) -> dict[str, Any]:
    return {axis: to_jsonable(OmegaConf.select(cfg, axis)) for axis in cfg.ablation.axes}


def run_name(cfg: DictConfig, task: Task, weights: str) -> str:
    parts = [cfg.task.name, cfg.model.name + (" (prompted)" if is_prompted(cfg) else "")]
    parts += task.run_name_parts(cfg)
    for axis, value in ablation_point(cfg).items():
        if axis not in ("temperature", "model.name"):  # both already in the name
            parts.append(f"{_SHORT.get(axis, axis.rsplit('.', 1)[-1])}={value}")
    if weights == "tiny-random":
        parts.append("[tiny]")
    return " ".join(parts)


def run_tags(
    cfg: DictConfig, weights: ResolvedWeights, device: str, dtype: str, digest: str, path: Path, root: Path
) -> dict[str, str]:
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
    return tags


def params_view(config: dict[str, Any]) -> dict[str, Any]:
    """The config as params: cases and expectations are counted (the full text is the config.yaml artifact)."""
    view = json.loads(json.dumps(config, default=str))
    task = view.get("task", {})
    task["cases"] = len(task.get("cases", []))
    task["expectations"] = len(task.get("expectations", []))
    return redact(view)


def config_yaml(config: dict[str, Any]) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(redact(config)))


def base_record(
    cfg: DictConfig,
    config_dict: dict[str, Any],
    weights: ResolvedWeights,
    device: str,
    dtype: str,
    name: str,
    digest: str,
    tags: dict[str, str],
    started: datetime,
) -> dict[str, Any]:
    """The part of a record every run has, finished or failed."""
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


def case_json(r: CaseResult) -> dict[str, Any]:
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
