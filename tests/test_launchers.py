"""Sweeps beyond one process: the same sweep through submitit (submitit_local, the SLURM path on one machine) gives
the same records and MLflow runs as the basic launcher, and a launcher that cannot run here says so up front."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, run_cli
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipelab.config import ConfigError
from pipelab.launchers import check_launcher, register_launcher_schemas

FAST = ["profile=tiny", "bench.warmup=0", "bench.min_iterations=2", "bench.min_duration_s=0"]
SWEEP = ["-m", "task=text-generation", "temperature=0.7,1.0,1.5", *FAST]
# Differ between two sweeps into two folders by construction; everything else of a child run must match.
WHERE = ("results_dir", "tracking.uri")


def isolated(where: Path, data_dir: Path) -> list[str]:
    return [
        f"results_dir={where / 'results'}",
        f"data_dir={data_dir}",
        f"tracking.uri=sqlite:///{where / 'mlflow.db'}",
        f"hydra.sweep.dir={where / 'multirun'}",
    ]


def stop_leftovers(where: Path) -> None:
    """Kill by PID any process still working in this test's folder (a submitit job outlives a timed-out parent)."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and any(str(where) in part for part in proc.info["cmdline"] or []):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def sweep_runs(where: Path) -> tuple:
    client = MlflowClient(f"sqlite:///{where / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pipelab")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return parents, children


def sweep_records(where: Path) -> dict[str, dict]:
    paths = (where / "results" / "runs" / "text-generation").glob("*.json")
    return {r["name"]: r for r in (json.loads(p.read_text()) for p in paths)}


