"""How much does pipelab's measurement add to a pipeline call? A bare loop and ``bench.measure``, alternated.

For each task on the tiny profile, the task's bench case is prepared exactly as ``pipelab.runner`` prepares it
(Hydra composition of ``conf/``, ``runner._prepare``, ``resolve_weights``, ``pipeline_cache.load_pipeline``, then
``task.annotate`` on every case, in the runner's order), and the same pipeline and input are timed two ways in
one process:

(a) bare: a hand-written loop, ``for _ in range(m): t0 = perf_counter(); pipe(x, **kwargs); append(...)``,
    with ``x``/``kwargs`` built once from the case (the call a notebook user would write);
(b) pipelab: ``bench.measure(lambda: task.call(pipe, case), settings)``, the line ``runner._execute`` runs,
    with ``min_iterations = max_iterations = m`` and ``min_duration_s = 0`` so both give ``m`` samples.

(c) control: a second bare loop, the A/A comparison whose ratio to (a) is the noise floor of this one.

Blocks of (a), (b) and (c) alternate (the order rotates every block, so drift in machine load hits every side
alike), and each block starts with the same untimed calls: the first call plus ``warmup`` calls (what
``measure`` does before its timed phase; the bare blocks make them too, untimed, so all time a warm pipeline).
One JSON line per task goes to stdout, then one summary line::

    {"task": ..., "bare_ms": <median>, "pipelab_ms": <median>, "ratio": pipelab/bare, "control_ratio": ..., ...}
    {"summary": ..., "ratio_geomean": ..., "control_geomean": ..., "control_scatter": [min, max], "outside": [...]}

``bare_ms`` and ``pipelab_ms`` are medians of all per-call latencies of their side; ``block_ratio_median`` is
the median of per-block-pair ratios (less sensitive to slow drift); ``threads`` is ``torch.get_num_threads()``
and ``loadavg_1m`` the 1-minute load average before/after the task (numbers taken under load are noisy).

    python benchmarks/overhead.py                              # all ten tasks
    python benchmarks/overhead.py --tasks fill-mask ner --blocks 4 --calls-per-block 10 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELAB_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pipelab.config import register_schema  # noqa: E402
from pipelab.tasks import TASK_NAMES  # noqa: E402

DEFAULT_BLOCKS = 12
# Short blocks, many of them: a tiny model's latency drifts by +-15% from one second to the next even on an
# idle machine (zero-shot: block medians 14-19 ms), so pairing close-together blocks matters more than long ones.
DEFAULT_BLOCK_SECONDS = 0.5  # --calls-per-block auto: about this long per timed block ...
AUTO_CALLS = (3, 50)  # ... within these bounds (a 0.5 s summarization call still gets 3, a 3 ms one 50)
DEFAULT_THREADS = 1


def compose(task: str, data_dir: str | None, overrides: list[str]) -> Any:
    """conf/config.yaml for one task on the tiny profile, as ``stages/run.py task=<task> profile=tiny`` sees it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schema()
    args = [f"task={task}", "profile=tiny", "tracking.enabled=false", *overrides]
    if data_dir is not None:
        args.append(f"data_dir={data_dir}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=args)


def prepare(cfg: Any) -> tuple[Any, Any, Any]:
    """(task, pipeline, bench case), prepared by the runner's own functions, as ``runner._execute`` does."""
    import transformers

    from pipelab import runner
    from pipelab.models import pipeline_task
    from pipelab.pipeline_cache import load_pipeline
    from pipelab.weights import resolve_weights

    task, ctx, cases, device, dtype = runner._prepare(cfg, ROOT)
    weights = resolve_weights(cfg.model, cfg.profile, ROOT / cfg.data_dir)
    if weights.weights == "tiny-random":
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    loaded, _ = load_pipeline(pipeline_task(cfg), weights, device, dtype, cfg.model)
    ctx.pipe = loaded.pipe
    # Every case, in order: annotate() may change shared state (text-generation sets the tokenizer's pad token
    # on the first case only), so the bench case must see exactly the state it sees in a run.
    for case in cases:
        task.annotate(case, ctx)
    bench_case = next((c for c in cases if c.id == cfg.task.bench_case), cases[0])
    return task, loaded.pipe, bench_case


def bare_block(pipe: Callable[..., Any], args: tuple, kwargs: dict, calls: int, untimed: int) -> list[float]:
    """The hand-written loop: ``untimed`` calls, then ``calls`` timed ones; per-call latencies in ms."""
    for _ in range(untimed):
        pipe(*args, **kwargs)
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        pipe(*args, **kwargs)
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def auto_calls(pipe: Callable[..., Any], args: tuple, kwargs: dict, untimed: int, block_seconds: float) -> int:
    """Timed calls per block so that one block lasts about ``block_seconds`` (median of 3 probe calls)."""
    probe = bare_block(pipe, args, kwargs, 3, untimed)
    low, high = AUTO_CALLS
    return max(low, min(high, round(block_seconds * 1000.0 / statistics.median(probe))))


def pipelab_block(task: Any, pipe: Any, case: Any, calls: int, warmup: int) -> list[float]:
    """pipelab's measurement of the same call, as ``runner._execute`` makes it (batch size 1)."""
    from pipelab import bench

    settings = bench.BenchSettings(warmup=warmup, min_iterations=calls, min_duration_s=0.0, max_iterations=calls)
    return bench.measure(lambda: task.call(pipe, case), settings).samples_ms


def quartiles(values: list[float]) -> tuple[float, float]:
    """(25th, 75th) percentile; both equal the value itself for a single block."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def run_task(task_name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import set_seed

    load_before = loadavg()
    cfg = compose(task_name, args.data_dir, args.override)
    task, pipe, case = prepare(cfg)
    warmup = int(cfg.bench.warmup) if args.warmup is None else args.warmup
    pos, kw = task.bare_arguments(pipe, case)  # the plain call a user would write, built once
    calls = args.calls_per_block or auto_calls(pipe, pos, kw, 1 + warmup, args.block_seconds)

    sides = ("bare", "pipelab", "control")
    samples: dict[str, list[float]] = {side: [] for side in sides}
    block_ratios: list[float] = []
    for block in range(args.blocks):
        order = sides[block % 3 :] + sides[: block % 3]
        medians = {}
        for side in order:
            set_seed(int(cfg.seed))  # same sampled tokens on every side (text generation)
            if side == "pipelab":
                taken = pipelab_block(task, pipe, case, calls, warmup)
            else:
                taken = bare_block(pipe, pos, kw, calls, untimed=1 + warmup)
            samples[side].extend(taken)
            medians[side] = statistics.median(taken)
        block_ratios.append(medians["pipelab"] / medians["bare"])

    bare_ms = statistics.median(samples["bare"])
    pipelab_ms = statistics.median(samples["pipelab"])
    control_ms = statistics.median(samples["control"])
    return {
        "task": task_name,
        "weights": "pretrained" if cfg.model.get("path") else "tiny-random",
        "bare_ms": round(bare_ms, 4),
        "pipelab_ms": round(pipelab_ms, 4),
        "control_ms": round(control_ms, 4),
        "ratio": round(pipelab_ms / bare_ms, 4),
        "control_ratio": round(control_ms / bare_ms, 4),
        "block_ratio_median": round(statistics.median(block_ratios), 4),
        "block_ratio_iqr": [round(q, 4) for q in quartiles(block_ratios)],
        "bare_n": len(samples["bare"]),
        "pipelab_n": len(samples["pipelab"]),
        "control_n": len(samples["control"]),
        "blocks": args.blocks,
        "calls_per_block": calls,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "model": str(cfg.model.name),
        "bench_case": case.id,
        "loadavg_1m": [load_before, loadavg()],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES, metavar="TASK")
    parser.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS, help="blocks per side (alternated ABBA)")
    parser.add_argument(
        "--calls-per-block",
        type=int,
        default=None,
        help=f"timed calls per block (default: auto, ~--block-seconds per block, {AUTO_CALLS[0]}-{AUTO_CALLS[1]})",
    )
    parser.add_argument("--block-seconds", type=float, default=DEFAULT_BLOCK_SECONDS, help="target of the auto mode")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch.set_num_threads (intra-op)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per block (default: bench.warmup)")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed at start")
    parser.add_argument("--data-dir", default=None, help="data_dir override (tiny models built there if missing)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. temperature=0.7")
    args = parser.parse_args(argv)
    for name in ("blocks", "calls_per_block", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.block_seconds <= 0:
        parser.error("--block-seconds must be > 0")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rows = []
    for task_name in args.tasks:
        rows.append(run_task(task_name, args))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(summary(rows)), flush=True)
    return 0


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's verdict: A/B and A/A geometric means, and the tasks whose A/B ratio is outside the A/A scatter."""
    controls = [row["control_ratio"] for row in rows]
    low, high = min(controls), max(controls)
    return {
        "summary": f"{len(rows)} tasks",
        "ratio_geomean": round(geomean([row["ratio"] for row in rows]), 4),
        "control_geomean": round(geomean(controls), 4),
        "control_scatter": [low, high],
        "outside": [row["task"] for row in rows if not low <= row["ratio"] <= high],
    }


if __name__ == "__main__":
    sys.exit(main())
