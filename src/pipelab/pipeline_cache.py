"""Loaded pipelines, kept for the life of the process: one load per (task, weights, device, dtype).

Module-level, so it serves every job of one multirun process (basic launcher) and of one joblib worker. The
load is timed as the run's cold start; a cache hit says so in the run's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelab import bench
from pipelab.weights import ResolvedWeights


@dataclass
class LoadedPipeline:
    pipe: Any
    cold_start_ms: float
    loads: int = 1
    uses: int = 0


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
