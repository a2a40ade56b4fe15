"""The main command as a user types it: `dvc repro` on the default profile hub, against a local Hub server.

`tests/hub_server.py` serves stand-ins of every pin; a fresh copy of the repo (see tests/test_dag.py) runs
`stages/fetch.py --plan`, then `dvc repro`, then the checks below read what it left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_dag import REPORTS, ROOT, TASKS, _dvc, _env, _fresh_copy, _run, _stages_run

from pipelab.records import iter_records


@pytest.fixture(scope="module")
def hub_dag(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`tests/hub_server.py` serving stand-ins of every pin; in a fresh copy `fetch.py --plan`, then `dvc repro`.

    The copy's params.yaml keeps profile: hub and shortens only the latency protocol (bench.hub: 10 s of timed
    calls per run would be 10 minutes of CI for numbers nobody reads on stand-in weights) and runs single-threaded.
    """
    base = tmp_path_factory.mktemp("hub-dag")

    def short_bench(repo: Path) -> None:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        assert params["profile"] == "hub"  # the default a user gets
        params["bench"]["hub"] = dict(params["bench"]["tiny"])
        params["threads"]["hub"] = 1
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    repo = _fresh_copy(base / "repo", short_bench)
    log = base / "requests.log"
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "hub_server.py"), "--root", str(base / "hub"), "--port", "0"]
        + ["--request-log", str(log)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(repo) | {"OMP_NUM_THREADS": "1"},
    )
    try:
        line = server.stdout.readline().strip()
        assert line.startswith("serving http://127.0.0.1:"), line
        url = line.split()[1]
        plan = _run([sys.executable, "stages/fetch.py", "--plan"], repo, hub=url)
        downloaded_by_plan = sorted(p.name for p in (repo / "data").glob("hub/models--*"))
        started = time.perf_counter()
        first = _dvc(["repro"], repo, timeout=3600, hub=url)
        seconds = time.perf_counter() - started
        yield {
            "repo": repo,
            "url": url,
            "server": server,
            "log": log,
            "plan": plan,
            "downloaded_by_plan": downloaded_by_plan,
            "output": first.stdout + first.stderr,
            "seconds": seconds,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_fetch_plan_lists_every_pin_and_its_weights_source_before_downloading(hub_dag):
    plan = hub_dag["plan"]
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    row = {line.split()[0]: line for line in lines if line and not line.startswith(("what", "total"))}
    assert "PR #28" in row["distilbart-cnn"] and "PR #3017" in row["emotion-distilroberta"]
    assert row["opus-mt-fr-en"].split()[2] == "c4aed37b318c" and " pin " in row["opus-mt-fr-en"]
    assert {"image-classification/cat", "automatic-speech-recognition/mlk"} <= set(row)
    assert lines[-1].startswith("total ") and lines[-1].endswith("0 refused")
    assert hub_dag["downloaded_by_plan"] == []  # a plan downloads nothing


@pytest.mark.slow
def test_dvc_repro_on_the_hub_profile_runs_the_whole_grid_on_served_weights(hub_dag):
    repo = hub_dag["repo"]
    print(f"\nhub DAG wall time: {hub_dag['seconds']:.0f} s")
    ran = _stages_run(hub_dag["output"])
    assert sorted(ran) == sorted(["fetch", "offline_plots", "aggregate", *(f"run@{task}" for task in TASKS)])
    records = [r for _, r in iter_records(repo / "results")]
    assert {r["task"] for r in records} == set(TASKS)
    assert all(r["profile"] == "hub" for r in records)
    # every point ran but bitsandbytes', which needs CUDA (recorded as UNSUPPORTED, with the reason)
    assert {
        r["status"] for r in records if not r["ablation"].get("point", {}).get("quantization", "").startswith("bnb")
    } == {"FINISHED"}
    assert all(r["model"]["weights"] == "pretrained" for r in records)
    summarization = [r for r in records if r["model"]["name"] == "distilbart-cnn"]
    assert summarization and all(r["model"]["weights_pr"] == 28 for r in summarization)
    assert all(r["tags"]["weights_source"] == "refs/pr/28" for r in summarization)
    # pretrained weights get the course checks, and report their honest verdicts on random stand-ins
    course = next(r for r in records if r["task"] == "text-classification" and r["ablation"]["name"] == "none")
    assert course["course_verdict"].startswith("differs from the course")
    manifest = json.loads((repo / "data" / "fetched-hub.json").read_text())
    entry = next(m for m in manifest["models"] if m["name"] == "distilbart-cnn")
    assert entry["revision"].startswith("a4f8f3e") and entry["weights_pr"] == 28 and entry["weights_revision"]
    cat = next(a for a in manifest["assets"] if a["asset"] == "image-classification/cat")
    assert cat["commit"].startswith("0052a70") and len(cat["sha256"]) == 64
    for name in REPORTS:
        assert (repo / "results" / name).is_file(), name


@pytest.mark.slow
def test_check_pins_asks_the_hub_about_every_model_config(hub_dag):
    done = _run([sys.executable, "stages/fetch.py", "--check-pins"], hub_dag["repo"], hub=hub_dag["url"])
    assert done.returncode == 0, done.stdout + done.stderr
    models = (ROOT / "conf" / "model").glob("*.yaml")
    hub_configs = sorted(p.stem for p in models if p.stem != "auto" and not yaml.safe_load(p.read_text()).get("path"))
    rows = [line.split()[0] for line in done.stdout.splitlines()[1:-1]]
    assert rows == hub_configs  # whisper-large-v3 too, which no CPU grid downloads; local files have no pin
    assert "PR #20" in next(line for line in done.stdout.splitlines() if line.startswith("m2m100-418m"))


@pytest.mark.slow
def test_run_stages_never_ask_the_hub_and_with_it_gone_a_forced_stage_runs_from_the_cache(hub_dag):
    repo, log = hub_dag["repo"], hub_dag["log"]
    stage = "run@automatic-speech-recognition"
    before = len(log.read_text().splitlines())
    served = _dvc(["repro", "-f", "-s", stage], repo, hub=hub_dag["url"])
    assert _stages_run(served.stdout) == [stage]
    assert _stages_run(_dvc(["repro"], repo, hub=hub_dag["url"]).stdout) == ["aggregate"]  # new latencies
    assert len(log.read_text().splitlines()) == before  # run stages read the cache only, Hub up or not
    hub_dag["server"].terminate()
    hub_dag["server"].wait(timeout=30)
    again = _dvc(["repro"], repo, hub=hub_dag["url"])
    assert _stages_run(again.stdout) == []
    forced = _dvc(["repro", "-f", "-s", stage], repo, hub=hub_dag["url"])
    assert _stages_run(forced.stdout) == [stage]
    records = [r for _, r in iter_records(repo / "results") if r["task"] == "automatic-speech-recognition"]
    assert records and all(r["status"] == "FINISHED" for r in records)
