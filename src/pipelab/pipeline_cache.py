"""Loaded pipelines, kept for the life of the process: one load per (task, weights, device, dtype, quantization,
runtime).

Module-level, so it serves every job of one multirun process (basic launcher), of one joblib worker, and every
sweep of a DVC stage (stages/sweep_task.py runs them all in one process). The load is timed as the run's cold
start; a cache hit says so in the run's metrics. The cache is least-recently-used: before a new load, pipelines
are dropped until fewer than ``pipeline_cache.max_models`` remain and, with ``pipeline_cache.max_memory_mb``,
until the kept weights plus the new model's weight files fit the budget, so a stage that walks through several
large models does not hold them all. Quantization and runtime are part of the key, so an fp32 and an int8
pipeline of the same weights (or a PyTorch and an ONNX Runtime one) are never mixed up: both can be held at once,
which is what a quantized run's comparison with its fp32 reference needs.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pipelab import bench, quantization
from pipelab.weights import ResolvedWeights

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
#: The variant of a model no option asks for: its own float weights, run by PyTorch.
REFERENCE = ("none", "torch")


@dataclass
class LoadedPipeline:
    pipe: Any
    cold_start_ms: float
    weight_bytes: int = 0  # parameters and buffers in memory (an ONNX model: its weights on disk)
    loads: int = 1
    uses: int = 0
    export_ms: float | None = None  # runtime=onnxruntime: the export's time (when it ran, not this load's)
    export_cached: bool = False  # the ONNX file came from data/onnx, exported by an earlier run


_PIPELINES: OrderedDict[tuple[str, ...], LoadedPipeline] = OrderedDict()
_STATS = {"loads": 0, "hits": 0, "evictions": 0}


def cache_stats() -> dict[str, int]:
    """Loads, hits and evictions of this process so far, and how many pipelines are held now."""
    return dict(_STATS) | {"held": len(_PIPELINES)}


def pipeline_cache_key(
    task: str, weights: ResolvedWeights, device: str, dtype: str, variant: tuple[str, str] = REFERENCE
) -> tuple[str, ...]:
    """(task, weights, revision, device, dtype, quantization, runtime)."""
    return (task, str(weights.path), weights.revision, device, dtype, *variant)


def _model_bytes(pipe: Any) -> int:
    model = getattr(pipe, "model", None)
    size = getattr(model, "weight_bytes", None)  # the ONNX Runtime adapter knows its own
    if isinstance(size, int):
        return size
    return quantization.weight_bytes(model)


def _file_bytes(weights: ResolvedWeights) -> int:
    """What the new model will take, before it loads: the size of its weight files."""
    if not weights.path.is_dir():
        return 0
    return sum(p.stat().st_size for p in weights.path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())


def _evict(max_models: int, max_memory_mb: float | None, incoming_bytes: int) -> None:
    dropped = False
    while _PIPELINES and len(_PIPELINES) >= max_models:
        _PIPELINES.popitem(last=False)
        _STATS["evictions"] += 1
        dropped = True
    if max_memory_mb is not None:
        budget = max_memory_mb * bench.BYTES_PER_MB
        while _PIPELINES and sum(e.weight_bytes for e in _PIPELINES.values()) + incoming_bytes > budget:
            _PIPELINES.popitem(last=False)
            _STATS["evictions"] += 1
            dropped = True
    if dropped:
        gc.collect()  # the dropped model's tensors go now, before the next one loads


def load_pipeline(
    task: str,
    weights: ResolvedWeights,
    device: str,
    dtype: str,
    model_cfg: Any,
    *,
    max_models: int = 3,
    max_memory_mb: float | None = None,
    variant: tuple[str, str] = REFERENCE,
    export_dir: Any = None,
) -> tuple[LoadedPipeline, bool]:
    """The pipeline for (model, device, dtype, (quantization, runtime)), built once per process; (pipeline, hit).

    runtime=onnxruntime exports the model once into `export_dir` (pipelab.onnx_runtime) and wraps the session so
    the same pipeline() runs it; its cold start is the session and pipeline construction, the export is timed apart.
    """
    method, runtime = variant
    key = pipeline_cache_key(task, weights, device, dtype, variant)
    if key in _PIPELINES:
        entry = _PIPELINES[key]
        _PIPELINES.move_to_end(key)
        entry.uses += 1
        _STATS["hits"] += 1
        return entry, True
    _evict(max_models, max_memory_mb, _file_bytes(weights))
    import torch
    from transformers import pipeline

    import pipelab  # noqa: F401  (registers the question-answering/summarization/translation pipelines)

    def build() -> Any:
        pipe = pipeline(
            task,
            model=str(weights.path),
            device=device,
            dtype=getattr(torch, dtype),
            trust_remote_code=bool(model_cfg.trust_remote_code),
            # A pickled pytorch_model.bin (profile.allow_pickle) loads through torch.load(weights_only=True).
            model_kwargs={"use_safetensors": weights.weights_format == "safetensors", "weights_only": True}
            | quantization.model_kwargs(method),
        )
        quantization.apply(pipe, method)
        return pipe

    export_ms, export_cached = None, False
    if runtime == "onnxruntime":
        from pipelab import onnx_runtime

        torch_pipe = build()  # the exporter traces the PyTorch model; the export is cached per revision
        exported = onnx_runtime.export(torch_pipe, task, weights, export_dir)
        export_ms, export_cached = exported.export_ms, exported.cached
        pipe, cold_ms = bench.time_cold_start(lambda: onnx_runtime.onnx_pipeline(task, torch_pipe, exported, device))
        del torch_pipe
    else:
        pipe, cold_ms = bench.time_cold_start(build)
    _STATS["loads"] += 1
    entry = LoadedPipeline(
        pipe, cold_ms, weight_bytes=_model_bytes(pipe), uses=1, export_ms=export_ms, export_cached=export_cached
    )
    _PIPELINES[key] = entry
    return entry, False
