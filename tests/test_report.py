"""pipelab_tools.report on real records: a few tiny sweeps through the real Hydra CLI, then every report file.

The records are written by the real runner (tracking off, a temporary results folder): a course run, a
numeric ablation (batch size), a categorical one (NER aggregation) and a run that really fails (an unknown
`function_to_apply`, which the text-classification pipeline rejects on every call, so the benchmark raises).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from pipelab.records import iter_records
from pipelab_tools import report
from pipelab_tools.vega_page import offline_plots_template

FAST_BENCH = ["bench.warmup=0", "bench.min_iterations=2", "bench.min_duration_s=0"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A results folder filled by the real runner: 6 runs over 2 tasks, one of them FAILED."""
    base = tmp_path_factory.mktemp("report")
    results_dir = base / "results"
    common = ["profile=tiny", "tracking.enabled=false", f"results_dir={results_dir}", f"data_dir={shared_data_dir}"]
    sweeps = [
        ["-m", "task=text-classification", *common, *FAST_BENCH],
        ["-m", "task=text-classification", "ablation=batch_size", "bench.batch_size=1,4", *common, *FAST_BENCH],
        ["-m", "task=ner", "ablation=aggregation", "task.call.aggregation_strategy=none,simple", *common, *FAST_BENCH],
    ]
    for i, args in enumerate(sweeps):
        done = run_cli([*args, f"hydra.sweep.dir={base / 'multirun' / str(i)}"], cwd=base)
        assert done.returncode == 0, done.stderr[-3000:]
    failing = run_cli(
        ["task=text-classification", "+task.call.function_to_apply=bogus", *common, *FAST_BENCH],
        cwd=base,
        env_extra={"HYDRA_FULL_ERROR": "0"},
    )
    assert failing.returncode != 0
    return results_dir


@pytest.fixture(scope="module")
def reports(results: Path) -> report.ReportFiles:
    return report.write_reports(results)


def _records(results: Path) -> dict[str, dict]:
    return {path.relative_to(results).as_posix(): record for path, record in iter_records(results)}


def test_the_fixture_produced_finished_and_failed_records(results):
    statuses = sorted(record["status"] for record in _records(results).values())
    assert statuses == ["FAILED"] + ["FINISHED"] * 5


def test_outputs_json_holds_every_record_with_its_cases(results, reports):
    records = _records(results)
    document = json.loads(reports.outputs.read_text())
    entries = {e["record"]: e for runs in document["tasks"].values() for e in runs}
    assert document["records"] == len(records)
    assert set(entries) == set(records)
    for path, record in records.items():
        entry = entries[path]
        assert entry["status"] == record["status"]
        assert [c["output"] for c in entry["cases"]] == [c["output"] for c in record.get("cases", [])]
    failed = next(e for e in entries.values() if e["status"] == "FAILED")
    assert "BOGUS" in failed["error"]


def test_benchmarks_csv_has_one_row_per_run_with_the_record_latencies(results, reports):
    records = _records(results)
    with reports.benchmarks.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["record"] for row in rows].count(rows[0]["record"]) == 1
    assert {row["record"] for row in rows} == set(records)
    assert list(rows[0]) == list(report.BENCHMARK_COLUMNS)
    for row in rows:
        record = records[row["record"]]
        assert row["status"] == record["status"]
        assert row["task"] == record["task"] and row["model"] == record["model"]["name"]
        assert row["device"] == record["device"] and row["profile"] == "tiny"
        if record["status"] == "FINISHED":
            assert float(row["latency_p50_ms"]) == pytest.approx(record["metrics"]["latency_p50_ms"], abs=1e-3)
            assert float(row["throughput_items_per_s"]) > 0
        else:
            assert row["latency_p50_ms"] == ""
    points = {row["ablation_point"] for row in rows if row["ablation"] == "batch_size"}
    assert points == {"bench.batch_size=1", "bench.batch_size=4"}


