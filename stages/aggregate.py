"""DVC stage `aggregate`: every run record -> results/outputs.json, benchmarks.csv, comparison.md, metrics.json
and results/plots/ (PNGs, and CSVs for `dvc plots show`).

    python stages/aggregate.py                  # reads results/runs/<task>/*.json
    python stages/aggregate.py --results /tmp/results

Reads the records only (never MLflow), so the same records always give the same reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelab_tools.report import write_reports

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--results", type=Path, default=ROOT / "results", help="folder holding runs/ (default: results)"
    )
    results = parser.parse_args().results
    try:
        files = write_reports(results)
    except FileNotFoundError as exc:
        print(f"aggregate: error: {exc}", file=sys.stderr)
        return 2
    for path in (files.outputs, files.benchmarks, files.comparison, files.metrics):
        print(f"aggregate: wrote {path}")
    print(
        f"aggregate: wrote {len(files.plots)} plots and {len(files.dvc_plot_data)} plot CSVs under {results / 'plots'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
