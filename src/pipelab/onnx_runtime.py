"""runtime=onnxruntime: a pipeline's model exported once to ONNX and run by ONNX Runtime inside the same pipeline().

optimum-onnx cannot be installed beside transformers 5 (it requires transformers < 4.58), so the export is plain
``torch.onnx.export(..., dynamo=True)`` with a dynamic batch and sequence length, and :class:`OnnxModel` is the
small adapter that looks like the model to ``pipeline()``: it has the model's config, takes the tokenizer's (or
image processor's) tensors as keyword arguments and returns the model's own output class, so the pipeline's
preprocess and postprocess run unchanged and only ``_forward``'s model call goes to the ONNX Runtime session.

Exports are cached in ``data/onnx/<model>/<revision>-<settings hash>/`` (``model.onnx`` and ``export.json`` with
the export's duration): the model revision (a hub pin or a tiny spec hash) and a hash of everything that shapes
the graph (task, model class, input and output names, opset, torch and onnx versions), so a second run, or
another sweep of the same model, loads the file instead of exporting again.

Supported: the encoder tasks, whose pipeline makes one forward pass per input (``Task.generates`` is False).
A generating task, a device other than the CPU, or a quantized model is refused before anything loads, with
the reason recorded as the point's result.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPSET = 20
_EXPORT_FILE = "model.onnx"
_META_FILE = "export.json"


def unsupported_reason(task: Any, device: str, quantization: str, prompted: bool = False) -> str | None:
    """Why runtime=onnxruntime cannot run this task here (a sentence for the record), or None."""
    if task.generates or prompted:
        return (
            f"runtime=onnxruntime runs the pipelines that make one forward pass per input (the encoder tasks); "
            f"{task.name} generates with model.generate, a decoding loop over an exported decoder that pipelab "
            "does not build"
        )
    if device != "cpu":
        return (
            f"runtime=onnxruntime uses ONNX Runtime's CPU build (CPUExecutionProvider); this run's device is {device}"
        )
    if quantization != "none":
        return f"runtime=onnxruntime exports the float model; quantization={quantization} is a PyTorch-side option"
    return None


@dataclass(frozen=True)
class Exported:
    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    output_class: str  # transformers.modeling_outputs class the adapter returns
    export_ms: float  # how long the export took when it ran
    cached: bool  # this run found it in the cache


def _sample_inputs(pipe: Any) -> dict[str, Any]:
    """A batch of two inputs of different lengths as the pipeline's processor makes them (dims vary at export)."""
    if getattr(pipe, "tokenizer", None) is not None:
        return dict(
            pipe.tokenizer(
                ["A short one.", "A somewhat longer second sentence for the export."],
                ["and a pair", "with its second text"],
                padding=True,
                return_tensors="pt",
            )
        )
    processor = pipe.image_processor or pipe.feature_extractor
    if processor is None:
        raise ValueError("the pipeline has neither a tokenizer nor an image processor to make export inputs")
    from PIL import Image

    images = [Image.new("RGB", (64, 48), (120, 30, 200)), Image.new("RGB", (32, 80), (10, 200, 90))]
    return dict(processor(images=images, return_tensors="pt"))


