"""What a run is called and what its record and MLflow run hold: name, ablation point, tags, params, record body.

records.py writes and reads records; this module builds their content from a run's config and results.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf._utils import OmegaConfDumper

from pipelab import records, tracking
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


def name_parts(cfg: DictConfig, task: Task, weights: str) -> dict[str, str]:
    """The parts of a run's name, each under the config key it shows (`task`, `model`, `temperature`, ...).

    The full name joins them all; a sweep's child run shows only the parts of the keys its sweep varies.
    """
    parts = {"task": cfg.task.name, "model": cfg.model.name + (" (prompted)" if is_prompted(cfg) else "")}
    parts |= task.run_name_parts(cfg)
    for axis, value in ablation_point(cfg).items():
        key = axis.removesuffix(".name")  # model.name is the `model` group's choice
        parts.setdefault(key, f"{_SHORT.get(axis, axis.rsplit('.', 1)[-1])}={value}")
    if weights == "tiny-random":
        parts["weights"] = "[tiny]"
    return parts


def run_name(cfg: DictConfig, task: Task, weights: str) -> str:
    """The full name of a run (its record's `name`), e.g. `text-generation gpt2 T=0.7 [tiny]`."""
    return " ".join(name_parts(cfg, task, weights).values())


def point_name(cfg: DictConfig, task: Task, weights: str, point: dict[str, str]) -> str:
    """A sweep child's name: what its sweep varies, at this job's values (`T=0.7`, `ner`, `top_k`).

    `point` maps each varied override key to this job's value as typed. A key the full name shows (task,
    model, an ablation axis, the task's own parts) keeps that part; a config group shows its choice; any
    other key `key=value`. No varied key: the full name.
    """
    if not point:
        return run_name(cfg, task, weights)
    parts = name_parts(cfg, task, weights)
    labels = []
    for key, value in point.items():
        if key in parts:
            labels.append(parts[key])
        elif "." not in key and _is_group(cfg, key):
            labels.append(value)  # a config group (decoding=top_k): its choice names itself
        else:
            labels.append(f"{_SHORT.get(key, key.rsplit('.', 1)[-1])}={value}")
    return " ".join(labels)


def _is_group(cfg: DictConfig, key: str) -> bool:
    """A top-level key whose value is a config node, or that is no key at all (a `_global_` group: decoding)."""
    missing = object()
    node = OmegaConf.select(cfg, key, default=missing)
    return node is missing or isinstance(node, DictConfig)


def dataset_rows(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What went into a run, as its MLflow dataset: each case's id, kind and input (a record's `cases` or the
    prepared ones), without settings or outputs, so runs on the same inputs share a digest."""
    return [{key: case.get(key) for key in ("id", "kind", "input")} for case in cases]


def dataset_name(task_name: str, rows: list[dict[str, Any]]) -> str:
    return f"{task_name}: {len(rows)} cases"


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


class _ConfigDumper(yaml.CDumper):
    """OmegaConf's YAML (`OmegaConf.to_yaml`: strings that read as a bool or a number quoted), by libyaml's emitter.

    A run's config is plain data already (resolved to a container), so building a DictConfig only to dump it cost
    ~40 ms a run (~3 s of the tiny grid); this dumps the same data with the same representers in ~4 ms.
    """


_ConfigDumper.add_representer(str, OmegaConfDumper.str_representer)


def config_yaml(config: dict[str, Any]) -> str:
    """The run's config.yaml artifact: what `OmegaConf.to_yaml` gives for it (tests compare), secrets redacted."""
    return yaml.dump(
        redact(config), Dumper=_ConfigDumper, default_flow_style=False, allow_unicode=True, sort_keys=False
    )


def mlflow_params(config: dict[str, Any], resolved_revision: str) -> dict[str, str]:
    """A run's MLflow params: the flattened config view and the resolved model revision."""
    return tracking.flatten(params_view(config)) | {"model.resolved_revision": resolved_revision}


def mlflow_artifacts(record: dict[str, Any]) -> dict[str, str]:
    """A run's MLflow artifacts, from its record (the run logs them, and sync does for a run that could not)."""
    files = {"config.yaml": config_yaml(record["config"])}
    if record["status"] == "FINISHED":
        files["outputs.json"] = json.dumps(record["cases"], indent=2, ensure_ascii=False, default=str)
        files["latency_samples_ms.json"] = json.dumps(record["benchmark"].get("samples_ms", []))
    else:
        files["traceback.txt"] = record.get("traceback", "")
    return files


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
    scored = {"language": r.case.language, "gold": to_jsonable(r.case.gold)} if r.case.gold is not None else {}
    return {
        "id": r.case.id,
        "kind": r.case.kind,
        **scored,
        "input": to_jsonable(r.case.display),
        "kwargs": to_jsonable(r.case.kwargs),
        "output": r.output,
        "valid": r.valid,
        "problems": r.problems,
        "error": r.error,
        "notes": r.case.notes,
        "latency_ms": r.latency_ms,
    }
