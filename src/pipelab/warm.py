"""Warm start: runs and the DAG's stages are forked from one server that imported torch, transformers and MLflow.

A Python process that runs pipelab used to pay ~9 s (quiet 2-core machine; 15-20 s under load) of `import torch`,
`from transformers import pipeline` and `import mlflow` before its first run: once per DVC stage, and once per
command a user types. With warm start, `stages/run.py` and `stages/sweep_task.py` ask a server for a process
instead:

- the first command starts the server (`warm: starting ...`): a process of its own session that imports the
  libraries of PRELOAD once, then listens on a Unix socket in the temp folder, named after the repo, the
  interpreter and the environment. The DAG's `fetch` stage starts it early (:func:`start_early`), with the run
  stages' environment, so that the imports overlap its own work; a command that finds the server still
  importing waits for it;
- each command connects, hands over its stdin/stdout/stderr (SCM_RIGHTS), argv, working folder and environment;
  the server forks, and the child runs the script as `__main__` exactly as `python <script> <args>`
  would (its own output, exit code, signals forwarded by the client); the client exits with the child's code;
- the server exits after IDLE_S without a command (`PIPELAB_WARM_IDLE_S`), when a file of any module it imported
  changed (a `pip install`, an edit: the next command starts a fresh server), or on SIGTERM (its pid is in
  `<socket>.pid`).

No torch operation runs in the server before a fork (its thread pools start in the children), and the pipelab
modules a command runs are imported by the child, from the files as they are then. Anything that stops the warm
path (no server after START_TIMEOUT_S, a refusal) runs the script in the calling process, as before, and so do
the scripts that process then runs in-process. `PIPELAB_WARM=off` turns warm start off.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import io
import json
import os
import re
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ENV_SWITCH = "PIPELAB_WARM"  # off: every command and stage imports its own libraries
ENV_IDLE = "PIPELAB_WARM_IDLE_S"
IDLE_S = 60.0  # bridges DVC's work between two stages (~5 s) and a look at one run's output; does not linger
START_TIMEOUT_S = 300.0  # the imports take ~9 s quiet, a minute on a loaded machine
# What a run imports that costs seconds (python -X importtime, quiet): transformers' pipeline 5.7 s over
# torch's 2.7 s, mlflow with its SQL store 4.2 s. Hydra and OmegaConf come with them.
PRELOAD = (
    "torch",
    "transformers",
    "transformers.pipelines",
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "hydra",
    "omegaconf",
)
# Set per stage or per shell, read by none of PRELOAD at import: not part of the server's identity.
VOLATILE_ENV = ("DVC_STAGE", "_", "PWD", "OLDPWD", "SHLVL")

# What _spawn prints, for the tools that stop the servers their commands started (tests, benchmarks/grid.py).
STARTED = re.compile(r"warm: starting a server \(pid (\d+)\)")

SERVER_MAIN = "import sys; from pipelab.warm import serve; serve(sys.argv[1])"  # this module, not a __main__ copy

# Set in a forked child, or once this process chose to run its script itself: the scripts it runs in-process
# (stages/sweep_task.py runs stages/run.py once per sweep) run here too, instead of asking a server again.
_in_child = False


# ------------------------------------------------------------------------------------------------------------
# The client: what a stage script calls
# ------------------------------------------------------------------------------------------------------------


def run_warm(root: Path) -> int | None:
    """Run this process's script (sys.argv) in a child of the warm server; its exit code, or None to run here.

    None when warm start is off, in the warm child itself, or when no server could serve (said on stderr).
    """
    if _in_child or _switched_off():
        return None
    env = dict(os.environ)
    argv = [os.path.abspath(sys.argv[0]), *sys.argv[1:]]
    paths = _paths(root, env)
    try:
        paths["dir"].mkdir(mode=0o700, parents=True, exist_ok=True)
        for _attempt in range(2):  # a stale server refuses once and makes way for a fresh one
            with open(paths["lock"], "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one client starts the server; the others wait for it
                conn = _connect(paths["sock"]) or _await_server(paths, _starting(paths) or _spawn(paths, env))
            if conn is None:
                return _run_here()
            reply = _request(conn, argv, os.getcwd(), env)
            if not reply.get("refused"):
                return _wait_for_child(conn, int(reply["pid"]), reply)
            conn.close()
            print(f"warm: the server refused: {reply['refused']}", file=sys.stderr, flush=True)
    except OSError as exc:
        print(f"warm: {exc}; running here", file=sys.stderr, flush=True)
        return _run_here()
    print("warm: no server would run it; running here", file=sys.stderr, flush=True)
    return _run_here()


def _run_here() -> None:
    global _in_child
    _in_child = True
    return None


def start_early(root: Path, env: dict[str, str]) -> None:
    """Start the server that stages with environment `env` will use, and return without waiting for it.

    The DAG's fetch stage calls it with the run stages' environment: the server's imports (~9 s) then overlap
    fetch's own work instead of delaying the first run stage. Nothing happens when warm start is off or such a
    server runs or is starting already.
    """
    if _in_child or _switched_off():
        return
    paths = _paths(root, env)
    try:
        paths["dir"].mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(paths["lock"], "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn = _connect(paths["sock"])
            if conn is not None:
                conn.close()
            elif _starting(paths) is None:
                _spawn(paths, env)
    except OSError as exc:
        print(f"warm: {exc}; the run stages will start their server themselves", file=sys.stderr, flush=True)


def _switched_off() -> bool:
    return os.environ.get(ENV_SWITCH, "").lower() in ("off", "0", "false", "no")


def _starting_file(sock: Path) -> Path:
    """Where a server's starter leaves its pid until the server listens (the server removes it then)."""
    return sock.with_suffix(".starting")


