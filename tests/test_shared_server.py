"""A shared tracking server on PostgreSQL, for real: a parallel sweep logs into it and loses nothing.

The fixture (tests/conftest.py, services in tests/services.py) starts PostgreSQL and `mlflow server` with the
README's team recipe on loopback; a 4-job sweep through joblib, and one through submitit_local (the SLURM path),
log into it through `tracking.uri=http://...`, and every run, param, metric and artifact of every record is found
there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

from pipelab.run_record import mlflow_artifacts, mlflow_params

FAST = ["profile=tiny", "bench.warmup=0", "bench.min_iterations=2", "bench.min_duration_s=0"]


LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"],  # the SLURM path
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_four_job_sweep_into_mlflow_on_postgres_loses_nothing(
    tmp_path, shared_data_dir, mlflow_on_postgres, launcher
):
    uri = mlflow_on_postgres.uri
    experiment_name = f"shared-{launcher}"
    args = ["-m", "task=text-generation", "temperature=0.5,0.7,1.0,1.5", *LAUNCHERS[launcher]]
    args += [*FAST, f"tracking.uri={uri}", f"tracking.experiment={experiment_name}"]
    args += [f"results_dir={tmp_path / 'results'}", f"data_dir={shared_data_dir}"]
    args += [f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    result = run_cli(args, cwd=tmp_path, timeout=1800, env_extra={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 jobs: 4 FINISHED" in result.stdout and "not logged" not in result.stdout

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_id: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1 and len(children) == 4
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["jobs_finished"] == 4

    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "runs").glob("*/*.json"))]
    assert len(records) == 4
    lost: list[str] = []
    run_ids = set(children)
    for record in records:
        assert record["tracking"]["logged"] is True
        run = children.pop(record["tracking"]["run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server, not a client path
        params = mlflow_params(record["config"], record["model"]["revision"])
        lost += [f"param {k}" for k, v in params.items() if run.data.params.get(k) != v]
        lost += [f"metric {k}" for k, v in record["metrics"].items() if run.data.metrics.get(k) != pytest.approx(v)]
        for name, content in mlflow_artifacts(record).items():
            path = Path(client.download_artifacts(run.info.run_id, name, str(tmp_path / run.info.run_id)))
            if path.read_text(encoding="utf-8") != content:
                lost.append(f"artifact {name}")
    assert not children  # every run belongs to a record
    assert lost == []
    stored = [p for p in mlflow_on_postgres.artifacts.rglob("outputs.json") if run_ids & set(p.parts)]
    assert len(stored) == 4  # the artifacts live in the server's destination folder