def test_comparison_shows_course_example_verdict_latency_and_ablations_in_numbers(results, reports):
    text = reports.comparison.read_text()
    course = next(
        r
        for r in _records(results).values()
        if r["task"] == "text-classification" and r["ablation"]["name"] == "none" and r["status"] == "FINISHED"
    )
    course_case = next(c for c in course["cases"] if c["kind"] == "course")
    assert course_case["input"] in text
    assert json.dumps(course_case["output"], ensure_ascii=False)[:60] in text
    assert "**Verdict:** tiny weights: not checked" in text
    assert f"{report.fmt(course['metrics']['latency_p50_ms'])} ms" in text
    assert "### Ablation `batch_size`" in text and "### Ablation `aggregation`" in text
    assert "throughput (items/s):" in text  # a findings line with the numbers
    assert "![text-classification batch_size](plots/batch_scaling_text-classification_batch_size.png)" in text
    assert "## Failed runs" in text and "KeyError: 'BOGUS'" in text
    # Where the bench call's time goes: the course run's stages, in the table and the stacked bar.
    assert "## Where a call's time goes" in text and "![pipeline stages per task](plots/stages_by_task.png)" in text
    section = text.split("## Where a call's time goes", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| text-classification"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == report.fmt(course["metrics"]["preprocess_ms"])
    assert cells[3] == report.fmt(course["metrics"]["forward_ms"])
    for link in [line.split("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (results / link).is_file(), link


def test_plots_are_pngs_and_dvc_curves_split_numeric_from_categorical(results, reports):
    names = {p.name for p in reports.plots}
    assert names == {
        "latency_by_task.png",
        "stages_by_task.png",
        "batch_scaling_text-classification_batch_size.png",
        "ablation_ner_aggregation.png",
    }
    for path in reports.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dvc_dir = results / "plots" / "dvc"
    numeric = {p.name for p in (dvc_dir / "numeric").glob("*.csv")}
    categorical = {p.name for p in (dvc_dir / "categorical").glob("*.csv")}
    assert "text-classification--batch_size--throughput_items_per_s.csv" in numeric
    assert "ner--aggregation--entities_per_case.csv" in categorical
    assert "course--latency_p50_ms.csv" in categorical
    assert {f"course--{stage}_ms.csv" for stage in ("preprocess", "forward", "postprocess", "other")} <= categorical
    with (dvc_dir / "numeric" / "text-classification--batch_size--throughput_items_per_s.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["point"]) for r in rows] == [1.0, 4.0]


def test_metrics_json_counts_runs_cases_and_course_runs(results, reports):
    records = list(_records(results).values())
    metrics = json.loads(reports.metrics.read_text())
    finished = [r for r in records if r["status"] == "FINISHED"]
    assert metrics["runs"] == {"total": 6, "finished": 5, "unsupported": 0, "failed": 1}
    assert metrics["cases"]["total"] == sum(int(r["metrics"]["cases_total"]) for r in finished)
    assert metrics["tasks"]["text-classification"]["finished"] == 1
    assert metrics["tasks"]["text-classification"]["latency_p50_ms"] > 0
    assert metrics["tasks"]["ner"] == {"finished": 0}  # only ablation runs of ner: no course run to report


def test_the_same_records_give_byte_identical_reports(results, reports, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(results / "runs", copy / "runs")
    again = report.write_reports(copy)
    for first, second in [
        (reports.outputs, again.outputs),
        (reports.benchmarks, again.benchmarks),
        (reports.comparison, again.comparison),
        (reports.metrics, again.metrics),
        *zip(sorted(reports.plots), sorted(again.plots), strict=True),
    ]:
        assert first.read_bytes() == second.read_bytes(), first.name


def test_an_empty_results_folder_is_an_error_not_an_empty_report(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run records"):
        report.write_reports(tmp_path)


def test_offline_plots_template_inlines_vega_and_loads_nothing_from_a_cdn():
    import vl_convert

    page = offline_plots_template(vl_convert.javascript_bundle())
    assert "{plot_divs}" in page and "{scripts}" not in page
    assert "window.vegaEmbed=" in page.replace(" ", "")
    assert "cdn.jsdelivr" not in page and "<script src" not in page
    with pytest.raises(ValueError, match="cannot be inlined"):
        offline_plots_template("var x = '</script>';")