def _paths(root: Path, env: dict[str, str]) -> dict[str, Path]:
    identity = {k: v for k, v in env.items() if k not in VOLATILE_ENV}
    key = hashlib.sha256(
        json.dumps([str(root.resolve()), sys.executable, sorted(identity.items())]).encode("utf-8")
    ).hexdigest()[:20]
    folder = Path(tempfile.gettempdir()) / f"pipelab-warm-{os.getuid()}"  # short: a socket path has 107 bytes
    return {
        "dir": folder,
        "sock": folder / f"{key}.sock",
        "lock": folder / f"{key}.lock",
        "log": folder / f"{key}.log",
    }


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        return conn
    except OSError:
        conn.close()
        return None


def _spawn(paths: dict[str, Path], env: dict[str, str]) -> int:
    """Start a server for `env` (its pid in the `.starting` file until it listens); return its pid."""
    paths["sock"].unlink(missing_ok=True)  # a server that died left its socket file
    with open(paths["log"], "ab") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from pipelab.warm import serve; serve(sys.argv[1])",
                str(paths["sock"]),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # not in the stage's process group: DVC's Ctrl-C reaches the stage, not it
            close_fds=True,
        )
    _starting_file(paths["sock"]).write_text(f"{server.pid}\n")
    print(
        f"warm: starting a server (pid {server.pid}) that imports torch, transformers and mlflow once; "
        f"later runs fork from it. It exits after {_idle_s():.0f} s idle; {ENV_SWITCH}=off runs each command "
        f"on its own. Log: {paths['log']}",
        file=sys.stderr,
        flush=True,
    )
    return server.pid


