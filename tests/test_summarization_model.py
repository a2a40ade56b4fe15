"""The seed's summarization model comparison: distilbart-cnn vs LED (16,384-token encoder), through the real CLI."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

FAST = ["profile=tiny", "bench.warmup=0", "bench.min_iterations=1", "bench.min_duration_s=0", "tracking.enabled=false"]


@pytest.mark.slow
def test_summarization_model_ablation_runs_led_beyond_bart_window(tmp_path, shared_data_dir):
    # The LED point only (a command-line value beats the ablation's own list): distilbart-cnn's point is the
    # course model every summarization test runs, and the two points took over 600 s on a loaded 2-core machine.
    result = run_cli(
        [
            "-m",
            "ablation=summarization_model",
            "model=led-base-16384",
            *FAST,
            f"results_dir={tmp_path / 'results'}",
            f"data_dir={shared_data_dir}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        cwd=tmp_path,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    paths = sorted((tmp_path / "results" / "runs" / "summarization").glob("*.json"))
    records = {r["model"]["name"]: r for r in (json.loads(p.read_text()) for p in paths)}
    assert set(records) == {"led-base-16384"}
    for name, record in records.items():
        assert record["status"] == "FINISHED" and record["ablation"]["name"] == "summarization_model"
        cases = {c["id"]: c for c in record["cases"]}
        assert all(c["error"] is None and c["valid"] for c in cases.values()), name
        assert record["metrics"]["summary_words_mean"] >= 0
    # The 200-sentence edge case (~3,400 tokens): BART truncates it to its 1,024-token window, LED reads all of it.
    led_notes = [n for n in records["led-base-16384"]["cases"] if n["id"] == "edge-long"][0]["notes"]
    assert not any("truncated" in note for note in led_notes), led_notes
