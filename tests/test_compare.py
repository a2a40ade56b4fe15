"""The regression verdict: bootstrap and verdict rules on constructed samples, pairing on constructed records, and
`python stages/compare.py` on two real tiny sweeps that differ in batch size."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli

from pipelab_tools.compare import (
    CompareError,
    Ratio,
    bootstrap_ratio,
    compare_runs,
    output_differences,
    pair_runs,
    verdict,
)
from pipelab_tools.report.runs import Run

# ----------------------------------------------------------------------------------------------------------------
# Bootstrap and verdict rules
# ----------------------------------------------------------------------------------------------------------------


def test_bootstrap_is_reproducible_with_its_seed_and_varies_without_it():
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(2.0, 0.2, 40), rng.lognormal(2.1, 0.2, 40)
    first = bootstrap_ratio(a, b, seed=7)
    assert bootstrap_ratio(a, b, seed=7) == first
    assert bootstrap_ratio(a, b, seed=8) != first
    assert first.ratio == pytest.approx(np.median(b) / np.median(a))
    assert first.low < first.ratio < first.high


def test_identical_samples_give_ratio_one_with_a_zero_width_interval():
    samples = [3.0, 3.0, 3.0, 3.0]
    assert bootstrap_ratio(samples, samples) == Ratio(1.0, 1.0, 1.0)


def test_bootstrap_interval_covers_a_known_slowdown_about_95_times_in_100_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)

    def experiment(n: int) -> Ratio:  # B's true median latency is twice A's
        return bootstrap_ratio(rng.lognormal(0, 0.2, n), 2 * rng.lognormal(0, 0.2, n), resamples=500)

    small = [experiment(30) for _ in range(200)]
    coverage = sum(r.low <= 2 <= r.high for r in small) / len(small)
    assert 0.88 <= coverage <= 0.99, coverage  # a percentile bootstrap of a median: near its nominal 95%
    big = [experiment(300) for _ in range(20)]
    assert np.mean([r.high - r.low for r in big]) < 0.5 * np.mean([r.high - r.low for r in small])
    assert all(verdict(r, 0.05) == "slower" for r in big)


def test_bootstrap_refuses_empty_or_non_positive_samples():
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ratio([], [1.0])
    with pytest.raises(ValueError, match="positive"):
        bootstrap_ratio([1.0, 0.0], [1.0])


@pytest.mark.parametrize(
    ("ratio", "threshold", "expected"),
    [
        (Ratio(1.20, 1.06, 1.30), 0.05, "slower"),  # whole CI above 1.05
        (Ratio(1.20, 1.04, 1.30), 0.05, "no change"),  # CI reaches below 1.05: not proven slower
        (Ratio(1.02, 1.01, 1.03), 0.05, "no change"),  # surely slower, but by less than the threshold
        (Ratio(1.02, 1.01, 1.03), 0.0, "slower"),  # ... which a zero threshold calls slower
        (Ratio(0.80, 0.70, 0.94), 0.05, "faster"),  # whole CI below 1/1.05 = 0.952
        (Ratio(0.80, 0.70, 0.96), 0.05, "no change"),
        (Ratio(1.00, 0.50, 2.00), 0.05, "no change"),  # too noisy to say
    ],
)
def test_verdict_rules(ratio, threshold, expected):
    assert verdict(ratio, threshold) == expected


def test_swapping_a_and_b_swaps_slower_and_faster():
    for r in (Ratio(1.3, 1.1, 1.5), Ratio(1.06, 1.051, 1.07), Ratio(1.0, 0.9, 1.1)):
        swapped = Ratio(1 / r.ratio, 1 / r.high, 1 / r.low)
        expected = {"slower": "faster", "faster": "slower", "no change": "no change"}[verdict(r, 0.05)]
        assert verdict(swapped, 0.05) == expected


def test_output_differences_compare_text_exactly_and_scores_within_tolerance():
    a = [{"label": "POSITIVE", "score": 0.51234}, {"generated_text": "the cat sat"}]
    assert output_differences(a, copy.deepcopy(a), 1e-4) == []
    b = [{"label": "POSITIVE", "score": 0.51236}, {"generated_text": "the cat sat"}]
    assert output_differences(a, b, 1e-4) == []  # float noise
    c = [{"label": "NEGATIVE", "score": 0.6}, {"generated_text": "the dog sat"}]
    assert output_differences(a, c, 1e-4) == [
        ("[0].label", "POSITIVE", "NEGATIVE"),
        ("[0].score", 0.51234, 0.6),
        ("[1].generated_text", "the cat sat", "the dog sat"),
    ]
    assert output_differences([1, 2], [1, 2, 3], 1e-4) == [("[len]", 2, 3)]
    assert output_differences({"start": 3}, {"start": 4}, 1e-4) == [(".start", 3, 4)]


# ----------------------------------------------------------------------------------------------------------------
# Pairing on constructed records
# ----------------------------------------------------------------------------------------------------------------


def record(task, model="m", *, config=None, point=None, ablation="none", samples=(10.0, 11.0, 12.0), cases=None,
           status="FINISHED", batch=1):  # fmt: skip
    return Run(
        f"runs/{task}/{model}__{abs(hash(json.dumps([config, point, batch], sort_keys=True))):012d}.json",
        {
            "task": task,
            "model": {"name": model},
            "status": status,
            "ablation": {"name": ablation, "point": point or {}},
            "config": {"seed": 42, "bench": {"batch_size": batch}, **(config or {})},
            "benchmark": {"samples_ms": list(samples), "settings": {"batch_size": batch}},
            "cases": cases or [{"id": "c1", "output": {"label": "x"}, "valid": True, "error": None}],
            "started_at": "2026-01-01T00:00:00",
        },
    )


def test_pairs_by_task_model_and_point_and_reports_the_changed_setting():
    a = [record("ner", batch=1), record("fill-mask", batch=1), record("qa", batch=1)]
    b = [record("ner", batch=4), record("fill-mask", batch=4), record("fill-mask", "other", batch=4)]
    pairing = pair_runs(a, b)
    assert sorted(i.task for i, _, _ in pairing.pairs) == ["fill-mask", "ner"]
    assert [(i.task, r.model) for i, r in pairing.only_a] == [("qa", "m")]
    assert [(i.task, r.model) for i, r in pairing.only_b] == [("fill-mask", "other")]
    assert pairing.differs == {"bench.batch_size": [["1"], ["4"]]}
    assert pairing.extra_keys == {}


def test_a_setting_swept_within_a_side_identifies_the_configuration():
    # a temperature sweep typed without an ablation config: temperature varies within each side, so it pairs
    a = [record("tg", config={"temperature": t}) for t in (0.7, 1.0)]
    b = [record("tg", config={"temperature": t}, batch=2) for t in (1.0, 0.7)]
    pairing = pair_runs(a, b)
    assert pairing.extra_keys == {"tg": ["temperature"]}
    labels = sorted(i.label for i, _, _ in pairing.pairs)
    assert labels == ["m temperature=0.7", "m temperature=1.0"]
    for _ident, ra, rb in pairing.pairs:
        assert ra.record["config"]["temperature"] == rb.record["config"]["temperature"]


def test_ablation_points_pair_point_by_point():
    a = [record("tg", ablation="decoding", point={"decoding.name": d}, config={"decoding": {"name": d}}) for d in "xy"]
    b = [record("tg", ablation="decoding", point={"decoding.name": d}, config={"decoding": {"name": d}}) for d in "yx"]
    pairing = pair_runs(a, b)
    assert sorted(i.label for i, _, _ in pairing.pairs) == ["m decoding: x", "m decoding: y"]


def test_a_finished_run_is_preferred_over_a_failure_kept_beside_it():
    failed = record("ner", status="FAILED", samples=())
    a = [failed, record("ner")]
    (pair,) = pair_runs(a, [record("ner")]).pairs
    assert pair[1].finished


def test_comparison_reports_changed_outputs_validity_and_regressions():
    cases_a = [
        {"id": "c1", "output": {"label": "POS"}, "valid": True, "error": None},
        {"id": "c2", "output": {"label": "NEG"}, "valid": True, "error": None},
    ]
    cases_b = [
        {"id": "c1", "output": {"label": "NEG"}, "valid": True, "error": None},
        {"id": "c2", "output": {"lbl": "NEG"}, "valid": False, "problems": ["missing key label"], "error": None},
    ]
    a = [record("tc", cases=cases_a, samples=[10.0] * 5)]
    b = [record("tc", cases=cases_b, samples=[10.1] * 5)]
    c = compare_runs(a, b)
    (pair,) = c.pairs
    assert pair.verdict == "no change" and pair.ratio == pytest.approx(1.01)
    assert [ch["case"] for ch in pair.output_changes] == ["c1", "c2"]
    assert pair.validity_changes == [{"case": "c2", "a": "valid", "b": "invalid", "detail": "missing key label"}]
    assert c.regressions() == ["tc m: case c2 valid -> invalid"]
    slow = compare_runs(a, [record("tc", cases=cases_a, samples=[20.0, 21.0, 22.0, 20.5, 21.5])])
    assert slow.pairs[0].verdict == "slower" and slow.regressions() == ["tc m: slower"]
    assert compare_runs(a, [record("tc", cases=cases_a, samples=[10.0] * 5)]).regressions() == []


def test_per_item_latency_divides_by_the_batch_size():
    a = [record("tc", samples=[10.0, 11.0, 12.0], batch=1)]
    b = [record("tc", samples=[40.0, 44.0, 48.0], batch=8)]
    assert compare_runs(a, b).pairs[0].verdict == "slower"
    per_item = compare_runs(a, b, per_item=True).pairs[0]
    assert per_item.ratio == pytest.approx(0.5) and per_item.verdict == "faster"


def test_nothing_to_compare_is_a_clear_error():
    with pytest.raises(CompareError, match="no run records"):
        compare_runs([], [record("tc")])
    with pytest.raises(CompareError, match="no run of A pairs"):
        compare_runs([record("tc")], [record("ner")])


# ----------------------------------------------------------------------------------------------------------------
# The command on two real tiny sweeps
# ----------------------------------------------------------------------------------------------------------------

TASKS = "text-classification,fill-mask,text-generation"
# 12 timed calls per run: enough for a bootstrap interval, a few seconds per tiny run
PROTOCOL = ["profile=tiny", "bench.warmup=1", "bench.min_iterations=12", "bench.min_duration_s=0"]


def compare(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "compare.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, shared_data_dir) -> tuple[Path, Path]:
    """Two real tiny sweeps of three tasks: batch size 1 (A) and 16 (B), one thread each."""
    base = tmp_path_factory.mktemp("compare")
    folders = []
    for name, batch in (("a", 1), ("b", 16)):
        args = [
            "-m",
            f"task={TASKS}",
            f"bench.batch_size={batch}",
            *PROTOCOL,
            "tracking.enabled=false",
            f"results_dir={base / name}",
            f"data_dir={shared_data_dir}",
            f"hydra.sweep.dir={base / ('multirun-' + name)}",
        ]
        result = run_cli(args, cwd=base, env_extra={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        folders.append(base / name)
    return folders[0], folders[1]


@pytest.mark.slow
def test_compare_finds_the_batch_size_slowdown_and_gates_on_it(sweeps, tmp_path):
    a, b = sweeps
    out = tmp_path / "out"
    result = compare(a, b, "--threshold", "5%", "--out", out)
    assert result.returncode == 1, result.stdout + result.stderr  # 16 items per call are slower per call
    assert "what differs: `bench.batch_size` 1 -> 16" in result.stdout
    assert "paired by: task, model, ablation and its point" in result.stdout
    report = json.loads((out / "compare.json").read_text())
    assert (out / "compare.md").read_text() == result.stdout.split("wrote ")[0]
    assert {p["task"] for p in report["pairs"]} == set(TASKS.split(","))
    for pair in report["pairs"]:
        assert pair["verdict"] == "slower", pair
        assert pair["ci_low"] > 1.05 and pair["ci_low"] <= pair["ratio"] <= pair["ci_high"]
        assert pair["a_n"] >= 12 and pair["b_n"] >= 12
        assert (pair["a_batch_size"], pair["b_batch_size"]) == (1, 16)
        # the cases run one by one under the same seed: batch size changes no output, generated text included
        assert pair["output_changes"] == [] and pair["validity_changes"] == [], pair
    assert report["counts"]["slower"] == 3 and report["unpaired"] == {"a": [], "b": []}
    assert len(report["regressions"]) == 3
    # the same inputs give the same output, bootstrap included
    assert compare(a, b, "--threshold", "5%").stdout == result.stdout.split("wrote ")[0]


@pytest.mark.slow
def test_a_folder_against_itself_is_no_change_and_exits_zero(sweeps):
    a, _ = sweeps
    result = compare(a, a)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 pairs: 0 slower, 0 faster, 3 no change" in result.stdout
    assert "what differs: no setting (same configurations)" in result.stdout
    # the same samples: ratio 1; A and B are still resampled independently, so the CI shows their noise
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "| 1.000 | " in line]
    assert len(rows) == 3, result.stdout
    assert "No regression beyond the threshold." in result.stdout


@pytest.mark.slow
def test_changed_outputs_validity_and_unpaired_runs_are_listed(sweeps, tmp_path):
    a, _ = sweeps
    c = tmp_path / "c"
    shutil.copytree(a, c)
    # a real record of A with one label changed and one case made invalid, and fill-mask's record gone
    (path,) = (c / "runs" / "text-classification").glob("*.json")
    rec = json.loads(path.read_text())
    first, second = rec["cases"][0], rec["cases"][1]
    old_label = first["output"][0]["label"]
    first["output"][0]["label"] = "CHANGED"
    second["valid"], second["problems"] = False, ["made invalid by the test"]
    path.write_text(json.dumps(rec))
    for gone in (c / "runs" / "fill-mask").glob("*.json"):
        gone.unlink()
    result = compare(a, c, "--out", tmp_path / "out")
    assert result.returncode == 1, result.stdout + result.stderr  # a case valid in A is invalid in C
    assert f"- {first['id']}: `[0].label` {old_label} -> CHANGED" in result.stdout
    assert f"/ {second['id']}: valid -> invalid made invalid by the test" in result.stdout
    assert "## Unpaired runs" in result.stdout and "- only in A: fill-mask distilroberta-base" in result.stdout
    report = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert report["counts"]["unpaired A"] == 1 and report["counts"]["outputs changed"] == 1


@pytest.mark.slow
def test_bad_inputs_exit_2_with_a_message(sweeps, tmp_path):
    a, _ = sweeps
    empty = tmp_path / "empty"
    empty.mkdir()
    result = compare(a, empty)
    assert result.returncode == 2 and "no run records" in result.stderr and result.stdout == ""
    result = compare(a, tmp_path / "missing")
    assert result.returncode == 2 and "not a folder" in result.stderr
    other = tmp_path / "other"
    shutil.copytree(a / "runs" / "fill-mask", other / "runs" / "fill-mask")
    only_tc = tmp_path / "only_tc"
    shutil.copytree(a / "runs" / "text-classification", only_tc / "runs" / "text-classification")
    result = compare(other, only_tc)
    assert result.returncode == 2 and "no run of" in result.stderr and "pairs with a run of" in result.stderr
    result = compare(a, a, "--threshold", "five")
    assert result.returncode == 2 and "not a threshold" in result.stderr


@pytest.mark.slow
def test_a_sweeps_mlflow_parent_run_compares_like_its_results_folder(tmp_path, shared_data_dir):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["-m", "task=fill-mask,text-classification", *PROTOCOL, f"tracking.uri={uri}"]
    args += [f"results_dir={tmp_path / 'a'}", f"data_dir={shared_data_dir}", f"hydra.sweep.dir={tmp_path / 'mr'}"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("pipelab").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    source = f"mlflow:{parent.info.run_id}"
    result = compare(tmp_path / "a", source, "--tracking-uri", uri, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out" / "compare.json").read_text())
    # the same runs read back from MLflow: every run pairs, same samples, same outputs, same settings
    assert report["counts"]["pairs"] == 2 and report["unpaired"] == {"a": [], "b": []}
    assert all(p["ratio"] == 1.0 and p["output_changes"] == [] for p in report["pairs"]), report["pairs"]
    assert report["differs"] == {}
    assert all(p["b_record"].startswith("mlflow:") for p in report["pairs"])
    missing = compare(source, "mlflow:0123456789abcdef", "--tracking-uri", uri)
    assert missing.returncode == 2 and "no MLflow run 0123456789abcdef" in missing.stderr
