"""Real services for tests, on 127.0.0.1 only, each in its own process group and stopped by its PID.

    with postgres(tmp) as pg, mlflow_server(pg.url("mlflow"), tmp / "artifacts") as server:
        ...  # server.uri is http://127.0.0.1:<port>

PostgreSQL is Debian's `postgresql` package (requirements-apt.txt): initdb and postgres from
/usr/lib/postgresql/<version>/bin, run as the `postgres` user when the tests run as root (the server refuses
root), with its data, log and unix socket in a private temp folder and TCP on a free loopback port. The MLflow
server runs with the lean settings the README recommends (no job execution, one worker) and proxies artifacts
to a folder. Both are stopped by PID (SIGTERM, then SIGKILL after a bound) whatever happens in the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

MLFLOW = Path(sys.executable).with_name("mlflow")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def stop_group(process: subprocess.Popen, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Stop a process started with start_new_session=True, and everything in its group, by its PID."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    # Workers that left the group's leader behind (uvicorn's, huey's) are still in the group: end them too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: `apt-get install -y postgresql` (listed in requirements-apt.txt)"
        )
    return found[-1].parent


@dataclass
class Postgres:
    port: int
    process: subprocess.Popen
    bindir: Path
    user: str

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@{LOOPBACK}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", LOOPBACK, "-p", str(self.port), "-U", self.user, name],
            check=True,
            capture_output=True,
            timeout=30,
        )


@contextlib.contextmanager
def postgres(timeout: float = 60.0) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth: it listens on 127.0.0.1 only)."""
    bindir = _postgres_bin()
    as_root = os.geteuid() == 0
    run_as = "postgres" if as_root else None
    base = Path(tempfile.mkdtemp(prefix="pipelab-pg-"))
    data, sockets = base / "data", base / "sockets"
    sockets.mkdir()
    if as_root:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
    process = None
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
            user=run_as,
            cwd=base,
        )
        port = free_port()
        log = (base / "postgres.log").open("w")
        process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets)]
            + ["-c", f"listen_addresses={LOOPBACK}", "-c", "fsync=off"],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=run_as,
            cwd=base,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", LOOPBACK, "-p", str(port)], capture_output=True, timeout=10
            )
            if ready.returncode == 0:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(base / 'postgres.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield Postgres(port, process, bindir, "postgres")
    finally:
        if process is not None:
            stop_group(process, sig=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class MlflowServer:
    uri: str
    port: int
    process: subprocess.Popen
    started_s: float  # from the command to a /health that answers
    artifacts: Path  # where the server stores the artifacts it proxies

    def memory_mib(self) -> float:
        """Resident memory of the server and its workers."""
        parent = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 2**20

    def processes(self) -> int:
        return 1 + len(psutil.Process(self.process.pid).children(recursive=True))


def start_mlflow_server(
    backend_uri: str, artifacts: Path, port: int | None = None, log: Path | None = None, timeout: float = 180.0
) -> MlflowServer:
    """`mlflow server` with the lean settings, artifacts proxied to a folder; returns once /health answers."""
    port = port or free_port()
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no huey consumers: 2 processes instead of 10
    output = log.open("a") if log else subprocess.DEVNULL
    started = time.monotonic()
    process = subprocess.Popen(
        [str(MLFLOW), "server", "--host", LOOPBACK, "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts), "--serve-artifacts"],
        stdout=output,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    uri = f"http://{LOOPBACK}:{port}"
    deadline = started + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_group(process)
            tail = log.read_text()[-3000:] if log else ""
            raise RuntimeError(f"mlflow server did not answer on {uri} within {timeout:.0f} s: {tail}")
        time.sleep(0.25)
    return MlflowServer(uri, port, process, time.monotonic() - started, artifacts)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, port: int | None = None, log: Path | None = None):
    server = start_mlflow_server(backend_uri, artifacts, port, log)
    try:
        yield server
    finally:
        stop_group(server.process)
