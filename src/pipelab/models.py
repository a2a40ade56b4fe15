"""Which model a composed config runs: model=auto -> the task's course default, and prompted tasks."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from pipelab.config import ModelSchema, load_model_config


def resolve_model(cfg: DictConfig, root: Path, device: str) -> None:
    """model=auto -> the task's course default (task.default_model_gpu on cuda), in place.

    Keys given on the command line with model=auto (`model.path=/my/checkpoint`) stay over the default's config.
    """
    if cfg.model.name != "auto":
        return
    name = cfg.task.default_model
    if device == "cuda" and cfg.task.get("default_model_gpu"):
        name = cfg.task.default_model_gpu
    unset = OmegaConf.to_container(OmegaConf.structured(ModelSchema(name="auto")))
    given = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name" and v != unset.get(k)}
    with open_dict(cfg):
        cfg.model = OmegaConf.merge(load_model_config(root, name), given)


def is_prompted(cfg: DictConfig) -> bool:
    """An instruct model doing a task by prompting through text-generation (course PR #1277's alternative)."""
    return cfg.task.name in (cfg.model.get("prompted_tasks") or [])


def pipeline_task(cfg: DictConfig) -> str:
    """The transformers pipeline the run loads: the task's own, or text-generation for a prompted task."""
    return "text-generation" if is_prompted(cfg) else cfg.task.pipeline
