"""Regression check between two results folders: latency B/A with a bootstrap CI, changed outputs, validity.

    python stages/compare.py A B [--threshold 5%] [--out DIR]

A and B are the `results_dir` of sweeps (records under <dir>/runs/<task>/*.json), or `mlflow:<run id>` of a
sweep's MLflow parent run (its child runs' tags, params and artifacts, from --tracking-uri). Prints the comparison as
Markdown; --out DIR also writes DIR/compare.md and DIR/compare.json. Exit code 0: no regression; 1: a pair is
slower beyond the threshold, or a run or case that worked in A fails in B; 2: the inputs cannot be compared.
Thin on purpose: pipelab_tools.compare does the work.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELAB_ROOT", str(ROOT))

from pipelab_tools.compare import CompareError, compare_runs, load_folder, markdown, write  # noqa: E402
from pipelab_tools.report.runs import Run  # noqa: E402

MLFLOW = "mlflow:"


def load_side(source: str, tracking_uri: str | None) -> list[Run]:
    """A results folder's records, or a sweep's child runs read back from MLflow (through pipelab.tracking)."""
    if not source.startswith(MLFLOW):
        return load_folder(Path(source))
    from pipelab import tracking

    try:
        records = tracking.sweep_records(tracking.tracking_uri(tracking_uri, ROOT), source.removeprefix(MLFLOW))
    except ValueError as exc:
        raise CompareError(str(exc)) from None
    return [Run(f"{MLFLOW}{r['mlflow_run_id']}", r) for r in records]


def threshold(text: str) -> float:
    """`5%` or `0.05`."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a threshold: {text!r} (write 5% or 0.05)") from None
    if not 0 <= value < 10:
        raise argparse.ArgumentTypeError(f"threshold out of range: {text!r} (write 5% or 0.05)")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="the baseline sweep (A): its results folder, or mlflow:<parent run id>")
    parser.add_argument("b", help="the sweep to check (B): its results folder, or mlflow:<parent run id>")
    parser.add_argument("--threshold", type=threshold, default=0.05, help="smallest change that counts (default 5%%)")
    parser.add_argument("--out", type=Path, help="write compare.md and compare.json into this folder")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0): same inputs, same output")
    parser.add_argument("--per-item", action="store_true", help="divide each latency sample by its batch size")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="float scores closer than this are equal")
    parser.add_argument("--tracking-uri", help="MLflow store of mlflow:<id> inputs (default: as stages/run.py)")
    parser.add_argument("--fail-on-output-change", action="store_true", help="exit 1 when a case output changed")
    args = parser.parse_args()
    try:
        comparison = compare_runs(
            load_side(args.a, args.tracking_uri),
            load_side(args.b, args.tracking_uri),
            a_label=args.a,
            b_label=args.b,
            threshold=args.threshold,
            resamples=args.resamples,
            seed=args.seed,
            per_item=args.per_item,
            tolerance=args.tolerance,
            fail_on_output_change=args.fail_on_output_change,
        )
    except CompareError as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(comparison), end="", flush=True)
    if args.out:
        for path in write(comparison, args.out):
            print(f"wrote {path}")
    return 1 if comparison.regressions(args.fail_on_output_change) else 0


if __name__ == "__main__":
    sys.exit(main())
