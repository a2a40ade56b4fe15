"""Shared fixtures: the repo root, a tiny-weights cache shared by the whole session, and a CLI runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelab.config import register_schema
from pipelab.warm import STARTED

ROOT = Path(__file__).resolve().parents[1]

# The whole session is offline, whichever tests are selected: nothing in-process may reach for the Hub. Tests that
# talk to the local Hub server (tests/hub_server.py) build their own environment without these two.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
register_schema()  # tests compose conf/ through Hydra's API, as stages/run.py does after registering it


_warm_servers: set[int] = set()


def note_warm_servers(output: str) -> list[int]:
    """The warm servers (pipelab.warm) a command's output says it started: stopped by PID at the session's end."""
    pids = [int(pid) for pid in STARTED.findall(output)]
    _warm_servers.update(pids)
    return pids


@pytest.fixture(scope="session", autouse=True)
def _stop_warm_servers():
    yield
    for pid in _warm_servers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data/ folder for every CLI test of the session: tiny models are built once, then reused."""
    return tmp_path_factory.mktemp("data")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `python stages/run.py ...` a test starts: offline, no pipelab/MLflow settings of this
    shell, and in its own process (PIPELAB_WARM=off), as the tests' process-level checks (signals, exit codes,
    counted compositions) assume; tests/test_warm.py covers the warm path. `extra` overrides any of it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELAB_", "MLFLOW_"))}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env["PIPELAB_WARM"] = "off"
    return env | extra


def run_cli(
    args: list[str], *, cwd: Path, env_extra: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """The real Hydra CLI in a subprocess: `python stages/run.py ...`."""
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "run.py"), *args],
        cwd=cwd,
        env=cli_env(**(env_extra or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def mlflow_on_postgres(tmp_path_factory: pytest.TempPathFactory):
    """A team's tracking server for real: PostgreSQL + `mlflow server` (lean settings, proxied artifacts), on
    loopback, both stopped by PID at the end of the module. Yields tests/services.py's MlflowServer (`.uri`)."""
    from services import mlflow_server, postgres

    base = tmp_path_factory.mktemp("mlflow_on_postgres")
    with postgres() as pg:
        pg.create_database("mlflow")
        with mlflow_server(pg.url("mlflow"), base / "artifacts", log=base / "server.log") as server:
            yield server
