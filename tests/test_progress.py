"""Live progress of a sweep through the real Hydra CLI: plain lines when the output is not a terminal, one status
line on the terminal's bottom row when it is (the CLI runs under a pseudo-terminal, its bytes rendered by the
pyte terminal emulator), with the basic launcher (jobs in this process) and joblib (jobs in worker processes)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest
from conftest import ROOT, cli_env

from pipelab.progress import status_line

TINY = ["profile=tiny", "bench.warmup=0", "bench.min_iterations=2", "tracking.enabled=false"]
FAST = [*TINY, "bench.min_duration_s=0"]
# On a terminal: each job's bench loop lasts 0.6 s, so that every job stays on the status line for more than two of
# its refreshes (progress.REFRESH_S) however fast the machine; a fast one ran a tiny job between two refreshes.
ON_SCREEN = [*TINY, "bench.min_duration_s=0.6"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
STATUS = re.compile(r"job (\d+)/(\d+) \S.*: .*, [\d.:]+( s)? \| \d+/\d+ done \| sweep [\d.:]+( s)?$")
CASE = re.compile(r"job \d+/\d+ [^|]*: case (\d+)/(\d+)")


def isolated(tmp_path: Path, data_dir: Path) -> list[str]:
    return [f"results_dir={tmp_path / 'results'}", f"data_dir={data_dir}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]


def test_status_line_shows_each_running_job_its_case_and_the_elapsed_time():
    now = time.time()
    states = [
        {"num": 1, "name": "fill-mask m [tiny]", "phase": "done", "started": now - 9},
        {"num": 3, "name": "ner m [tiny]", "phase": "bench loop", "started": now - 2},
        {"num": 2, "name": "qa m [tiny]", "phase": "cases", "case": 4, "cases": 12, "case_id": "c4", "started": now},
    ]
    line = status_line(states, 5, now - 75)
    assert re.fullmatch(
        r"job 2/5 qa m \[tiny\]: case 4/12 \(c4\), 0\.\d s \| job 3/5 ner m \[tiny\]: bench loop, 2\.\d s"
        r" \| 1/5 done \| sweep 1:15\.\d",
        line,
    ), line
    assert status_line([], None, now).startswith("starting the next job | 0/? done")
    # too wide for the terminal: the jobs' part is cut, the done count and the sweep's time stay whole
    narrow = status_line(states, 5, now - 75, width=60)
    assert len(narrow) == 60 and re.search(r"^job 2/5 qa m.*… \| 1/5 done \| sweep 1:15\.\d$", narrow), narrow


# ----------------------------------------------------------------------------------------------------------------
# Not a terminal: plain lines
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_into_a_pipe_prints_plain_progress_lines_and_keeps_its_table(tmp_path, shared_data_dir, launcher):
    # the batch-size ablation brings its own 5 points (hydra.sweeper.params): the total counts them
    args = ["-m", "task=fill-mask", "ablation=batch_size", *FAST, *isolated(tmp_path, shared_data_dir)]
    args += JOBLIB if launcher == "joblib" else []
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "run.py"), *args],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for job in range(1, 6):
        started = [line for line in lines if line.startswith(f"progress: job {job}/5 started (")]
        assert len(started) == 1, (job, result.stdout[-3000:])
        assert "bench.batch_size=" in started[0] and ", sweep " in started[0]
        ended = re.compile(rf"progress: job {job}/5 fill-mask .*: finished \(case (\d+)/\1,")
        ended = [line for line in lines if ended.match(line)]
        assert len(ended) == 1, (job, result.stdout[-3000:])
    assert "\r" not in result.stdout and "\033" not in result.stdout + result.stderr  # no terminal codes in a log
    assert "5 jobs: 5 FINISHED" in result.stdout  # the end-of-sweep table stays
    assert not (tmp_path / "multirun" / "pipelab_progress" / "job-00000.json").exists()  # files only when live


@pytest.mark.slow
def test_progress_off_prints_no_progress_lines(tmp_path, shared_data_dir):
    args = ["-m", "task=fill-mask", *FAST, *isolated(tmp_path, shared_data_dir)]
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "run.py"), *args],
        cwd=tmp_path,
        env=cli_env(PIPELAB_PROGRESS="off"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "progress:" not in result.stdout and "1 jobs: 1 FINISHED" in result.stdout


# ----------------------------------------------------------------------------------------------------------------
# A terminal: one status line on the bottom row
# ----------------------------------------------------------------------------------------------------------------

ROWS, COLS = 30, 200


def run_in_terminal(args: list[str], cwd: Path, timeout: float = 1200) -> tuple[int, list[str], list[list[str]]]:
    """The CLI under a pseudo-terminal of ROWS x COLS rendered by pyte: (exit code, bottom rows seen, screens)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "run.py"), *args],
        cwd=cwd,
        env=cli_env(TERM="xterm"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    bottoms: list[str] = []
    screens: list[list[str]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer closed it
                break
            if not data:
                break
            stream.feed(data)
            bottoms.append(screen.display[-1].rstrip())
            screens.append(list(screen.display))
        else:
            raise AssertionError(f"the sweep did not end within {timeout} s:\n" + "\n".join(screen.display))
        return process.wait(timeout=60), bottoms, screens
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        os.close(master)


def assert_one_status_line(code: int, bottoms: list[str], screens: list[list[str]], jobs: int) -> None:
    assert code == 0, "\n".join(screens[-1])
    shown = [m for b in bottoms if (m := STATUS.search(b))]
    assert shown, bottoms[-40:]
    assert {int(m.group(2)) for m in shown} == {jobs}
    # a case shown is one of the job's cases (a tiny model's cases take milliseconds: the line may miss them)
    assert all(1 <= int(c.group(1)) <= int(c.group(2)) for b in bottoms for c in CASE.finditer(b))
    # the status line only ever on the bottom row: the output scrolls above it and never carries a copy
    for rows in screens:
        assert not any(" done | sweep " in row for row in rows[:-1]), "\n".join(rows)
    final = screens[-1]
    assert f"{jobs} jobs: {jobs} FINISHED" in "\n".join(final)  # the table, after the line was taken down
    assert " done | sweep " not in final[-1]


@pytest.mark.slow
def test_a_sweep_on_a_terminal_updates_one_status_line_with_the_basic_launcher(tmp_path, shared_data_dir):
    args = ["-m", "task=fill-mask,text-classification,ner", *ON_SCREEN, *isolated(tmp_path, shared_data_dir)]
    code, bottoms, screens = run_in_terminal(args, tmp_path)
    assert_one_status_line(code, bottoms, screens, 3)
    # it moved: more than one distinct job or case shown over the sweep
    assert len({STATUS.search(b).group(0).split(",")[0] for b in bottoms if STATUS.search(b)}) > 1


@pytest.mark.slow
def test_a_sweep_on_a_terminal_shows_the_joblib_workers_jobs(tmp_path, shared_data_dir):
    args = ["-m", "task=fill-mask", "ablation=batch_size", *ON_SCREEN, *JOBLIB, *isolated(tmp_path, shared_data_dir)]
    code, bottoms, screens = run_in_terminal(args, tmp_path)
    assert_one_status_line(code, bottoms, screens, 5)
    # the jobs run in joblib's worker processes, and the launching process's line shows them, two at a time
    shown = {int(j) for b in bottoms if STATUS.search(b) for j in re.findall(r"job (\d+)/5 ", b)}
    assert len(shown) >= 3, bottoms[-40:]
    assert any(len(re.findall(r"job \d+/5 ", b)) == 2 for b in bottoms if STATUS.search(b)), bottoms[-40:]
