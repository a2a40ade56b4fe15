"""How long the grid takes, in a fresh clone: the tiny DAG, a no-op repro, the all-task multirun, the hub DAG.

    python benchmarks/grid.py                    # all four, one JSON line each
    python benchmarks/grid.py --only tiny noop   # a subset

Each measurement runs in a fresh `git clone` of this checkout (committed state only) under a temp folder, with
this interpreter's venv on PATH and the clone's own src/ first on PYTHONPATH (the venv's editable install points
at this checkout, whose working tree may differ), exactly as a user types the command:

- ``tiny``: ``dvc exp run -S profile=tiny`` (the tiny models are built by its fetch stage unless
  ``--tiny-cache DIR`` gives a data/tiny to copy in, as tests/test_dag.py does);
- ``noop``: ``dvc repro`` right after, which runs nothing;
- ``multirun``: ``python stages/run.py -m task=<every task> profile=tiny``, typed twice in a fresh clone and the
  second one timed: in its own process (``PIPELAB_WARM=off``), then in another clone forked from the warm server
  that the first command started (what a user iterating on a config gets);
- ``hub``: ``dvc repro`` on the default profile hub against ``tests/hub_server.py`` (stand-ins of every pin),
  with the latency protocol shortened to the tiny one as tests/test_hub_dag.py does, and one thread.

The model loads of each DVC stage come from the stage's last line (``N model loads, M cache hits``).
Nothing else should run meanwhile: the figures are wall-clock times on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGE_LINE = re.compile(
    r"sweep_task: (\S+): (\d+) sweeps, (\d+) jobs in one process, (\d+) model loads, (\d+) cache hits"
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELAB_", "MLFLOW_", "DVC_", "HF_"))}
    env.pop("TRANSFORMERS_OFFLINE", None)
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "TOKENIZERS_PARALLELISM": "false"})
    return env


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"grid: {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return seconds, done.stdout + done.stderr


def _clone(into: Path) -> Path:
    repo = into / "pipelab"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    return repo


def _clone_env(repo: Path, **extra: str) -> dict[str, str]:
    """The benchmark's environment for commands in `repo`: its own library, not this checkout's."""
    return _env() | {"PYTHONPATH": str(repo / "src")} | extra


def _loads(output: str) -> dict[str, dict[str, int]]:
    return {
        m[1]: {"sweeps": int(m[2]), "jobs": int(m[3]), "model_loads": int(m[4]), "cache_hits": int(m[5])}
        for m in STAGE_LINE.finditer(output)
    }


def tiny_and_noop(base: Path, tiny_cache: Path | None, want: set[str]) -> list[dict]:
    repo = _clone(base / "tiny")
    if tiny_cache is not None:
        shutil.copytree(tiny_cache, repo / "data" / "tiny")
    env = _clone_env(repo, HF_HUB_OFFLINE="1")
    rows = []
    seconds, output = _timed([str(BIN / "dvc"), "exp", "run", "-S", "profile=tiny"], repo, env)
    stages = _loads(output)
    if "tiny" in want:
        runs = sum(s["jobs"] for s in stages.values())
        rows.append(
            {"measure": "dvc exp run -S profile=tiny", "seconds": round(seconds, 1), "jobs": runs, "stages": stages}
        )
    if "noop" in want:
        seconds, _ = _timed([str(BIN / "dvc"), "repro"], repo, env)
        rows.append({"measure": "no-op dvc repro", "seconds": round(seconds, 2)})
    _stop_servers(output)
    return rows


def multirun(base: Path, tiny_cache: Path | None, warm: bool) -> dict:
    """The all-task multirun typed twice in a fresh clone; the second is timed: in its own process (`warm` False,
    PIPELAB_WARM=off) or forked from the warm server the first one started."""
    repo = _clone(base / f"multirun-{'warm' if warm else 'cold'}")
    if tiny_cache is not None:
        shutil.copytree(tiny_cache, repo / "data" / "tiny")
    from pipelab.tasks import TASK_NAMES

    env = _clone_env(repo, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PIPELAB_WARM="on" if warm else "off")
    args = [sys.executable, "stages/run.py", "-m", f"task={','.join(TASK_NAMES)}", "profile=tiny"]
    # The first command builds the tiny models (the fetch stage's job in the DAG), so the figure is the multirun's
    # own; with warm start it also starts the server that the timed command forks from.
    _, first = _timed([*args, "tracking.enabled=false", "results_dir=warm"], repo, env)
    try:
        seconds, _ = _timed(args, repo, env)
    finally:
        _stop_servers(first)
    how = "forked from the warm server the first command started" if warm else "its own process, PIPELAB_WARM=off"
    return {
        "measure": f"python stages/run.py -m task=<{len(TASK_NAMES)} tasks> profile=tiny ({how})",
        "seconds": round(seconds, 1),
    }


def _stop_servers(output: str) -> None:
    """Stop the warm servers a command said it started (they would otherwise idle for a minute)."""
    from pipelab.warm import STARTED

    for pid in STARTED.findall(output):
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            continue


def hub(base: Path) -> dict:
    repo = _clone(base / "hub")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["bench"]["hub"] = dict(params["bench"]["tiny"])
    params["threads"]["hub"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(
        ["git", "-c", "user.name=grid", "-c", "user.email=grid@invalid", "commit", "-qam", "short bench"],
        cwd=repo,
        check=True,
    )
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "hub_server.py"), "--root", str(base / "hubroot"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        url = line.strip().removeprefix("serving ")
        if not url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"grid: the local Hub did not start: {line!r}")
        seconds, output = _timed([str(BIN / "dvc"), "repro"], repo, _clone_env(repo, HF_ENDPOINT=url))
    finally:
        server.terminate()
        server.wait(timeout=30)
    _stop_servers(output)
    stages = _loads(output)
    return {
        "measure": "dvc repro (profile hub, local Hub server, short bench)",
        "seconds": round(seconds, 1),
        "jobs": sum(s["jobs"] for s in stages.values()),
        "stages": stages,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=("tiny", "noop", "multirun", "hub"), default=None)
    parser.add_argument("--tiny-cache", type=Path, default=None, help="a data/tiny folder to copy into the clones")
    args = parser.parse_args(argv)
    want = set(args.only or ("tiny", "noop", "multirun", "hub"))
    with tempfile.TemporaryDirectory(prefix="pipelab-grid-") as tmp:
        base = Path(tmp)
        rows = []
        if want & {"tiny", "noop"}:
            rows += tiny_and_noop(base, args.tiny_cache, want)
        if "multirun" in want:
            rows += [multirun(base, args.tiny_cache, warm=False), multirun(base, args.tiny_cache, warm=True)]
        if "hub" in want:
            rows.append(hub(base))
        for row in rows:
            print(json.dumps(row | {"loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
