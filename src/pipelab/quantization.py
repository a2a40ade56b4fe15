"""Weight quantization of a pipeline's model (the `quantization=` knob, `ablation=quantization`), and its size.

Methods, and where each runs (measured on torch 2.13 / transformers 5.23, PITFALLS.md):

    none               the model's own float weights (fp32 on CPU): the reference every other point is compared to
    int8_dynamic       torch.ao.quantization.quantize_dynamic: nn.Linear weights int8, activations quantized per
                       call; CPU only (torch.ao is deprecated upstream but works; its warning is silenced here)
    int8_weight_only   torchao's Int8WeightOnlyConfig through from_pretrained's TorchAoConfig: int8 weights,
                       float activations; CPU and CUDA
    bnb_int8, bnb_int4 bitsandbytes LLM.int8() / NF4 through BitsAndBytesConfig: CUDA only (pip install
                       'pipelab[cuda]'); elsewhere the point is recorded as not supported, never loaded

:func:`unsupported_reason` says before any load whether a method can run on a device; :func:`model_kwargs` and
:func:`apply` load it; :func:`weight_bytes` counts what the weights take in memory, packed int8 weights and
torchao's tensor subclasses included (``numel * element_size`` of a parameter would count a subclass at its
outer dtype).
"""

from __future__ import annotations

import warnings
from typing import Any

METHODS: dict[str, str] = {
    "none": "float weights (fp32 on CPU): the reference",
    "int8_dynamic": "int8 dynamic quantization of nn.Linear (torch.ao quantize_dynamic), CPU",
    "int8_weight_only": "int8 weight-only (torchao Int8WeightOnlyConfig via TorchAoConfig)",
    "bnb_int8": "bitsandbytes LLM.int8() (BitsAndBytesConfig load_in_8bit), CUDA only",
    "bnb_int4": "bitsandbytes NF4 4-bit (BitsAndBytesConfig load_in_4bit), CUDA only",
}
_CUDA_ONLY = ("bnb_int8", "bnb_int4")


def check_method(method: str) -> None:
    """Raise ValueError naming the valid methods when `method` is not one."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization '{method}'. Valid: {', '.join(METHODS)}")


def unsupported_reason(method: str, device: str) -> str | None:
    """Why `method` cannot run on `device` (a sentence for the record), or None when it can."""
    check_method(method)
    if method in _CUDA_ONLY and not device.startswith("cuda"):
        return (
            f"quantization={method} (bitsandbytes) runs on CUDA only; this run's device is {device}. "
            "Run it with device=cuda on a GPU machine (pip install 'pipelab[cuda]')"
        )
    if method == "int8_dynamic" and device != "cpu":
        return f"quantization=int8_dynamic (torch.ao dynamic quantization) runs on the CPU only; device is {device}"
    return None


def model_kwargs(method: str) -> dict[str, Any]:
    """What from_pretrained needs to load the model quantized (nothing for none and int8_dynamic)."""
    check_method(method)
    if method == "int8_weight_only":
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        # The string form TorchAoConfig("int8_weight_only") is refused by torchao 0.18: the config object works.
        return {"quantization_config": TorchAoConfig(Int8WeightOnlyConfig())}
    if method in _CUDA_ONLY:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                f"quantization={method} needs bitsandbytes: pip install 'pipelab[cuda]' (with torch==2.13.0)"
            ) from exc
        from transformers import BitsAndBytesConfig

        config = (
            BitsAndBytesConfig(load_in_8bit=True) if method == "bnb_int8" else BitsAndBytesConfig(load_in_4bit=True)
        )
        return {"quantization_config": config}
    return {}


def apply(pipe: Any, method: str) -> None:
    """Quantize a loaded pipeline's model in place where the method works after loading (int8_dynamic)."""
    if method != "int8_dynamic":
        return
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is deprecated, still works
        warnings.simplefilter("ignore", UserWarning)
        pipe.model = torch.ao.quantization.quantize_dynamic(pipe.model, {torch.nn.Linear}, dtype=torch.qint8)


def _tensor_bytes(value: Any, seen: set[int]) -> int:
    """Bytes of a tensor, a tensor subclass's inner tensors, or a tuple of them (packed params)."""
    import torch

    if isinstance(value, tuple | list):
        return sum(_tensor_bytes(v, seen) for v in value)
    if not isinstance(value, torch.Tensor):
        return 0
    flatten = getattr(value, "__tensor_flatten__", None)
    if flatten is not None and type(value) is not torch.Tensor and not isinstance(value, torch.nn.Parameter):
        names, _ = flatten()
        return sum(_tensor_bytes(getattr(value, name), seen) for name in names)
    if isinstance(value, torch.nn.Parameter) and type(value.data) is not torch.Tensor:
        return _tensor_bytes(value.data, seen)
    if value.is_quantized:
        key = value.data_ptr() if value.numel() else id(value)
        if key in seen:
            return 0
        seen.add(key)
        return value.numel() * value.element_size()
    key = value.untyped_storage().data_ptr() if value.numel() else id(value)
    if key in seen:  # tied weights (embeddings and LM head) are one tensor
        return 0
    seen.add(key)
    return value.numel() * value.element_size()


def weight_bytes(model: Any) -> int:
    """Bytes of a model's weights and buffers in memory (its state dict, tied tensors once), 0 for a non-module."""
    state_dict = getattr(model, "state_dict", None)
    if state_dict is None:
        return 0
    seen: set[int] = set()
    return sum(_tensor_bytes(value, seen) for value in state_dict(keep_vars=True).values())
