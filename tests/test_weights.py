"""Weight resolution without a Hub: the clear error offline, and tiny builds made once (the Hub path, through a
local server speaking its protocol: tests/test_hub.py)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pipelab.weights import WeightsUnavailable, resolve_weights


def test_missing_cache_offline_fails_fast_and_names_the_tiny_profile(tmp_path):
    model = OmegaConf.create(
        {"name": "minilm", "hub_id": "sentence-transformers/all-MiniLM-L6-v2", "revision": "0" * 40}
    )
    profile = OmegaConf.create({"name": "hub", "offline": True})
    with pytest.raises(WeightsUnavailable, match="profile=tiny"):
        resolve_weights(model, profile, tmp_path)


def test_tiny_weights_are_built_once_and_reused(tmp_path):
    cfg = OmegaConf.create({"name": "gpt2", "tiny": {"family": "gpt2-causal-lm"}})
    profile = OmegaConf.create({"name": "tiny", "offline": True})
    first = resolve_weights(cfg, profile, tmp_path)
    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    second = resolve_weights(cfg, profile, tmp_path)
    assert first.weights == second.weights == "tiny-random" and first.model_id == "tiny-random/gpt2"
    assert (second.path / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
