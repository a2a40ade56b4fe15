"""Log to MLflow every run record marked not logged (the store was down or died during the run):

    python stages/sync.py                       # records under results/, each into the store it was meant for
    python stages/sync.py --uri http://mlflow.team:5000 --results-dir /tmp/scratch/results

Idempotent: a second sync logs nothing. Thin on purpose: pipelab_tools.sync does the work.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELAB_ROOT", str(ROOT))

from pipelab.tracking import TrackingUnavailable  # noqa: E402
from pipelab_tools.sync import pending, sync  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results", help="default: <repo>/results")
    parser.add_argument("--uri", help="log into this store instead of the one each record names")
    parser.add_argument("--dry-run", action="store_true", help="list the records that would be logged")
    args = parser.parse_args()
    results_dir = args.results_dir if args.results_dir.is_absolute() else Path.cwd() / args.results_dir
    if args.dry_run:
        waiting = pending(results_dir)
        for path, record in waiting:
            print(f"not logged  {path}  -> {args.uri or record['tracking'].get('uri')}")
        print(f"{len(waiting)} records not logged")
        return 0
    try:
        report = sync(results_dir, ROOT, args.uri)
    except TrackingUnavailable as exc:
        print(f"sync: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"sync: {len(report.logged)} runs logged, {len(report.already)} found already logged, "
        f"{report.parents_created} sweep parent runs created, {report.parents_ended} ended, {report.seconds:.1f} s"
    )
    if report.logged and (ROOT / "dvc.lock").is_file() and results_dir.resolve() == (ROOT / "results").resolve():
        # The records are DVC outputs: their new `logged` field would make `dvc repro` run their stages again.
        print("sync: the records are DVC outputs: `dvc commit -f` records their new state (nothing else changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
