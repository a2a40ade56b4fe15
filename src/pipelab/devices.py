"""device=auto|cpu|cuda|mps -> (torch device string, dtype name), with a clear error for a missing device."""

from __future__ import annotations

from pipelab.config import ConfigError

DEFAULT_DTYPE = {"cpu": "float32", "cuda": "float16", "mps": "float32"}
DTYPES = ("float32", "float16", "bfloat16")


def available_devices() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def resolve_device(name: str, dtype: str) -> tuple[str, str]:
    """auto picks cuda, else mps, else cpu; dtype auto follows the device."""
    found = available_devices()
    if name == "auto":
        device = "cuda" if "cuda" in found else "mps" if "mps" in found else "cpu"
    elif name in ("cpu", "cuda", "mps"):
        if name not in found:
            import torch

            raise ConfigError(
                f"device={name} but torch {torch.__version__} sees no {name.upper()} device on this machine. "
                f"Available here: {', '.join(['auto'] + found)}"
            )
        device = name
    else:
        raise ConfigError(f"unknown device '{name}'. Valid devices: auto, cpu, cuda, mps")
    resolved = DEFAULT_DTYPE[device] if dtype == "auto" else dtype
    if resolved not in DTYPES:
        raise ConfigError(f"unknown dtype '{dtype}'. Valid: auto, {', '.join(DTYPES)}")
    return device, resolved
