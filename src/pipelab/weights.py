"""Model config -> a local directory of weights: a hub snapshot at a pinned revision, or a tiny local build.

profile=hub: ``huggingface_hub.snapshot_download(repo_id, revision=pin)`` into ``data/hub`` (the Hugging Face
cache layout), safetensors and tokenizer/config files only (never pickled ``.bin`` weights), so a second
run, or an offline machine with a filled cache, resolves through ``local_files_only``.
profile=tiny: ``pipelab.tiny.build_tiny_model`` into ``data/tiny/<model>``, rebuilt only when its spec changes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Everything a pipeline needs, and no pickle-based weights (*.bin, *.pt, *.ckpt, *.h5, *.msgpack).
HUB_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.spm",
    "*.tiktoken",
    "*.jinja",
]


class WeightsUnavailable(RuntimeError):
    """Weights could not be resolved; the message says why and what to do (often: profile=tiny)."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    model_id: str
    revision: str  # the resolved commit (hub) or the tiny spec hash
    weights: str  # "pretrained" | "tiny-random"
    resolve_ms: float  # download or build time: never part of cold start


def resolve_weights(model: Any, profile: Any, data_dir: Path) -> ResolvedWeights:
    """Resolve a model config (name, hub_id, revision, tiny) for a profile (name, offline)."""
    start = time.perf_counter()
    if profile.name == "tiny":
        path, revision = _tiny(model, data_dir)
        weights, model_id = "tiny-random", f"tiny-random/{model.name}"
    else:
        path, revision = _hub(model, data_dir / "hub", offline=bool(profile.offline))
        weights, model_id = "pretrained", model.hub_id
    return ResolvedWeights(path, model_id, revision, weights, (time.perf_counter() - start) * 1000)


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


def _hub(model: Any, cache_dir: Path, *, offline: bool) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not model.get("hub_id"):
        raise WeightsUnavailable(f"model '{model.name}' has no hub_id")
    revision = model.get("revision") or "main"
    local_only = offline or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")

    def fetch(local_files_only: bool) -> Path:
        return Path(
            snapshot_download(
                model.hub_id,
                revision=revision,
                cache_dir=str(cache_dir),
                allow_patterns=HUB_ALLOW_PATTERNS,
                local_files_only=local_files_only,
            )
        )

    try:
        try:
            path = fetch(local_files_only=True)  # a pinned commit already cached needs no network at all
        except LocalEntryNotFoundError:
            if local_only:
                raise
            _check_hub_reachable()  # seconds, instead of the client's retries against a network that is not there
            path = fetch(local_files_only=False)
    except WeightsUnavailable:
        raise
    except LocalEntryNotFoundError as exc:
        where = "is not in the local cache" if local_only else "could not be downloaded (no connection to the Hub?)"
        raise WeightsUnavailable(
            f"{model.hub_id} at revision {revision} {where} ({cache_dir}). On a machine without the Hugging Face "
            "Hub, run with profile=tiny (small random-weight models built locally); or fill the cache with "
            "`python stages/fetch.py` on a machine online and copy data/hub here"
        ) from exc
    except Exception as exc:  # HTTP errors, DNS failures, revision not found
        raise WeightsUnavailable(
            f"could not fetch {model.hub_id} at revision {revision}: {type(exc).__name__}: {exc}. "
            "Offline? Run with profile=tiny"
        ) from exc
    if not any(path.rglob("*.safetensors")):
        raise WeightsUnavailable(
            f"{model.hub_id} at revision {revision} has no safetensors weights; pipelab loads safetensors only "
            "(pickled .bin weights can run code on load). Pick a revision that has model.safetensors"
        )
    return path, path.name  # snapshots/<commit sha>


def _check_hub_reachable(timeout: float = 5.0) -> None:
    """Fail in seconds when the Hub's host cannot be reached (DNS or TCP), naming profile=tiny."""
    import socket
    import urllib.parse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urllib.parse.urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return
    except OSError as exc:
        raise WeightsUnavailable(
            f"cannot reach the Hugging Face Hub at {host} ({exc}). On a machine without the Hub, run with "
            "profile=tiny (small random-weight models built locally), or copy a filled data/hub cache here and "
            "set profile.offline=true"
        ) from exc


def hub_cache_dir(data_dir: Path) -> Path:
    return data_dir / "hub"
