"""Warm start (pipelab.warm): a script that calls run_warm runs in a child forked from one server that imported
torch, transformers and MLflow once, and behaves as the plain process would: its argv, folder, environment,
stdout/stderr, exit code and signals. A changed environment gets its own server; a changed imported file
retires the server. Every server a test starts is stopped by its pid."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipelab.warm import STARTED

PROBE = """
import json, os, sys, time
from pathlib import Path
preloaded = "torch" in sys.modules  # before anything here imports it
from pipelab.warm import run_warm

if __name__ == "__main__":
    code = run_warm(Path(__file__).parent)
    if code is not None:
        sys.exit(code)
    print(json.dumps({"pid": os.getpid(), "argv": sys.argv, "cwd": os.getcwd(), "probe": os.environ.get("PROBE"),
                      "preloaded": preloaded, "stdout_tty": sys.stdout.isatty()}))
    print("a line on stderr", file=sys.stderr)
    if sys.argv[1] == "sleep":
        print("sleeping", flush=True)
        time.sleep(120)
    sys.exit(int(sys.argv[1]))
"""
WARM_DIR = Path(tempfile.gettempdir()) / f"pipelab-warm-{os.getuid()}"
FORKED = re.compile(r"warm: running in pid (\d+), forked from the server \(pid (\d+)")


@pytest.fixture
def probe(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("# imported by every interpreter started with this PYTHONPATH\n")
    servers: set[int] = set()

    def run(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if not k.startswith("PIPELAB_")}
        full.update({"PYTHONPATH": str(site), "PIPELAB_WARM_IDLE_S": "60", "PROBE": "a"}, **(env or {}))
        done = subprocess.run(
            [sys.executable, str(script), *args], env=full, capture_output=True, text=True, timeout=600, **kwargs
        )
        servers.update(int(pid) for pid in STARTED.findall(done.stderr))
        return done

    run.site = site
    run.servers = servers
    yield run
    files = [p for p in WARM_DIR.glob("*.pid") if p.read_text().strip() in {str(pid) for pid in servers}]
    assert files, "no pid file names the servers these runs started"
    for pid in servers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in servers if _alive(pid)], "a warm server outlived SIGTERM"
    # a server stopped by its pid removes its pid file and its socket
    assert not [p for p in files if p.exists() or p.with_suffix(".sock").exists()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, its parent gone) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _output(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.splitlines()[0])


@pytest.mark.slow
def test_runs_fork_from_one_server_and_keep_the_plain_process_behaviour(probe, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = probe("3", "two words", cwd=elsewhere)
    assert first.returncode == 3, first.stderr
    (server,) = (int(pid) for pid in STARTED.findall(first.stderr))
    out = _output(first)
    # the child saw what the plain process would: its argv, folder, environment; and torch was already there
    assert out["argv"] == [str(tmp_path / "probe.py"), "3", "two words"]
    assert out["cwd"] == str(elsewhere) and out["probe"] == "a" and out["preloaded"] is True
    assert out["stdout_tty"] is False and "a line on stderr" in first.stderr
    assert FORKED.search(first.stderr).group(2) == str(server)

    second = probe("0", cwd=elsewhere)
    assert second.returncode == 0, second.stderr
    assert not STARTED.search(second.stderr), "the second run started a server instead of reusing the first"
    child, parent = FORKED.search(second.stderr).groups()
    assert int(parent) == server and int(child) == _output(second)["pid"] != out["pid"]

    # another environment is another server: libraries read some variables once, at import
    other = probe("0", env={"PROBE": "b"})
    assert other.returncode == 0 and _output(other)["probe"] == "b"
    (other_server,) = (int(pid) for pid in STARTED.findall(other.stderr))
    assert other_server != server

    # warm start off: the script runs in its own process, which has not imported torch
    cold = probe("5", env={"PIPELAB_WARM": "off"})
    assert cold.returncode == 5 and _output(cold)["preloaded"] is False and "warm:" not in cold.stderr


@pytest.mark.slow
def test_a_changed_imported_file_retires_the_server_and_the_run_gets_a_fresh_one(probe):
    first = probe("0")
    (old,) = (int(pid) for pid in STARTED.findall(first.stderr))
    sitecustomize = probe.site / "sitecustomize.py"
    sitecustomize.write_text(sitecustomize.read_text() + "# edited\n")
    second = probe("0")
    assert second.returncode == 0, second.stderr
    assert f"{sitecustomize} changed since the server imported it" in second.stderr
    (new,) = (int(pid) for pid in STARTED.findall(second.stderr))
    assert new != old and FORKED.search(second.stderr).group(2) == str(new)
    deadline = time.monotonic() + 30
    while _alive(old) and time.monotonic() < deadline:  # the stale server had no child left: it exits by itself
        time.sleep(0.1)
    assert not _alive(old)


@pytest.mark.slow
def test_a_signal_to_the_run_reaches_the_forked_child(probe, tmp_path):
    probe("0")  # the server is up: the next run forks at once
    script = tmp_path / "probe.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELAB_")}
    env.update({"PYTHONPATH": str(probe.site), "PIPELAB_WARM_IDLE_S": "60", "PROBE": "a"})
    client = subprocess.Popen(
        [sys.executable, str(script), "sleep"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert client.stdout.readline().startswith("{") and client.stdout.readline() == "sleeping\n"
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == 128 + signal.SIGTERM
    child = int(FORKED.search(client.stderr.read()).group(1))
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the forked child outlived the signal sent to its run"


@pytest.mark.slow
def test_a_server_started_early_serves_the_runs_that_come_while_it_imports(probe, tmp_path):
    # What the DAG's fetch stage does: start the run stages' server, and go on without waiting for it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELAB_")}
    env.update({"PYTHONPATH": str(probe.site), "PIPELAB_WARM_IDLE_S": "60", "PROBE": "a"})
    start = [
        sys.executable,
        "-c",
        "import os, sys; from pathlib import Path; from pipelab.warm import start_early; "
        "start_early(Path(sys.argv[1]), dict(os.environ)); print('preloaded' if 'torch' in sys.modules else 'lean')",
        str(tmp_path),
    ]
    early = subprocess.run(start, env=env, capture_output=True, text=True, timeout=600)
    assert early.returncode == 0 and early.stdout.strip() == "lean", early.stderr  # it imported nothing heavy
    (server,) = (int(pid) for pid in STARTED.findall(early.stderr))
    probe.servers.add(server)
    # A second early start, while that server imports or listens, starts nothing.
    again = subprocess.run(start, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and not STARTED.search(again.stderr), again.stderr
    # The run waits for that server (it may still be importing) and forks from it.
    run = probe("0")
    assert run.returncode == 0, run.stderr
    assert not STARTED.search(run.stderr), "the run started a server beside the one started early"
    assert FORKED.search(run.stderr).group(2) == str(server)
    # Listening, the server removed its `.starting` file: nothing waits on a server that is up.
    (pid_file,) = [p for p in WARM_DIR.glob("*.pid") if p.read_text().strip() == str(server)]
    assert not pid_file.with_suffix(".starting").exists()


@pytest.mark.slow
def test_a_typed_run_forks_from_the_server_the_previous_run_started(tmp_path, shared_data_dir):
    """`python stages/run.py ...` as a user types it twice: the first starts the server and runs in its child, the
    second forks at once; both write the record the command writes on its own (PIPELAB_WARM=off)."""
    from pipelab.records import iter_records

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELAB_", "MLFLOW_"))}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PIPELAB_WARM_IDLE_S": "60"})
    env["PIPELAB_TEST_SERVER"] = str(tmp_path)  # read by nothing: a server of this test's own (its identity)
    servers: list[int] = []

    def run(name: str, **extra: str) -> subprocess.CompletedProcess:
        args = ["task=fill-mask", "profile=tiny", "tracking.enabled=false", "bench.warmup=0"]
        args += ["bench.min_iterations=1", "bench.min_duration_s=0", f"data_dir={shared_data_dir}"]
        args += [f"results_dir={tmp_path / name}", f"hydra.run.dir={tmp_path / name / 'outputs'}"]
        done = subprocess.run(
            [sys.executable, str(root / "stages" / "run.py"), *args],
            cwd=tmp_path,
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=600,
        )
        servers.extend(int(pid) for pid in STARTED.findall(done.stderr))
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    def content(name: str) -> dict:
        ((_, record),) = iter_records(tmp_path / name)
        keep = ("task", "model", "status", "profile", "config")
        found = {key: record[key] for key in keep} | {"outputs": [c["output"] for c in record["cases"]]}
        assert found["config"].pop("results_dir") == str(tmp_path / name)  # the one override that differs
        return found

    try:
        first = run("first")
        (server,) = servers
        assert FORKED.search(first.stderr).group(2) == str(server)
        second = run("second")
        assert not STARTED.search(second.stderr), "the second command started a server instead of forking"
        child, parent = FORKED.search(second.stderr).groups()
        assert int(parent) == server and int(child) != server
        run("cold", PIPELAB_WARM="off")
        assert content("first") == content("second") == content("cold")
    finally:
        for pid in servers:
            os.kill(pid, signal.SIGTERM)


def test_a_process_that_found_no_server_runs_its_in_process_scripts_itself(tmp_path):
    """stages/sweep_task.py runs stages/run.py in-process once per sweep: when the warm path failed for the stage,
    those runs must not each try again (and wait for a server) before running."""
    (tmp_path / f"pipelab-warm-{os.getuid()}").write_text("")  # a file where the servers' folder would be
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELAB_")} | {"TMPDIR": str(tmp_path)}
    code = (
        "import sys; from pathlib import Path; from pipelab.warm import run_warm; "
        "print(run_warm(Path('.')), run_warm(Path('.')), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "False"]
    assert done.stderr.count("running here") == 1, done.stderr