def _starting(paths: dict[str, Path]) -> int | None:
    """The pid of a server that was started and may still be importing, if that process is alive."""
    try:
        pid = int(_starting_file(paths["sock"]).read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # our own child that exited is a zombie until reaped: reap it, it is gone
        return os.waitpid(pid, os.WNOHANG)[0] == 0
    except ChildProcessError:  # not our child (started by another stage): alive, as kill(0) said
        return True


def _await_server(paths: dict[str, Path], pid: int) -> socket.socket | None:
    """Connect to server `pid` once it listens; None if it exits first or takes longer than START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = _connect(paths["sock"])
        if conn is not None:
            return conn
        if not _alive(pid):
            print(f"warm: the server (pid {pid}) exited; see {paths['log']}. Running here.", file=sys.stderr)
            return None
        time.sleep(0.05)
    print(f"warm: no server after {START_TIMEOUT_S:.0f} s; running here", file=sys.stderr, flush=True)
    return None


def _request(conn: socket.socket, argv: list[str], cwd: str, env: dict[str, str]) -> dict[str, Any]:
    payload = json.dumps({"argv": argv, "cwd": cwd, "env": env}).encode("utf-8")
    socket.send_fds(conn, [struct.pack("!I", len(payload))], [0, 1, 2])
    conn.sendall(payload)
    return _read_line(conn) or {"refused": "the server closed the connection"}


def _read_line(conn: socket.socket) -> dict[str, Any] | None:
    # A byte at a time (a message is ~100 bytes): reading more could swallow the next message, the child's
    # exit, when a quick child ends before the client has read the reply that names it.
    data = b""
    while not data.endswith(b"\n"):
        try:
            byte = conn.recv(1)
        except InterruptedError:
            continue
        if not byte:
            return None
        data += byte
    return json.loads(data)


def _wait_for_child(conn: socket.socket, pid: int, reply: dict[str, Any]) -> int:
    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    print(
        f"warm: running in pid {pid}, forked from the server (pid {reply['server']}, imports done "
        f"{reply['warm_s']:.0f} s ago)",
        file=sys.stderr,
        flush=True,
    )
    ended = _read_line(conn)
    conn.close()
    if ended is None:
        print(f"warm: lost the server while pid {pid} ran; see its log", file=sys.stderr)
        return 1
    code = int(ended["exit"])
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


# ------------------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------------------


def _idle_s() -> float:
    try:
        return float(os.environ.get(ENV_IDLE, IDLE_S))
    except ValueError:
        return IDLE_S


def _module_files() -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of the file of every imported module: a change means the server's code is stale."""
    stats = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            try:
                st = os.stat(path)
                stats[path] = (st.st_mtime_ns, st.st_size)
            except OSError:
                continue
    return stats


def _changed(files: dict[str, tuple[int, int]]) -> str | None:
    for path, seen in files.items():
        try:
            st = os.stat(path)
        except OSError:
            return path
        if (st.st_mtime_ns, st.st_size) != seen:
            return path
    return None


def serve(sock_path: str) -> None:
    """The server's main loop (run by run_warm in a new session): import PRELOAD, then fork a child per request."""
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped by its pid: it still removes its files
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    files = _module_files()
    warm_at = time.monotonic()
    print(f"warm server {os.getpid()}: imports took {warm_at - started:.1f} s", flush=True)
    path = Path(sock_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    pid_file = path.with_suffix(".pid")
    pid_file.write_text(f"{os.getpid()}\n")
    starting = _starting_file(path)  # listening now: no longer a server that stages wait for
    if starting.is_file() and starting.read_text().strip() == str(os.getpid()):
        starting.unlink(missing_ok=True)
    inode = path.stat().st_ino
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    last = time.monotonic()
    accepting = True
    try:
        while accepting or children:  # a server that stops accepting still reports its running children's ends
            for key, _ in selector.select(timeout=0.2):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    pid = _serve_one(conn, listener, selector, path, files, warm_at)
                    if pid is not None and pid < 0:  # stale: make way for a fresh server
                        accepting = False
                        selector.unregister(listener)
                        listener.close()
                    elif pid is not None:
                        children[pid] = conn
                        selector.register(conn, selectors.EVENT_READ, pid)
                elif not key.fileobj.recv(1, socket.MSG_PEEK):  # the client went away: its stage must not run on
                    selector.unregister(key.fileobj)
                    try:
                        os.kill(key.data, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                conn = children.pop(pid, None)
                if conn is None:
                    continue
                try:
                    selector.unregister(conn)
                except (KeyError, ValueError):
                    pass
                _reply(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()
            if children:
                last = time.monotonic()
            elif accepting and time.monotonic() - last > _idle_s():
                print(f"warm server {os.getpid()}: idle {_idle_s():.0f} s, exiting", flush=True)
                accepting = False
            if accepting and _socket_inode(path) != inode:
                accepting = False  # the socket file was removed or taken by another server: nobody can reach us
    finally:
        listener.close()
        if _socket_inode(path) == inode:
            path.unlink(missing_ok=True)
        try:
            if pid_file.read_text().strip() == str(os.getpid()):  # not a fresh server's, written since
                pid_file.unlink()
        except OSError:
            pass


def _socket_inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _serve_one(
    conn: socket.socket,
    listener: socket.socket,
    selector: selectors.BaseSelector,
    path: Path,
    files: dict[str, tuple[int, int]],
    warm_at: float,
) -> int | None:
    """Read one request and fork its child: the child's pid; None if the request was bad; -1 if stale."""
    conn.settimeout(30)
    try:
        header, fds, _, _ = socket.recv_fds(conn, 4, 3)
        while len(header) < 4:
            header += conn.recv(4 - len(header))
        (size,) = struct.unpack("!I", header)
        payload = b""
        while len(payload) < size:
            chunk = conn.recv(size - len(payload))
            if not chunk:
                raise OSError("short request")
            payload += chunk
        request = json.loads(payload)
    except (OSError, ValueError, struct.error):
        conn.close()
        return None
    conn.settimeout(None)
    if len(fds) != 3:
        _reply(conn, {"refused": "the request did not carry stdin, stdout and stderr"})
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    stale = _changed(files)
    if stale:
        path.unlink(missing_ok=True)  # the client's next connect finds no server and starts a fresh one
        _reply(conn, {"refused": f"{stale} changed since the server imported it"})
        for fd in fds:
            os.close(fd)
        conn.close()
        return -1
    pid = os.fork()
    if pid == 0:
        selector.close()
        listener.close()
        conn.close()
        _child(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    _reply(conn, {"pid": pid, "server": os.getpid(), "warm_s": time.monotonic() - warm_at})
    return pid


def _reply(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps(message).encode("utf-8") + b"\n")
    except OSError:
        pass


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become the client's process (stdio, folder, environment, argv) and run its script."""
    global _in_child
    _in_child = True
    code = 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's handler is not the stage's
    try:
        os.setsid()  # out of the server's session: the server's group is not the stage's
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
        # as a fresh interpreter would: line-buffered on a terminal, block-buffered into a pipe
        sys.stdin = sys.__stdin__ = io.TextIOWrapper(open(0, "rb", closefd=False), encoding="utf-8")
        sys.stdout = sys.__stdout__ = _text_out(1, unbuffered)
        sys.stderr = sys.__stderr__ = _text_out(2, True)
        _reseed()
        sys.argv = list(request["argv"])
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001  (a traceback, as the interpreter prints it, then the exit code 1)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _text_out(fd: int, line_buffered: bool) -> io.TextIOWrapper:
    raw = open(fd, "wb", buffering=0, closefd=False)
    tty = os.isatty(fd)
    return io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding="utf-8",
        errors="backslashreplace" if fd == 2 else "strict",
        line_buffering=line_buffered or tty,
        write_through=line_buffered and not tty,
    )


def _reseed() -> None:
    # a fresh process starts torch and numpy from fresh random seeds; forked children would all share the server's
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()