def _settings_hash(pipe: Any, task: str, names: list[str], outputs: list[str]) -> str:
    import onnx
    import torch

    settings = {
        "task": task,
        "model_class": type(pipe.model).__name__,
        "inputs": names,
        "outputs": outputs,
        "opset": OPSET,
        "dynamo": True,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def export(pipe: Any, task: str, weights: Any, export_dir: Path | None) -> Exported:
    """The ONNX file of `pipe.model` (a float PyTorch model), exported now or found in the cache."""
    import torch

    if export_dir is None:
        raise ValueError("runtime=onnxruntime needs a directory for its exports (data/onnx)")
    model = pipe.model.eval()
    accepted = set(inspect.signature(model.forward).parameters)
    sample = {k: v for k, v in _sample_inputs(pipe).items() if k in accepted}
    names = list(sample)
    with torch.no_grad():
        reference = model(**sample, return_dict=True)
    outputs = [k for k, v in reference.items() if isinstance(v, torch.Tensor)]
    model_slug = re.sub(r"[^A-Za-z0-9._-]+", "_", weights.model_id).strip("_")
    folder = (
        Path(export_dir) / model_slug / f"{str(weights.revision)[:16]}-{_settings_hash(pipe, task, names, outputs)}"
    )
    meta_path = folder / _META_FILE
    if meta_path.is_file() and (folder / _EXPORT_FILE).is_file():
        meta = json.loads(meta_path.read_text())
        return Exported(
            folder / _EXPORT_FILE,
            tuple(meta["inputs"]),
            tuple(meta["outputs"]),
            meta["output_class"],
            meta["export_ms"],
            True,
        )

    class Positional(torch.nn.Module):
        """The model with positional inputs and a tuple of tensors out: what the exporter traces."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            out = self.model(**dict(zip(names, args, strict=True)), return_dict=True)
            return tuple(out[k] for k in outputs)

    batch, length = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("sequence", min=1, max=1_000_000)
    shapes = tuple({0: batch} if name == "pixel_values" else {0: batch, 1: length} for name in names)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{_EXPORT_FILE}.partial"
    started = time.perf_counter()
    program = torch.onnx.export(
        Positional().eval(),
        tuple(sample[n] for n in names),
        dynamo=True,
        dynamic_shapes={"args": shapes},  # forward(*args): the specs of the one var-positional parameter
        input_names=names,
        output_names=outputs,
        opset_version=OPSET,
        verbose=False,
    )
    program.save(str(partial))  # weights inside the file (all the models here are far below protobuf's 2 GB)
    export_ms = (time.perf_counter() - started) * 1000
    partial.replace(folder / _EXPORT_FILE)
    meta = {
        "inputs": names,
        "outputs": outputs,
        "output_class": type(reference).__name__,
        "export_ms": export_ms,
        "model_id": weights.model_id,
        "revision": weights.revision,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return Exported(folder / _EXPORT_FILE, tuple(names), tuple(outputs), meta["output_class"], export_ms, False)


class OnnxModel:
    """Looks like the PyTorch model to pipeline(): config, device, dtype, forward(**inputs) -> the model's outputs."""

    def __init__(self, exported: Exported, config: Any, base_model_prefix: str) -> None:
        import onnxruntime
        import torch
        import transformers.modeling_outputs as outputs

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same threads as the PyTorch runs
        self.session = onnxruntime.InferenceSession(str(exported.path), options, providers=["CPUExecutionProvider"])
        self.exported = exported
        self.config = config
        self.base_model_prefix = base_model_prefix
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.name_or_path = str(exported.path)
        self.weight_bytes = exported.path.stat().st_size
        self._output_class = getattr(outputs, exported.output_class)

    def forward(self, **inputs: Any) -> Any:
        import torch

        feed = {name: inputs[name].cpu().numpy() for name in self.exported.input_names if name in inputs}
        values = self.session.run(list(self.exported.output_names), feed)
        return self._output_class(
            **{name: torch.from_numpy(v) for name, v in zip(self.exported.output_names, values, strict=True)}
        )

    __call__ = forward

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        return self

    def eval(self) -> OnnxModel:
        return self

    def can_generate(self) -> bool:
        return False


def onnx_pipeline(task: str, torch_pipe: Any, exported: Exported, device: str) -> Any:
    """The same pipeline() as `torch_pipe`, its tokenizer and processors, with the ONNX Runtime session as model."""
    from transformers import pipeline

    # Named after the PyTorch class it stands in for, so the pipeline's supported-model check reads it as that.
    adapter_class = type(type(torch_pipe.model).__name__, (OnnxModel,), {})
    adapter = adapter_class(exported, torch_pipe.model.config, getattr(torch_pipe.model, "base_model_prefix", ""))
    return pipeline(
        task,
        model=adapter,
        tokenizer=torch_pipe.tokenizer,
        image_processor=torch_pipe.image_processor,
        feature_extractor=torch_pipe.feature_extractor,
        device=device,
    )
