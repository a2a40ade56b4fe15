"""ablation=quantization and ablation=runtime through the real CLI, and the pieces they rest on, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli
from test_cli import FAST, isolated, mlflow_runs, records

from pipelab import onnx_runtime, quantization
from pipelab.dag import compose
from pipelab.pipeline_cache import load_pipeline, pipeline_cache_key
from pipelab.tasks import get_task
from pipelab.weights import resolve_weights
from pipelab_tools.report import write_reports


def tiny_weights(task_name: str, data_dir: Path):
    cfg = compose(ROOT, [f"task={task_name}", "profile=tiny", f"data_dir={data_dir}", "model=distilbert-sst2"])
    return cfg, resolve_weights(cfg.model, cfg.profile, data_dir)


def by_point(recs: list[dict], axis: str) -> dict[str, dict]:
    return {r["ablation"]["point"][axis]: r for r in recs}


@pytest.mark.slow
def test_fp32_and_int8_pipelines_of_the_same_weights_are_two_cache_entries(shared_data_dir):
    cfg, weights = tiny_weights("text-classification", shared_data_dir)
    assert pipeline_cache_key("text-classification", weights, "cpu", "float32", ("none", "torch")) != (
        pipeline_cache_key("text-classification", weights, "cpu", "float32", ("int8_dynamic", "torch"))
    )
    fp32, _ = load_pipeline("text-classification", weights, "cpu", "float32", cfg.model)
    int8, hit = load_pipeline(
        "text-classification", weights, "cpu", "float32", cfg.model, variant=("int8_dynamic", "torch")
    )
    assert not hit and int8.pipe is not fp32.pipe
    linear_types = {type(m).__module__ for m in fp32.pipe.model.modules() if "Linear" in type(m).__name__}
    assert linear_types == {"torch.nn.modules.linear"}  # the fp32 pipeline was not quantized in place
    assert any("quantized" in type(m).__module__ for m in int8.pipe.model.modules())
    assert 0 < int8.weight_bytes < fp32.weight_bytes
    woq, _ = load_pipeline(
        "text-classification", weights, "cpu", "float32", cfg.model, variant=("int8_weight_only", "torch")
    )
    assert 0 < woq.weight_bytes < fp32.weight_bytes  # torchao's int8 tensors counted by their inner data
    again, hit = load_pipeline("text-classification", weights, "cpu", "float32", cfg.model)
    assert hit and again is fp32


def test_bitsandbytes_is_refused_off_cuda_with_the_reason():
    for method in ("bnb_int8", "bnb_int4"):
        reason = quantization.unsupported_reason(method, "cpu")
        assert reason is not None and "CUDA only" in reason and "device=cuda" in reason
        assert quantization.unsupported_reason(method, "cuda") is None
    assert "CPU only" in quantization.unsupported_reason("int8_dynamic", "cuda")
    assert quantization.unsupported_reason("int8_weight_only", "cpu") is None
    with pytest.raises(ValueError, match="Valid: none, int8_dynamic"):
        quantization.unsupported_reason("int3", "cpu")


def test_onnx_runtime_refuses_generating_tasks_other_devices_and_quantized_models():
    assert "generates" in onnx_runtime.unsupported_reason(get_task("translation"), "cpu", "none")
    assert "CPU" in onnx_runtime.unsupported_reason(get_task("ner"), "cuda", "none")
    assert "quantization" in onnx_runtime.unsupported_reason(get_task("ner"), "cpu", "int8_dynamic")
    assert onnx_runtime.unsupported_reason(get_task("ner"), "cpu", "none") is None


@pytest.mark.slow
def test_quantization_ablation_runs_every_point_and_compares_it_with_fp32(tmp_path, shared_data_dir):
    args = ["-m", "ablation=quantization", "task=text-classification", *FAST, *isolated(tmp_path, shared_data_dir)]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    points = by_point(records(tmp_path, "text-classification"), "quantization")
    assert set(points) == set(quantization.METHODS)
    for method in ("bnb_int8", "bnb_int4"):  # no GPU here: a recorded "not supported", not a crash
        assert points[method]["status"] == "UNSUPPORTED" and "CUDA only" in points[method]["unsupported"]
    fp32 = points["none"]["metrics"]
    assert fp32["latency_p50_ratio_to_reference"] == 1.0 and fp32["agree_top_label_rate"] == 1.0
    for method in ("int8_dynamic", "int8_weight_only"):
        rec = points[method]
        assert rec["status"] == "FINISHED", rec.get("error")
        m = rec["metrics"]
        assert m["weight_mb"] < fp32["weight_mb"] and m["weight_ratio_to_reference"] < 1
        assert m["latency_p50_ratio_to_reference"] > 0 and m["reference_latency_p50_ms"] > 0
        assert m["agree_cases"] >= 3 and 0 <= m["agree_top_label_rate"] <= 1
        assert m["agree_max_score_diff"] < 0.05  # int8 rounding on a tiny random model, not a different model
        assert all(m[k] >= 0 for k in ("preprocess_ms", "forward_ms", "postprocess_ms"))
    runs = {r.data.tags.get("pipelab.config_hash"): r for r in mlflow_runs(tmp_path)}
    unsupported = runs[points["bnb_int4"]["config_hash"]]
    assert unsupported.info.status == "FINISHED" and "CUDA only" in unsupported.data.tags["unsupported"]
    assert runs[points["int8_dynamic"]["config_hash"]].data.metrics["agree_top_label_rate"] >= 0
    assert "5 jobs:" in result.stdout and "2 UNSUPPORTED" in result.stdout

    write_reports(tmp_path / "results")
    doc = (tmp_path / "results" / "comparison.md").read_text()
    assert "### Ablation `quantization`" in doc and "p50 / reference p50" in doc and "agree_top_label_rate" in doc
    assert "bnb_int8: not supported here: quantization=bnb_int8 (bitsandbytes) runs on CUDA only" in doc
    assert "2 not supported here" in doc and "0 failed" in doc
    assert (tmp_path / "results" / "plots" / "ablation_text-classification_quantization.png").is_file()


@pytest.mark.slow
def test_runtime_ablation_exports_once_and_agrees_with_pytorch(tmp_path, shared_data_dir):
    data_dir = tmp_path / "data"  # its own, so the first export is this test's
    args = ["-m", "ablation=runtime", "task=text-classification", *FAST, *isolated(tmp_path, data_dir)]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    points = by_point(records(tmp_path, "text-classification"), "runtime")
    assert {p["status"] for p in points.values()} == {"FINISHED"}
    onnx = points["onnxruntime"]["metrics"]
    assert onnx["export_ms"] > 0 and onnx["export_cached"] == 0
    assert onnx["agree_top_label_rate"] == 1.0 and onnx["agree_max_score_diff"] < 1e-4
    assert onnx["weight_mb"] > 0 and onnx["latency_p50_ratio_to_reference"] > 0
    (exported,) = (data_dir / "onnx").rglob("model.onnx")
    meta = json.loads((exported.parent / "export.json").read_text())
    assert meta["export_ms"] == pytest.approx(onnx["export_ms"]) and meta["outputs"] == ["logits"]

    # A generating task: the onnxruntime point is recorded as not supported, the run exits 0.
    result = run_cli(
        ["task=text-generation", "runtime=onnxruntime", *FAST, *isolated(tmp_path, shared_data_dir)], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not supported here: runtime=onnxruntime" in result.stdout
    (rec,) = records(tmp_path, "text-generation")
    assert rec["status"] == "UNSUPPORTED" and "model.generate" in rec["unsupported"]

    # The same export settings and revision again: the cached file, no second export.
    cfg, weights = tiny_weights("text-classification", data_dir)
    torch_pipe, _ = load_pipeline("text-classification", weights, "cpu", "float32", cfg.model)
    again = onnx_runtime.export(torch_pipe.pipe, "text-classification", weights, data_dir / "onnx")
    assert again.cached and again.path == exported and again.export_ms == pytest.approx(onnx["export_ms"])
    session_pipe = onnx_runtime.onnx_pipeline("text-classification", torch_pipe.pipe, again, "cpu")
    text = "I've been waiting for a HuggingFace course my whole life."
    with torch.no_grad():
        want = torch_pipe.pipe(text)
    got = session_pipe(text)
    assert got[0]["label"] == want[0]["label"] and got[0]["score"] == pytest.approx(want[0]["score"], abs=1e-5)
