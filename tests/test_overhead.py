"""benchmarks/overhead.py end to end on two tiny tasks: the output format only, never a timing or a ratio."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "overhead.py"
TASKS = ["text-classification", "feature-extraction"]
BLOCKS, CALLS = 2, 2


def run_overhead(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELAB_", "MLFLOW_"))}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_overhead_prints_one_json_line_per_task_with_positive_values(tmp_path, shared_data_dir):
    result = run_overhead(
        [
            "--tasks",
            *TASKS,
            "--blocks",
            str(BLOCKS),
            "--calls-per-block",
            str(CALLS),
            "--warmup",
            "0",
            "--threads",
            "1",
            "--data-dir",
            str(shared_data_dir),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(TASKS) + 1, result.stdout
    rows = [json.loads(line) for line in lines[:-1]]
    assert [row["task"] for row in rows] == TASKS
    for row in rows:
        for key in ("bare_ms", "pipelab_ms", "control_ms", "ratio", "control_ratio", "block_ratio_median"):
            assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["bare_n"] == row["pipelab_n"] == row["control_n"] == BLOCKS * CALLS
        assert row["weights"] == ("pretrained" if row["task"] == "feature-extraction" else "tiny-random")
        assert row["blocks"] == BLOCKS and row["calls_per_block"] == CALLS and row["warmup"] == 0
        assert row["threads"] == 1
        assert len(row["loadavg_1m"]) == 2
    summary = json.loads(lines[-1])
    controls = [row["control_ratio"] for row in rows]
    assert summary["control_scatter"] == [min(controls), max(controls)]
    expected = math.exp(sum(math.log(row["ratio"]) for row in rows) / len(rows))
    assert summary["ratio_geomean"] == pytest.approx(expected, abs=1e-4)
    assert summary["outside"] == [r["task"] for r in rows if not min(controls) <= r["ratio"] <= max(controls)]


def test_bad_arguments_exit_with_a_usage_error(tmp_path):
    result = run_overhead(["--blocks", "0"], cwd=tmp_path)
    assert result.returncode == 2
    assert "--blocks must be >= 1" in result.stderr
    result = run_overhead(["--tasks", "sentiment"], cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
