"""The tracking server down, nothing lost: a real `mlflow server` stopped and started again around real sweeps.

A store that does not answer stops a run within seconds, before any weights load, unless tracking.required=false;
then the records are written as always, marked not logged, and `python stages/sync.py` logs them later, once,
under their sweep's parent run. A server that dies in the middle of a sweep fails no job.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, cli_env, run_cli
from mlflow.tracking import MlflowClient
from services import free_port, start_mlflow_server, stop_group

from pipelab import tracking

FAST = ["profile=tiny", "bench.warmup=0", "bench.min_iterations=2", "bench.min_duration_s=0"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models on a shared 2-core machine, as the DAG runs them


def isolated(tmp_path: Path, data_dir: Path, uri: str) -> list[str]:
    return [
        f"results_dir={tmp_path / 'results'}",
        f"data_dir={data_dir}",
        f"tracking.uri={uri}",
        f"hydra.run.dir={tmp_path / 'outputs'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/*.json"))]


def sync(results: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELAB_", "MLFLOW_"))}
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "sync.py"), "--results-dir", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def runs_of(uri: str, experiment: str) -> tuple[list, list]:
    """(parents, children) of an experiment."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags], children


def test_store_check_is_bounded_for_a_refused_and_a_silent_server(tmp_path):
    refused = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert "refused" in tracking.check_store(refused).lower()
    assert time.monotonic() - started < 2
    # A server that accepts the connection and never answers (the kernel completes the handshake: backlog).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        problem = tracking.check_store(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=2.0)
        assert problem is not None and "timed out" in problem.lower()
        assert time.monotonic() - started < 10
    assert tracking.check_store(f"sqlite:///{tmp_path / 'new.db'}") is None
    assert "does not exist" in tracking.check_store(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")


@pytest.mark.slow
def test_a_down_server_stops_the_run_before_any_weights_with_the_uri_and_the_fix(tmp_path, shared_data_dir):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    args = ["task=fill-mask", *FAST, *isolated(tmp_path, shared_data_dir, uri)]
    result = run_cli(args, cwd=tmp_path, timeout=1800, env_extra=ONE_THREAD)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr
    assert f"the MLflow tracking store {uri} does not answer" in message
    assert "tracking.required=false" in message and "stages/sync.py" in message and "Traceback" not in message
    checked = float(message.split("checked in ")[1].split(" s")[0])
    assert checked < 10
    assert not (tmp_path / "results").exists()  # nothing ran
    print(f"failed in {elapsed:.1f} s (store check {checked:.1f} s)")

    # A sweep stops before its first job, the same way.
    args = ["-m", "task=fill-mask", *FAST, *isolated(tmp_path, shared_data_dir, uri)]
    result = run_cli(args, cwd=tmp_path, timeout=1800, env_extra=ONE_THREAD)
    assert result.returncode == 2 and "does not answer" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_records_kept_while_the_server_is_down_are_logged_once_by_sync(tmp_path, shared_data_dir):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    results = tmp_path / "results"
    server_log = tmp_path / "server.log"

    # 1. Down from the start, tracking.required=false: the sweep runs, every record complete and marked.
    args = ["-m", "task=text-generation", "temperature=0.7,1.0", "tracking.required=false", *FAST]
    args += isolated(tmp_path, shared_data_dir, uri)
    result = run_cli(args, cwd=tmp_path, timeout=1800, env_extra=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 of 2 jobs not logged to MLflow" in result.stdout
    down = records(results)
    assert len(down) == 2 and all(r["status"] == "FINISHED" and r["cases"] for r in down)
    assert all(r["tracking"]["logged"] is False and r["tracking"]["uri"] == uri for r in down)
    assert len({r["tracking"]["sweep"]["id"] for r in down}) == 1

    server = start_mlflow_server(backend, tmp_path / "artifacts", port, server_log)
    try:
        # 2. Sync: one parent, two children, with everything a live run logs.
        started = time.monotonic()
        first = sync(results)
        sync_s = time.monotonic() - started
        assert first.returncode == 0, first.stderr[-3000:]
        assert "2 runs logged" in first.stdout and "1 sweep parent runs created" in first.stdout
        print(f"first sync (2 records, 1 parent created): {sync_s:.1f} s; server start-up {server.started_s:.1f} s")
        parents, children = runs_of(uri, "pipelab")
        assert len(parents) == 1 and len(children) == 2
        (parent,) = parents
        assert parent.info.status == "FINISHED" and parent.data.tags["pipelab.sweep"] == "true"
        assert parent.data.metrics["jobs_finished"] == 2
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
        client = MlflowClient(uri)
        synced = records(results)
        for record in synced:
            assert record["tracking"]["logged"] is True
            run = client.get_run(record["tracking"]["run_id"])
            assert run.info.status == "FINISHED" and run.info.run_name == record["name"]
            assert run.data.params["temperature"] == str(record["config"]["temperature"])
            assert run.data.metrics["cases_total"] == len(record["cases"])
            assert run.data.tags["pipelab.config_hash"] == record["config_hash"]
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"config.yaml", "outputs.json", "latency_samples_ms.json"} <= artifacts

        # 3. Again: nothing to do, nothing duplicated.
        second = sync(results)
        assert second.returncode == 0 and "0 runs logged" in second.stdout, second.stdout + second.stderr
        assert [len(x) for x in runs_of(uri, "pipelab")] == [1, 2]

        # 4. The server dies in the middle of a 4-job sweep: every job finishes with its record.
        mid = tmp_path / "mid"
        mid.mkdir()
        mid_results = mid / "results"
        args = ["-m", "task=text-generation", "temperature=0.5,0.7,1.0", *FAST[:-1], "bench.min_duration_s=1.5"]
        env = cli_env(OMP_NUM_THREADS="1")  # tiny models on a shared 2-core machine: what the DAG does
        overrides = [*isolated(mid, shared_data_dir, uri), "tracking.experiment=middle"]
        sweep = subprocess.Popen(
            [sys.executable, str(ROOT / "stages" / "run.py"), *args, *overrides],
            cwd=mid,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 600
            while not any(r["tracking"]["logged"] for r in records(mid_results) if "tracking" in r):
                assert sweep.poll() is None and time.monotonic() < deadline, "no job was logged"
                time.sleep(0.1)
            stop_group(server.process)  # the first job is in MLflow; the others are still to come
            output, _ = sweep.communicate(timeout=900)
        finally:
            if sweep.poll() is None:
                sweep.kill()
                sweep.wait(10)
        assert sweep.returncode == 0, output[-3000:]
        assert "3 jobs: 3 FINISHED" in output
        mid_records = records(mid_results)
        assert len(mid_records) == 3 and all(r["status"] == "FINISHED" and r["cases"] for r in mid_records)
        unlogged = [r for r in mid_records if not r["tracking"]["logged"]]
        assert 1 <= len(unlogged) <= 2

        server = start_mlflow_server(backend, tmp_path / "artifacts", port, server_log)
        again = sync(mid_results)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"{len(unlogged)} runs logged" in again.stdout and "0 sweep parent runs created" in again.stdout
        parents, children = runs_of(uri, "middle")
        assert len(parents) == 1 and len(children) == 3  # the sweep's own parent, no duplicate child
        assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["jobs_finished"] == 3
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
        assert sorted(c.data.params["temperature"] for c in children) == ["0.5", "0.7", "1.0"]
        assert all(r["tracking"]["logged"] for r in records(mid_results))
        assert "0 runs logged" in sync(mid_results).stdout
        print(f"restarted server start-up {server.started_s:.1f} s")
    finally:
        stop_group(server.process)
