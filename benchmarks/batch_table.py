"""Items/s per batch size from the records of ``ablation=batch_size`` sweeps, as a Markdown table.

    python stages/run.py -m profile=tiny task=fill-mask ablation=batch_size tracking.enabled=false \\
        results_dir=/tmp/batch_results hydra.sweep.dir=/tmp/batch_sweep
    python benchmarks/batch_table.py /tmp/batch_results

One row per task (and model), one column per batch size: ``throughput_items_per_s`` of the FINISHED record
(the newest one when a point ran more than once). A point without a finished record shows ``-``; its failure
record (status FAILED, with the error) is listed under the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load_records(results_dir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((results_dir / "runs").glob("*/*.json")):
        record = json.loads(path.read_text())
        if (record.get("ablation") or {}).get("name") == "batch_size":
            records.append(record)
    return records


def table(records: list[dict[str, Any]]) -> str:
    finished: dict[tuple[str, str], dict[int, tuple[str, float, float]]] = {}
    failures = []
    sizes: set[int] = set()
    for r in records:
        key = (r["task"], r["model"]["name"])
        size = int(r["ablation"]["point"]["bench.batch_size"])
        sizes.add(size)
        if r.get("status") != "FINISHED":
            failures.append(f"- {r['task']} {r['model']['name']} batch={size}: {r.get('status')} {r.get('error', '')}")
            continue
        m = r["metrics"]
        when = r.get("finished_at", "")
        previous = finished.setdefault(key, {}).get(size)
        if previous is None or when > previous[0]:
            finished[key][size] = (when, m["throughput_items_per_s"], m["latency_p50_ms"])
    columns = sorted(sizes)
    lines = [
        "| task | model | " + " | ".join(f"b={s} items/s" for s in columns) + " | best/b=1 |",
        "|---|---|" + "---:|" * (len(columns) + 1),
    ]
    for (task, model), row in sorted(finished.items()):
        cells = [f"{row[s][1]:.1f}" if s in row else "-" for s in columns]
        speedup = f"{max(v[1] for v in row.values()) / row[1][1]:.1f}x" if 1 in row else "-"
        lines.append(f"| {task} | {model} | " + " | ".join(cells) + f" | {speedup} |")
    if failures:
        lines += ["", "Failed points:", *failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=Path, help="the sweeps' results_dir")
    args = parser.parse_args(argv)
    records = load_records(args.results_dir)
    if not records:
        print(f"no batch_size record under {args.results_dir / 'runs'}", file=sys.stderr)
        return 1
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
