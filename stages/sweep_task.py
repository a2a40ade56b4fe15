"""DVC stage `run@<task>`: one task's course sweep, then its ablation sweeps, each through `stages/run.py -m`.

    python stages/sweep_task.py text-generation

Reads the profile, the task's ablations and the latency protocol from params.yaml and passes them as Hydra
overrides (and the profile's thread count as OMP_NUM_THREADS); conf/ stays the only source of each run's
configuration. Each sweep is its own process (as a user
would type it), so a crash in one cannot take the others down; Hydra's job folders go to
multirun/dvc/<task>/<sweep>/ (git-ignored) and the records to results/runs/<task>/ (the stage's output).
Exits non-zero if a job left no record; a FAILED run is a record, shown as such in the reports.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELAB_ROOT", str(ROOT))

from pipelab.config import ConfigError  # noqa: E402
from pipelab.dag import check_sweep, load_params, run_environment, task_sweeps  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", help="a task listed under `tasks` in params.yaml")
    task = parser.parse_args().task
    try:
        params = load_params(ROOT / "params.yaml", ROOT)
        sweeps = task_sweeps(params, task)
    except ConfigError as exc:
        print(f"sweep_task: error: {exc}", file=sys.stderr)
        return 2
    failures: list[str] = []
    for sweep in sweeps:
        sweep_dir = sweep.sweep_dir(ROOT / "multirun" / "dvc")
        shutil.rmtree(sweep_dir, ignore_errors=True)  # job folders of a previous run would be counted as jobs
        cmd = [sys.executable, "stages/run.py", "-m", *sweep.overrides, f"hydra.sweep.dir={sweep_dir}"]
        print(f"\nsweep_task: {task} / {sweep.label}: {shlex.join(cmd)}", flush=True)
        started = time.perf_counter()
        env = run_environment(params, dict(os.environ))
        returncode = subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
        rows, problems = check_sweep(sweep_dir, ROOT / "results" / "runs" / task)
        failed = sum(1 for row in rows if row.get("status") == "FAILED")
        print(
            f"sweep_task: {task} / {sweep.label}: {len(rows)} jobs, {failed} FAILED, exit code {returncode}, "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        failures += [f"{sweep.label}: {problem}" for problem in problems]
    for failure in failures:
        print(f"sweep_task: error: {task} {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
