"""The design card's commands through the real Hydra CLI, a real SQLite MLflow store and real tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipelab.tasks import TASK_NAMES

FAST = ["profile=tiny", "bench.warmup=0", "bench.min_iterations=2", "bench.min_duration_s=0"]


def isolated(tmp_path: Path, data_dir: Path) -> list[str]:
    """Overrides that keep a test's records, store and Hydra dirs in tmp_path (weights shared per session)."""
    return [
        f"results_dir={tmp_path / 'results'}",
        f"data_dir={data_dir}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.run.dir={tmp_path / 'outputs'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]


def cfg_path(task: str) -> str | None:
    """The `path` of a task's default model config (local files instead of a Hub pin), or None."""
    default = OmegaConf.load(ROOT / "conf" / "task" / f"{task}.yaml").default_model
    return OmegaConf.load(ROOT / "conf" / "model" / f"{default}.yaml").get("path")


def mlflow_runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pipelab")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def records(tmp_path: Path, task: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "runs" / task).glob("*.json"))]


@pytest.mark.slow
def test_single_tiny_run_writes_a_record_and_a_complete_mlflow_run(tmp_path, shared_data_dir):
    result = run_cli(["task=fill-mask", *FAST, *isolated(tmp_path, shared_data_dir)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "== fill-mask distilroberta-base [tiny] ==" in result.stdout
    assert "course   tiny weights: not checked" in result.stdout

    (record,) = records(tmp_path, "fill-mask")
    assert record["status"] == "FINISHED"
    assert record["model"]["weights"] == "tiny-random"
    assert record["tags"]["course_reproduction"].startswith("not claimed")
    cases = {c["id"]: c for c in record["cases"]}
    assert "<mask>" in cases["course-models"]["input"]  # RoBERTa's own mask token replaced {mask}
    assert all(c["valid"] for c in record["cases"]), [c["problems"] or c["error"] for c in record["cases"]]
    assert len(cases["course-models"]["output"]) == 5  # top_k=5
    assert all(isinstance(o["token"], int) for o in cases["course-models"]["output"])  # ids, not redacted

    (run,) = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "fill-mask distilroberta-base [tiny]"
    tags = run.data.tags
    assert tags["task"] == "fill-mask" and tags["weights"] == "tiny-random" and tags["profile"] == "tiny"
    assert tags["model_id"] == "tiny-random/distilroberta-base" and tags["device"] == "cpu"
    assert tags["model_revision"] == record["model"]["revision"]
    params = run.data.params
    assert params["task.name"] == "fill-mask" and params["model.hub_id"] == "distilbert/distilroberta-base"
    assert params["seed"] == "42" and params["task.call.top_k"] == "5"
    metrics = run.data.metrics
    assert metrics["schema_valid_rate"] == 1.0 and metrics["cases_total"] == len(record["cases"])
    assert metrics["cases_failed"] == 0 and metrics["cold_start_ms"] > 0 and metrics["latency_mean_ms"] > 0
    assert "course_checks_total" not in metrics  # tiny weights never claim the course
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "outputs.json"} <= artifacts
    outputs = json.loads(Path(client.download_artifacts(run.info.run_id, "outputs.json", str(tmp_path))).read_text())
    assert [c["id"] for c in outputs] == [c["id"] for c in record["cases"]]
    assert (tmp_path / "mlruns").is_dir()  # artifacts next to the SQLite file


@pytest.mark.slow
def test_temperature_sweep_is_three_child_runs_under_one_parent_with_one_model_load(tmp_path, shared_data_dir):
    args = ["-m", "task=text-generation", "temperature=0.7,1.0,1.5", *FAST, *isolated(tmp_path, shared_data_dir)]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    (parent,) = parents
    # The parent says the task and what varies, each child only its point; the records keep the full names.
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "text-generation: temperature 0.7/1.0/1.5 [tiny]"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.info.run_name for c in children) == ["T=0.7", "T=1", "T=1.5"]
    assert sorted(r["name"] for r in records(tmp_path, "text-generation")) == [
        "text-generation gpt2 T=0.7 [tiny]",
        "text-generation gpt2 T=1 [tiny]",
        "text-generation gpt2 T=1.5 [tiny]",
    ]
    # A collapsed sweep row has numbers: the range of its children's latency p50 and their worst validity.
    p50 = [c.data.metrics["latency_p50_ms"] for c in children]
    assert parent.data.metrics["latency_p50_ms_min"] == min(p50) and parent.data.metrics["latency_p50_ms_max"] == max(
        p50
    )
    assert parent.data.tags["task"] == "text-generation" and parent.data.tags["weights"] == "tiny-random"
    assert parent.data.metrics["schema_valid_rate_min"] == min(c.data.metrics["schema_valid_rate"] for c in children)
    # Every run names its inputs as a dataset: the same prompts at each temperature, so one digest for all.
    datasets = [[(d.dataset.name, d.dataset.digest) for d in r.inputs.dataset_inputs] for r in (parent, *children)]
    (dataset,) = datasets[0]
    assert all(d == [dataset] for d in datasets), datasets
    assert dataset[0] == f"text-generation: {len(records(tmp_path, 'text-generation')[0]['cases'])} cases"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pipelab")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the model-training view
    assert sorted(c.data.params["temperature"] for c in children) == ["0.7", "1.0", "1.5"]
    # one process, one (model, device, dtype): the pipeline is built once and reused
    loads = sorted(c.data.metrics["pipeline_loads_in_process"] for c in children)
    hits = sorted(c.data.metrics["pipeline_cache_hit"] for c in children)
    assert loads == [1.0, 1.0, 1.0] and hits == [0.0, 1.0, 1.0]
    for child in children:
        for key in ("distinct_1", "distinct_2", "repetition_rate", "token_logprob_mean", "time_to_first_token_ms"):
            assert key in child.data.metrics, key
    assert "3 jobs: 3 FINISHED" in result.stdout  # the sweep's table


@pytest.mark.slow
def test_same_seed_same_text_other_seed_other_text(tmp_path, shared_data_dir):
    def texts(seed: int, where: Path) -> list[str]:
        where.mkdir()
        args = [
            "task=text-generation",
            f"seed={seed}",
            "tracking.enabled=false",
            *FAST,
            *isolated(where, shared_data_dir),
        ]
        result = run_cli(args, cwd=where)
        assert result.returncode == 0, result.stderr[-3000:]
        (record,) = records(where, "text-generation")
        return [o["generated_text"] for c in record["cases"] for o in c["output"]]

    first = texts(7, tmp_path / "a")
    assert texts(7, tmp_path / "b") == first
    assert texts(8, tmp_path / "c") != first


@pytest.mark.slow
def test_every_task_runs_in_one_tiny_multirun_with_valid_schemas(tmp_path, shared_data_dir):
    result = run_cli(["-m", f"task={','.join(TASK_NAMES)}", *FAST, *isolated(tmp_path, shared_data_dir)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(TASK_NAMES)} jobs: {len(TASK_NAMES)} FINISHED" in result.stdout
    runs = mlflow_runs(tmp_path)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["task"] for r in children) == sorted(TASK_NAMES)
    for task in TASK_NAMES:
        (record,) = records(tmp_path, task)
        course = [c for c in record["cases"] if c["kind"] == "course"]
        assert course and all(c["valid"] for c in course), (task, [c["problems"] or c["error"] for c in course])
        if cfg_path(task):  # a model config with `path` (feature-extraction): real weights on every profile
            assert record["model"]["weights"] == "pretrained"
            assert record["course_verdict"].startswith("reproduces the course"), record["expectations"]
        else:
            assert record["course_verdict"] == "tiny weights: not checked"
            assert record["model"]["weights"] == "tiny-random"
        # every case is either a valid output or a recorded error: nothing is silently dropped
        for case in record["cases"]:
            assert case["valid"] or case["error"] or case["problems"], (task, case["id"])
    # bad case input is data: a text far beyond the window is truncated and the record says so
    (sentiment,) = records(tmp_path, "text-classification")
    long_case = next(c for c in sentiment["cases"] if c["id"] == "edge-long")
    assert long_case["valid"] and any("truncated to the model's 512-token window" in n for n in long_case["notes"])
    empty = next(c for c in sentiment["cases"] if c["id"] == "edge-empty")
    assert empty["valid"] or empty["error"]


@pytest.mark.slow
def test_user_input_runs_as_an_extra_case_with_real_decoding(tmp_path, shared_data_dir):
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(picture)
    args = ["task=image-classification", f"input={picture}", "tracking.enabled=false"]
    result = run_cli([*args, *FAST, *isolated(tmp_path, shared_data_dir)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = records(tmp_path, "image-classification")
    user = next(c for c in record["cases"] if c["kind"] == "user")
    assert user["valid"] and user["input"]["size"] == [40, 30] and user["input"]["source"] == str(picture)
    grey = next(c for c in record["cases"] if c["id"] == "edge-grayscale")
    assert grey["input"]["mode"] == "L" and grey["valid"]
    cat = next(c for c in record["cases"] if c["id"] == "course-cat")
    assert cat["input"]["size"] == [451, 300] and "chelsea" in cat["input"]["source"]  # skimage's real photo
