"""`mlflow ui`, typed as the README says in the folder holding mlflow.db, serves pipelab's runs on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli
from test_cli import FAST, isolated


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_mlflow_ui_lists_the_runs_and_binds_to_loopback(tmp_path, shared_data_dir):
    result = run_cli(["task=fill-mask", *FAST, *isolated(tmp_path, shared_data_dir)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow), "ui", "--port", str(port)],  # the README's command: default host and store
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its worker processes go with it at the end
    )
    try:
        body = json.dumps({"experiment_ids": ["1"], "max_results": 10}).encode()
        deadline = time.time() + 240
        runs = None
        while time.time() < deadline and runs is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    runs = json.load(response)["runs"]
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                time.sleep(1)
        assert runs is not None, "mlflow ui did not answer"
        names = [r["info"]["run_name"] for r in runs]
        assert names == ["fill-mask distilroberta-base [tiny]"]
        tags = {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}
        assert tags["weights"] == "tiny-random"
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        if listening.strip():  # ss may be missing; when present, only loopback listens
            assert all("127.0.0.1" in line for line in listening.splitlines()), listening
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
