"""Nothing lost, nothing let in: bad input, signals, resume, parallel jobs, secrets, failure isolation.

Every test drives the real CLI in a subprocess against a real SQLite MLflow store in a temp dir.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, cli_env, run_cli
from mlflow.tracking import MlflowClient
from test_cli import FAST, isolated, mlflow_runs, records

BAD_INPUTS = [
    (["task=sentiment"], "Available options in 'task'"),
    (["model=gpt3"], "Available options in 'model'"),
    (["device=tpu"], "Available options in 'device'"),
    (["ablation=everything"], "Available options in 'ablation'"),
    (["profile=local"], "Available options in 'profile'"),
    (["tempreature=0.5"], "Key 'tempreature' not in 'PipelabConfig'"),
    (["temperature=warm"], "Value 'warm' of type 'str' could not be converted to Float"),
    (["task=fill-mask", "model=gpt2"], "model 'gpt2' cannot do task 'fill-mask'"),
    (["device=cuda"], "device=cuda but torch"),
    (["profile=hub"], "run with profile=tiny"),  # HF_HUB_OFFLINE=1 and an empty cache: no weights
    (["device=mps"], "device=mps but torch"),
    (["task=text-generation", "temperature=0"], "temperature must be > 0, got 0.0"),
    (["task=text-generation", "temperature=-0.5"], "temperature must be > 0, got -0.5"),
    (["task=text-generation", "task.generation.top_k=0"], "task.generation.top_k must be > 0"),
    (["task=fill-mask", "task.call.top_k=-3"], "task.call.top_k must be > 0"),
    (["ablation=batch_size", "bench.batch_size=0"], "bench.batch_size must be > 0"),
    (["task=image-classification", "input=/no/such/cat.png"], "image file '/no/such/cat.png' does not exist"),
    (["task=image-classification", "input=/tmp"], "image path '/tmp' is not a file"),
    (["task=automatic-speech-recognition", "input=/no/such/talk.flac"], "audio file '/no/such/talk.flac' does not"),
]


@pytest.fixture
def earlier_run(tmp_path, shared_data_dir):
    """A finished run whose record and MLflow run must survive whatever comes after."""
    result = run_cli(["task=text-classification", *FAST, *isolated(tmp_path, shared_data_dir)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = (tmp_path / "results" / "runs" / "text-classification").glob("*.json")
    return path, path.read_bytes()


@pytest.mark.slow
def test_bad_inputs_fail_fast_with_a_clear_message_and_touch_nothing(tmp_path, shared_data_dir, earlier_run):
    record_path, record_bytes = earlier_run
    junk = tmp_path / "not-an-image.png"
    junk.write_text("this is text, not a PNG")
    noise = tmp_path / "not-audio.wav"
    noise.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    cases = [
        *BAD_INPUTS,
        (["task=image-classification", f"input={junk}"], "is not a decodable image"),
        (["task=automatic-speech-recognition", f"input={noise}"], "is not a decodable audio file"),
    ]
    messages = {}
    for overrides, expected in cases:
        started = time.perf_counter()
        result = run_cli([*FAST, *isolated(tmp_path, shared_data_dir), *overrides], cwd=tmp_path)  # last wins
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"{overrides} was accepted"
        assert expected in output, f"{overrides}: {output[-1500:]}"
        assert "Traceback" not in output, f"{overrides} printed a traceback instead of a message"
        messages[" ".join(overrides)] = (round(time.perf_counter() - started, 1), output.strip().splitlines()[0])
    (tmp_path / "bad_input_messages.json").write_text(json.dumps(messages, indent=2))
    runs = mlflow_runs(tmp_path)
    assert [r.info.status for r in runs] == ["FINISHED"]  # only the earlier run: no run for a bad input
    assert record_path.read_bytes() == record_bytes


def _wait_for_running_run(db: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    rows = conn.execute("select count(*) from runs where status = 'RUNNING'").fetchone()
                if rows and rows[0]:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.5)
    raise AssertionError("no RUNNING run appeared")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_marks_the_run_killed_and_leaves_records_whole(tmp_path, shared_data_dir, earlier_run, sig):
    record_path, record_bytes = earlier_run
    env = cli_env()
    args = ["task=fill-mask", "profile=tiny", "bench.warmup=0", "bench.min_iterations=5000", "bench.min_duration_s=600"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "run.py"), *args, *isolated(tmp_path, shared_data_dir)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_running_run(tmp_path / "mlflow.db")
        time.sleep(3)  # into the case loop / benchmark
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    statuses = sorted(r.info.status for r in mlflow_runs(tmp_path))
    assert statuses == ["FINISHED", "KILLED"], out[-2000:]
    assert not (tmp_path / "results" / "runs" / "fill-mask").exists() or not list(
        (tmp_path / "results" / "runs" / "fill-mask").iterdir()
    ), "an interrupted run left a (partial) record"
    assert record_path.read_bytes() == record_bytes


@pytest.mark.slow
def test_resume_skips_finished_configs_and_rerun_forces_them(tmp_path, shared_data_dir):
    base = ["-m", "task=zero-shot-classification", *FAST, *isolated(tmp_path, shared_data_dir)]
    first = run_cli([*base, "task.label_count=2"], cwd=tmp_path)  # half of the sweep, "interrupted" after it
    assert first.returncode == 0, first.stderr[-3000:]
    (done,) = records(tmp_path, "zero-shot-classification")
    mtime = next((tmp_path / "results" / "runs" / "zero-shot-classification").glob("*.json")).stat().st_mtime_ns

    second = run_cli([*base, "task.label_count=2,3"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "skipped  an identical config already finished" in second.stdout
    assert "2 jobs: 1 FINISHED, 1 SKIPPED" in second.stdout
    assert len(records(tmp_path, "zero-shot-classification")) == 2
    untouched = [p for p in (tmp_path / "results" / "runs" / "zero-shot-classification").glob("*.json")]
    assert mtime in [p.stat().st_mtime_ns for p in untouched]

    third = run_cli([*base, "task.label_count=2,3", "rerun=true"], cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "2 jobs: 2 FINISHED" in third.stdout
    children = [r for r in mlflow_runs(tmp_path) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert done["config_hash"] in {r.data.tags["pipelab.config_hash"] for r in children}


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [2, 4])
def test_parallel_joblib_jobs_from_no_database_lose_no_run(tmp_path, shared_data_dir, n_jobs):
    assert not (tmp_path / "mlflow.db").exists()
    seeds = ",".join(str(i) for i in range(1, 5))
    args = [
        "-m",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n_jobs}",
        "task=text-classification",
        f"seed={seeds}",
        *FAST,
        *isolated(tmp_path, shared_data_dir),
    ]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow_runs(tmp_path)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 5 and len(children) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["seed"] for r in children) == ["1", "2", "3", "4"]
    assert len(records(tmp_path, "text-classification")) == 4


@pytest.mark.slow
def test_secrets_never_reach_params_tags_artifacts_or_records(tmp_path, shared_data_dir):
    token = "hf_" + "Zq" * 17
    result = run_cli(
        ["task=text-classification", f"input=please ignore {token}", *FAST, *isolated(tmp_path, shared_data_dir)],
        cwd=tmp_path,
        env_extra={"HF_TOKEN": token, "HUGGING_FACE_HUB_TOKEN": token},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    haystacks = [tmp_path / "mlflow.db", *(tmp_path / "mlruns").rglob("*"), *(tmp_path / "results").rglob("*")]
    for path in haystacks:
        if path.is_file():
            assert token.encode() not in path.read_bytes(), f"the token leaked into {path}"
    (run,) = mlflow_runs(tmp_path)
    assert run.data.params["input"] == "please ignore ***redacted***"


@pytest.mark.slow
def test_a_model_that_fails_to_load_fails_its_own_run_and_the_sweep_goes_on(tmp_path, shared_data_dir):
    data = tmp_path / "data"
    shutil.copytree(shared_data_dir, data)
    # Make sure both models exist, then corrupt one of them.
    ok = run_cli(["task=ner", "tracking.enabled=false", *FAST, *isolated(tmp_path / "warm", data)], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    (data / "tiny" / "distilroberta-base" / "model.safetensors").write_bytes(b"not safetensors")
    args = ["-m", "task=fill-mask,ner", *FAST, *isolated(tmp_path, data)]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode != 0  # the sweep says something failed...
    runs = {r.info.run_name: r for r in mlflow_runs(tmp_path)}  # a task sweep's children are named by task
    assert runs["ner"].info.status == "FINISHED"  # ...but the other job ran
    failed = runs["fill-mask"]
    assert failed.info.status == "FAILED"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert "traceback.txt" in {a.path for a in client.list_artifacts(failed.info.run_id)}
    (record,) = records(tmp_path, "fill-mask")
    assert record["status"] == "FAILED" and "Traceback" in record["traceback"]
    parent = runs["2 tasks [tiny]"]
    assert parent.info.status == "FAILED"
    assert "1 FAILED, 1 FINISHED" in result.stdout
