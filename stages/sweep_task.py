"""DVC stage `run@<task>`: one task's course sweep, then its ablation sweeps, all in this one process.

    python stages/sweep_task.py text-generation

Reads the profile, the task's ablations and the latency protocol from params.yaml and turns them into Hydra
overrides (and the profile's thread count into OMP_NUM_THREADS); conf/ stays the only source of each run's
configuration. Each sweep is exactly `python stages/run.py -m <overrides>` as a user would type it, run
in-process: stages/run.py is executed as __main__ with that argv, so Hydra composes, launches and calls back as
it does from a shell. The process is forked from the warm server (pipelab.warm), which imported torch,
transformers and MLflow once for every stage of the DAG; and the pipeline cache (pipelab.pipeline_cache) serves
every sweep of the stage, so a model loads once per stage. An exception in one sweep is printed and the next
sweep still runs. Hydra's job folders go to multirun/dvc/<task>/<sweep>/ (git-ignored), the records to
results/runs/<task>/ (the stage's output). Exits non-zero if a job left no record; a FAILED run is a record,
shown as such in the reports.
"""

from __future__ import annotations

import argparse
import os
import runpy
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELAB_ROOT", str(ROOT))

from pipelab.config import ConfigError  # noqa: E402
from pipelab.dag import check_sweep, load_params, run_environment, task_sweeps  # noqa: E402

RUN_SCRIPT = ROOT / "stages" / "run.py"


def run_sweep(argv: list[str]) -> int:
    """`python stages/run.py <argv>` in this process; its exit code (Hydra exits 1 when a job raised)."""
    from pipelab.sweep import finish_open_sweeps

    saved = sys.argv
    sys.argv = [str(RUN_SCRIPT), *argv]
    try:
        runpy.run_path(str(RUN_SCRIPT), run_name="__main__")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # noqa: BLE001  (a sweep that crashes outside Hydra's own reporting: the others still run)
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved
        finish_open_sweeps()


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
    # Before torch is imported by the first run: OMP_NUM_THREADS is read once, at import.
    os.environ.update(run_environment(params, dict(os.environ)))
    os.chdir(ROOT)  # the sweeps' relative paths (hydra.sweep.dir, stages/run.py) are the repo's, as in a shell
    from pipelab.warm import run_warm

    code = run_warm(ROOT)  # this script again, in a process forked from one that imported torch & co once
    if code is not None:
        return code
    stage_started = time.perf_counter()
    failures: list[str] = []
    total_jobs = 0
    for sweep in sweeps:
        sweep_dir = sweep.sweep_dir(ROOT / "multirun" / "dvc")
        shutil.rmtree(sweep_dir, ignore_errors=True)  # job folders of a previous run would be counted as jobs
        argv = ["-m", *sweep.overrides, f"hydra.sweep.dir={sweep_dir}"]
        print(f"\nsweep_task: {task} / {sweep.label}: python stages/run.py {shlex.join(argv)}", flush=True)
        started = time.perf_counter()
        returncode = run_sweep(argv)
        rows, problems = check_sweep(sweep_dir, ROOT / "results" / "runs" / task)
        failed = sum(1 for row in rows if row.get("status") == "FAILED")
        print(
            f"sweep_task: {task} / {sweep.label}: {len(rows)} jobs, {failed} FAILED, exit code {returncode}, "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        failures += [f"{sweep.label}: {problem}" for problem in problems]
        total_jobs += len(rows)
    from pipelab.pipeline_cache import cache_stats

    stats = cache_stats()
    print(
        f"\nsweep_task: {task}: {len(sweeps)} sweeps, {total_jobs} jobs in one process, "
        f"{stats['loads']} model loads, {stats['hits']} cache hits, {stats['evictions']} evictions, "
        f"{time.perf_counter() - stage_started:.1f} s",
        flush=True,
    )
    for failure in failures:
        print(f"sweep_task: error: {task} {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
