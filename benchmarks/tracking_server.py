"""How many runs per second a lean `mlflow server` on PostgreSQL takes from pipelab (README: Scale on paper).

    python benchmarks/tracking_server.py                         # 40 runs, 1 and 4 client processes
    python benchmarks/tracking_server.py --runs 100 --clients 1 2 4

Starts PostgreSQL (Debian's package) and `mlflow server` with the README's team recipe (no job execution, one
worker, artifacts proxied to a folder) on 127.0.0.1, both in a temp folder, then logs runs the way a pipelab run
does, through pipelab.tracking.RunLogger: create the run, log its params (in batches of 100), its metrics and
tags, upload three small artifacts, end it. The payload has the shape of a real tiny run's record (--record takes
a real one). Prints one JSON line per client count: server start-up, ms per logged run (median and p90, per
client), runs/s in total, and the server's resident memory; then stops both servers by PID. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/services.py: PostgreSQL and mlflow server, started and stopped

from services import mlflow_server, postgres  # noqa: E402

from pipelab import tracking  # noqa: E402
from pipelab.run_record import mlflow_artifacts, mlflow_params  # noqa: E402


def synthetic_record() -> dict[str, Any]:
    """A record shaped like a tiny text-generation run's: ~110 params, ~45 metrics, a few KB of artifacts."""
    config = {
        "task": {f"key_{i}": f"value {i}" for i in range(60)} | {"cases": [{"id": f"c{i}"} for i in range(5)]},
        "model": {f"key_{i}": i for i in range(25)},
        "bench": {"warmup": 0, "min_iterations": 2, "min_duration_s": 0.0, "batch_size": 1},
        "profile": {"name": "tiny", "weights": "tiny-random"},
        "seed": 42,
        "temperature": 1.0,
    }
    config |= {f"knob_{i}": i for i in range(15)}
    return {
        "status": "FINISHED",
        "name": "benchmark run",
        "config": config,
        "model": {"revision": "0" * 40},
        "tags": {f"tag_{i}": f"value {i}" for i in range(15)},
        "metrics": {f"metric_{i}": float(i) for i in range(45)},
        "cases": [{"id": f"c{i}", "output": [{"generated_text": "word " * 40}]} for i in range(5)],
        "benchmark": {"samples_ms": [12.5, 13.1]},
        "course_verdict": "tiny weights: not checked",
    }


def log_runs(args: tuple[str, str, dict[str, Any], int]) -> list[float]:
    """Log `count` runs one after the other; each run's wall time in ms."""
    uri, experiment_id, record, count = args
    params = mlflow_params(record["config"], record["model"]["revision"])
    artifacts = mlflow_artifacts(record)
    times = []
    for i in range(count):
        started = time.perf_counter()
        logger = tracking.RunLogger(uri, experiment_id)
        logger.start(f"{record['name']} {i}", record["tags"])
        logger.log(params=params)
        logger.log(metrics=record["metrics"], tags={"course_verdict": record["course_verdict"]})
        logger.log_artifacts(artifacts)
        logger.end("FINISHED")
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="runs logged per client count (default 40)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="parallel client processes")
    parser.add_argument("--record", type=Path, help="a real record (results/runs/<task>/*.json) as the payload")
    parser.add_argument("--budget-s", type=float, default=900, help="stop logging after this long (default 900)")
    args = parser.parse_args()
    record = json.loads(args.record.read_text()) if args.record else synthetic_record()
    params = mlflow_params(record["config"], record["model"]["revision"])
    base = Path(tempfile.mkdtemp(prefix="pipelab-bench-mlflow-"))
    deadline = time.monotonic() + args.budget_s
    with postgres() as pg:
        pg.create_database("mlflow")
        with mlflow_server(pg.url("mlflow"), base / "artifacts", log=base / "server.log") as server:
            memory_idle = server.memory_mib()
            experiment_id = tracking.ensure_experiment(server.uri, "benchmark")
            log_runs((server.uri, experiment_id, record, 2))  # warm the server's first requests
            for clients in args.clients:
                if time.monotonic() > deadline:
                    break
                per_client = max(1, args.runs // clients)
                started = time.perf_counter()
                with multiprocessing.get_context("spawn").Pool(clients) as pool:
                    results = pool.map(log_runs, [(server.uri, experiment_id, record, per_client)] * clients)
                wall = time.perf_counter() - started
                times = sorted(t for client in results for t in client)
                line = {
                    "clients": clients,
                    "runs": len(times),
                    "params_per_run": len(params),
                    "metrics_per_run": len(record["metrics"]),
                    "artifacts_per_run": len(mlflow_artifacts(record)),
                    "server_startup_s": round(server.started_s, 1),
                    "server_processes": server.processes(),
                    "server_rss_idle_mib": round(memory_idle),
                    "server_rss_mib": round(server.memory_mib()),
                    "ms_per_run_median": round(statistics.median(times), 1),
                    "ms_per_run_p90": round(times[int(0.9 * (len(times) - 1))], 1),
                    "runs_per_s": round(len(times) / wall, 2),
                }
                print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
