"""Live progress of a sweep: job i/n, case j/m and the elapsed time.

The launching process (pipelab.sweep, at the start of a multirun) knows the number of jobs and whether its output is
a terminal; it hands both to the jobs through the environment, which joblib's worker processes inherit:

- **terminal**: one status line on the terminal's bottom row, redrawn four times a second by a thread of the
  launching process. Jobs write their state (job, run name, phase, case j/m) to `<sweep dir>/pipelab_progress/
  <job>.json`; the thread reads those files, so jobs in joblib's worker processes show up as well as jobs of the
  basic launcher. The bottom row is kept out of the terminal's scrolling region (as apt does), so every other
  output (run summaries, Hydra's log lines, warnings, worker processes writing to the same terminal) scrolls
  above it and never breaks the line: a line redrawn at the cursor (tqdm, rich) would be cut by each of them.
- **not a terminal** (CI logs, DVC's captured output, a pipe): each job prints plain lines itself, `progress: job
  i/n ...` when it starts, at most every PLAIN_INTERVAL_S while its cases run, and when it ends.

`PIPELAB_PROGRESS=off` turns both off, `PIPELAB_PROGRESS=plain` asks for plain lines on a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

ENV_MODE = "PIPELAB_PROGRESS"  # the user's choice: off | plain (anything else: live on a terminal)
PROGRESS_DIR = "pipelab_progress"  # in the sweep folder: sweep.json (mode, jobs, start), job-<num>.json (state)
SWEEP_FILE = "sweep.json"
PLAIN_INTERVAL_S = 10.0
REFRESH_S = 0.25

# ------------------------------------------------------------------------------------------------------------
# Which mode, and how many jobs
# ------------------------------------------------------------------------------------------------------------


def mode(stdout: TextIO | None = None, stderr: TextIO | None = None) -> str:
    """live (both streams are a terminal that understands cursor moves), plain, or off."""
    chosen = os.environ.get(ENV_MODE, "").strip().lower()
    if chosen in ("off", "0", "false", "no"):
        return "off"
    streams = (stdout or sys.stdout, stderr or sys.stderr)
    terminal = all(getattr(s, "isatty", lambda: False)() for s in streams)
    return "live" if terminal and chosen != "plain" and os.environ.get("TERM", "dumb") != "dumb" else "plain"


def count_jobs(config: Any) -> int | None:
    """The number of jobs Hydra's basic sweeper makes of this multirun's overrides, or None if it cannot say.

    The same expansion the sweeper does (its ``split_arguments`` over the command line's overrides plus the
    ablation config's ``hydra.sweeper.params``), done once in the launching process before any job runs.
    """
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if "params" not in config.hydra.sweeper:  # another sweeper (optuna, ...): its own way to count
            return None
        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.params or {}).items()]
        overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
        return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    except Exception:  # noqa: BLE001  (progress is a display: an unknown total shows as `?`)
        return None


# ------------------------------------------------------------------------------------------------------------
# The sweep: decided once, in the launching process
# ------------------------------------------------------------------------------------------------------------


def sweep_dir_of(config: Any) -> Path:
    """The multirun's folder (hydra.sweep.dir, relative to the working directory, which Hydra 1.3 keeps)."""
    path = Path(str(config.hydra.sweep.dir))
    return path if path.is_absolute() else Path.cwd() / path


def start_sweep(config: Any, sweep_dir: Path) -> LiveLine | None:
    """Decide the mode, count the jobs, tell the jobs through `<sweep dir>/pipelab_progress/sweep.json`.

    A file, not the environment: joblib reuses its worker processes from one sweep to the next, and they keep
    the environment of the first. Returns the live line to stop at the end, if the mode is live.
    """
    folder = sweep_dir / PROGRESS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    chosen = mode()
    total = count_jobs(config)
    info = {"mode": chosen, "jobs": total, "started": time.time()}
    (folder / SWEEP_FILE).write_text(json.dumps(info), encoding="utf-8")
    if chosen != "live":
        return None
    line = LiveLine(folder, total, info["started"], sys.stderr.fileno())
    line.start()
    return line


# ------------------------------------------------------------------------------------------------------------
# The job's side (whatever process runs it)
# ------------------------------------------------------------------------------------------------------------

_job: dict[str, Any] = {}


def _elapsed(since: float) -> str:
    seconds = max(0.0, time.time() - since)
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def start_job(sweep_dir: Path, num: int) -> None:
    """Called as a job of a multirun starts (pipelab.sweep's on_job_start, in the job's process); num from 0."""
    _job.clear()
    try:
        info = json.loads((sweep_dir / PROGRESS_DIR / SWEEP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a sweep this module did not start: no progress
    if info.get("mode") not in ("live", "plain"):
        return
    _job.update(
        num=num + 1,
        total=info.get("jobs") or "?",
        sweep_started=info.get("started", time.time()),
        started=time.time(),
        name="",
        phase="starting",
        printed=0.0,
        case=0,
        cases=0,
    )
    if info["mode"] == "live":
        _job["path"] = sweep_dir / PROGRESS_DIR / f"job-{num:05d}.json"
        _write()
    else:
        _plain(f"started ({_overrides_of(sweep_dir, num)})")


def _overrides_of(sweep_dir: Path, num: int) -> str:
    # Hydra writes each job's overrides to <sweep dir>/<num>/.hydra/overrides.yaml before it calls the job
    path = sweep_dir / str(num) / ".hydra" / "overrides.yaml"
    try:
        lines = [line.removeprefix("- ").strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return " ".join(line for line in lines if line) or "no overrides"
    except OSError:
        return "overrides unknown"


def update(**fields: Any) -> None:
    """The job's state changed: name=, phase= (loading model | cases | bench | logging), case=, cases=, case_id=.

    Does nothing outside a sweep (a single run) or with progress off.
    """
    if not _job:
        return
    _job.update(fields)
    if "path" in _job:
        _write()
    elif _job["phase"] == "cases" and time.time() - _job["printed"] >= PLAIN_INTERVAL_S:
        _plain(f"{_job['name']}: case {_job['case']}/{_job['cases']} ({_job.get('case_id', '')})")


def end_job(status: str) -> None:
    """Called as the job ends (on_job_end), with its status."""
    if not _job:
        return
    _job.update(phase="done", status=status, ended=time.time())
    if "path" in _job:
        _write()
    else:
        done = f"case {_job['case']}/{_job['cases']}, " if _job["cases"] else ""
        _plain(f"{_job['name'] or 'job'}: {status.lower()} ({done}{_elapsed(_job['started'])} in the job)")
    _job.clear()


def _plain(text: str) -> None:
    _job["printed"] = time.time()
    # one write per line: lines of parallel jobs never interleave within a line
    sys.stdout.write(f"progress: job {_job['num']}/{_job['total']} {text}, sweep {_elapsed(_job['sweep_started'])}\n")
    sys.stdout.flush()


def _write() -> None:
    state = {k: v for k, v in _job.items() if k not in ("path", "printed", "total", "sweep_started")}
    path: Path = _job["path"]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, path)  # the display reads the old state or the new one, never half of one
    except OSError:
        pass  # a display that misses one update is still right at the next


# ------------------------------------------------------------------------------------------------------------
# The launching process: the live line
# ------------------------------------------------------------------------------------------------------------


def status_line(states: list[dict[str, Any]], total: int | None, started: float, width: int | None = None) -> str:
    """`job 2/3 text-generation gpt2 [tiny]: case 4/12 (course-0), 1.2 s | 1/3 done | sweep 6.1 s`.

    With a width, a line too wide cuts the jobs' part and keeps `k/n done | sweep t` whole at its end.
    """
    n = "?" if total is None else str(total)
    running = [s for s in states if s.get("phase") != "done"]
    done = len(states) - len(running)
    parts = []
    for s in sorted(running, key=lambda s: s.get("num", 0)):
        what = s.get("phase", "")
        if what == "cases":
            what = f"case {s.get('case')}/{s.get('cases')}" + (f" ({s['case_id']})" if s.get("case_id") else "")
        name = f" {s['name']}" if s.get("name") else ""
        parts.append(f"job {s.get('num')}/{n}{name}: {what}, {_elapsed(s.get('started', started))}")
    if not parts:
        parts.append("starting the next job" if done < (total or done + 1) else "finishing")
    jobs, tail = " | ".join(parts), f" | {done}/{n} done | sweep {_elapsed(started)}"
    if width is not None and len(jobs) + len(tail) > width:
        jobs = jobs[: max(width - len(tail) - 1, 0)] + "…"
    return jobs + tail


class LiveLine:
    """The status line on the terminal's bottom row, outside the scrolling region, redrawn by a thread."""

    def __init__(self, folder: Path, total: int | None, started: float, fd: int) -> None:
        self.dir = folder
        self.total = total
        self.fd = fd
        self.started = started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipelab-progress", daemon=True)
        self._rows = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        if self._rows:
            # whole screen scrolls again; the status row is cleared; the cursor goes back where the output was
            self._out(f"\0337\033[r\033[{self._rows};1H\033[2K\0338")

    def _out(self, text: str) -> None:
        try:
            os.write(self.fd, text.encode("utf-8", "replace"))
        except OSError:
            pass

    def _states(self) -> list[dict[str, Any]]:
        states = []
        for path in sorted(self.dir.glob("job-*.json")):
            try:
                states.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return states

    def _draw(self) -> None:
        try:
            columns, rows = os.get_terminal_size(self.fd)
        except OSError:
            return
        if rows < 2:
            return
        if rows != self._rows:
            # a new line first, so the output's last line is not under the status row; then the scrolling
            # region is every row but the last (setting it homes the cursor: save and restore around it)
            self._out(f"\n\0337\033[1;{rows - 1}r\0338\033[1A" if not self._rows else f"\0337\033[1;{rows - 1}r\0338")
            self._rows = rows
        line = status_line(self._states(), self.total, self.started, width=columns - 1)
        self._out(f"\0337\033[{rows};1H\033[2K\033[7m{line}\033[0m\0338")

    def _loop(self) -> None:
        while True:
            self._draw()
            if self._stop.wait(REFRESH_S):
                return