@pytest.mark.slow
def test_submitit_local_sweep_gives_the_basic_launchers_runs_and_records_and_names_each_jobs_log(
    tmp_path, shared_data_dir
):
    basic, submitit = tmp_path / "basic", tmp_path / "submitit"
    env = {"OMP_NUM_THREADS": "1"}  # three jobs at once on two cores: one torch thread each
    try:
        # The basic launcher first: it also builds the tiny model once, before three processes want it.
        result = run_cli([*SWEEP, *isolated(basic, shared_data_dir)], cwd=tmp_path, env_extra=env)
        assert result.returncode == 0, result.stderr[-3000:]
        launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"]
        result = run_cli([*SWEEP, *launcher, *isolated(submitit, shared_data_dir)], cwd=tmp_path, env_extra=env)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        stop_leftovers(tmp_path)

    # One parent run per sweep, its three children point at it: submitit's job processes got the parent's id.
    (basic_parent,), basic_children = sweep_runs(basic)
    (parent,), children = sweep_runs(submitit)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 3
    assert basic_parent.info.run_name == parent.info.run_name == "text-generation: temperature 0.7/1.0/1.5 [tiny]"
    assert (basic_parent.data.tags["launcher"], parent.data.tags["launcher"]) == ("basic", "submitit_local")
    assert sorted(children) == sorted(basic_children) == ["T=0.7", "T=1", "T=1.5"]
    client = MlflowClient(f"sqlite:///{submitit / 'mlflow.db'}")
    for name, child in children.items():
        twin = basic_children[name]
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        params = {k: v for k, v in child.data.params.items() if k not in WHERE}
        assert params == {k: v for k, v in twin.data.params.items() if k not in WHERE}
        assert set(child.data.metrics) == set(twin.data.metrics)
        assert child.data.tags["pipelab.config_hash"] == twin.data.tags["pipelab.config_hash"]
        assert child.data.metrics["pipeline_loads_in_process"] == 1.0  # a fresh process per job
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"config.yaml", "outputs.json"}

    # The same records: same configs, same seeded outputs, case by case.
    records, basic_records = sweep_records(submitit), sweep_records(basic)
    assert sorted(records) == sorted(basic_records) and len(records) == 3
    for name, record in records.items():
        twin = basic_records[name]
        assert record["status"] == "FINISHED" and record["config_hash"] == twin["config_hash"]
        assert [(c["id"], c["output"], c["valid"]) for c in record["cases"]] == [
            (c["id"], c["output"], c["valid"]) for c in twin["cases"]
        ]

    # The parent's table: each job's status and its log, which holds that job's own summary.
    assert "3 jobs: 3 FINISHED" in result.stdout
    table = result.stdout[result.stdout.index("\njob ") :]
    logs = sorted((submitit / "multirun" / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) == 3
    for log in logs:
        line = next(line for line in table.splitlines() if str(log) in line)
        name = line.split("  ")[0]
        assert "FINISHED" in line and f"== {name} ==" in log.read_text()
    assert "== text-generation" not in result.stdout  # the jobs printed into their logs, not this terminal


@pytest.mark.slow
def test_submitit_slurm_without_slurm_stops_before_anything_with_pipelabs_message(tmp_path, shared_data_dir):
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH with no sbatch or srun, whatever this machine has
    args = ["-m", "task=fill-mask", "hydra/launcher=submitit_slurm", *FAST, *isolated(tmp_path, shared_data_dir)]
    result = run_cli(args, cwd=tmp_path, env_extra={"PATH": str(empty)}, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "pipelab: error: hydra/launcher=submitit_slurm hands each job to SLURM" in result.stderr
    assert "sbatch and srun are not on this machine's PATH" in result.stderr
    assert "hydra/launcher=submitit_local" in result.stderr  # the way to try it here
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # no parent run was opened
    assert not (tmp_path / "multirun" / ".submitit").exists()  # nothing was submitted


def compose_hydra(overrides: list[str], conf: Path = ROOT / "conf") -> OmegaConf:
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_launcher_configs_are_pipelabs_defaults_on_the_plugins_schema():
    slurm = compose_hydra(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.partition, slurm.mem_gb, slurm.cpus_per_task, slurm.stderr_to_stdout) == ("gpu", 8, 2, True)
    assert slurm.qos is None and slurm.array_parallelism == 256  # the plugin's keys, typed, no `+` needed
    with pytest.raises(Exception, match="partiton"):  # a misspelt key fails at compose time
        compose_hydra(["hydra/launcher=submitit_slurm", "hydra.launcher.partiton=gpu"])
    local = compose_hydra(["hydra/launcher=submitit_local"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher") and local.stderr_to_stdout


def test_a_launcher_whose_plugin_is_missing_composes_and_names_the_extra_to_install(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "hydra" / "launcher" / "nosuchplugin.yaml").write_text(
        "defaults:\n  - /launcher_schema/nosuchplugin@_here_\n  - _self_\n"
    )
    register_launcher_schemas(conf)
    cfg = compose_hydra(["hydra/launcher=nosuchplugin"], conf)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[nosuchplugin\]'"):
        check_launcher(cfg)


@pytest.fixture()
def ray_head(tmp_path):
    """A one-node Ray cluster on 127.0.0.1 for this test (`ray start --head`), stopped by PID whatever happens."""
    # Ray's sockets, logs and session files, never ~/.ray or /tmp/ray; short, as a Unix socket path must be.
    temp = Path(tempfile.mkdtemp(prefix="pipelab-ray-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    ray_cli = Path(sys.executable).with_name("ray")
    assert ray_cli.is_file(), "no ray CLI beside this python: the dev set-up installs it (pip install -e '.[dev]')"
    try:
        started = subprocess.run(
            [str(ray_cli), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
            env=env, capture_output=True, text=True, timeout=300,  # 42-150 s here under load
        )  # fmt: skip
        assert started.returncode == 0, started.stderr[-3000:] + started.stdout[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        stop_leftovers(temp)  # gcs_server, raylet, agents and workers all name the session folder
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if cmd.startswith("ray::") and proc.info["pid"] != os.getpid():
                try:
                    if any(str(temp) in (f.path or "") for f in proc.open_files()):
                        proc.kill()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_sweep_on_a_running_head_node_gives_one_parent_and_three_children(tmp_path, shared_data_dir, ray_head):
    where = tmp_path / "sweep"
    args = [*SWEEP, "hydra/launcher=ray", f"hydra.launcher.ray.init.address={ray_head}"]
    env = {"RAY_AUTH_MODE": "disabled"}
    result = run_cli([*args, *isolated(where, shared_data_dir)], cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (parent,), children = sweep_runs(where)
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "ray"
    assert sorted(children) == ["T=0.7", "T=1", "T=1.5"]
    for child in children.values():  # the workers got the sweep's parent id through the launcher's runtime_env
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert len(sweep_records(where)) == 3 and "3 jobs: 3 FINISHED" in result.stdout
