"""The MLflow UI as a user sees it: a real tiny temperature sweep, the README's `mlflow ui` command on 127.0.0.1,
and headless Chromium on the runs page and the compare view. Screenshots go to the test's tmp folder."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser import chromium_page
from conftest import run_cli
from test_cli import FAST, isolated

SWEEP = ["-m", "profile=tiny", "task=text-generation", "temperature=0.7,1.0,1.5"]
PARENT = "text-generation: temperature 0.7/1.0/1.5 [tiny]"
CHILDREN = ("T=0.7", "T=1", "T=1.5")
# The columns README's MLflow section tells a user to add (Columns, then type the name).
COLUMNS = ("weights", "task", "latency_p50_ms")
# `mlflow ui` took 115-140 s to answer at load average 25 on these machines (PITFALLS: >90 s at 7).
READY_TIMEOUT_S = 400
PAGE_TIMEOUT_MS = 300_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(server: subprocess.Popen, url: str, timeout_s: float) -> float:
    """Seconds until `url` answers; fails if the server exits or the time runs out."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        assert server.poll() is None, f"mlflow ui exited with {server.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=10):
                return time.perf_counter() - started
        except OSError:
            time.sleep(2)
    raise AssertionError(f"mlflow ui did not answer {url} within {timeout_s:.0f} s")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to its process group (uvicorn and its children), SIGKILL if it is still there after 30 s."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path):  # noqa: ANN201
    """The sweep's store in a tmp folder, served by `mlflow ui` started there as README says (default store
    ./mlflow.db), in its own process group, stopped by its PID."""
    where = tmp_path_factory.mktemp("mlflow_ui")
    result = run_cli([*SWEEP, *FAST[1:], *isolated(where, shared_data_dir)], cwd=where)
    assert result.returncode == 0, result.stderr[-3000:]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = (where / "mlflow_ui.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "ui", "--host", "127.0.0.1", "--port", str(port)]
        + ["--workers", "1"],
        cwd=where,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        ready_s = wait_until_ready(server, f"{base}/health", READY_TIMEOUT_S)
        print(f"\nmlflow ui answered after {ready_s:.1f} s")
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert listening.strip() and all("127.0.0.1" in line for line in listening.splitlines()), listening
        yield {"base": base, "dir": where}
    finally:
        stop(server)
        log.close()


def _experiment_id(where: Path) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{where / 'mlflow.db'}").get_experiment_by_name("pipelab").experiment_id


def add_column(page, name: str) -> None:  # noqa: ANN001
    """Columns > type the name > tick the entry whose title is exactly that name (the UI's own steps)."""
    page.get_by_role("button", name="Columns").click()
    page.get_by_placeholder("Search columns").fill(name)
    node = page.locator("[data-testid=column-selector-tree] .du-bois-light-tree-treenode").filter(
        has=page.locator(".du-bois-light-tree-title", has_text=re.compile(f"^{re.escape(name)}$"))
    )
    node.locator(".du-bois-light-tree-checkbox").first.click()
    page.keyboard.press("Escape")


def check_runs_page(page, base: str, experiment_id: str, out: Path) -> dict[str, float]:  # noqa: ANN001
    """The runs table: the parent sweep row, its three children once expanded, the tag and metric columns;
    then the compare view of the children with a chart. Returns the page timings in seconds."""
    timings = {}
    started = time.perf_counter()
    page.goto(f"{base}/#/experiments/{experiment_id}/runs", timeout=PAGE_TIMEOUT_MS)
    parent = page.get_by_text(PARENT, exact=True)
    parent.wait_for(timeout=PAGE_TIMEOUT_MS)
    timings["runs page"] = time.perf_counter() - started
    assistant = page.get_by_role("button", name="Close")  # MLflow 3.17 opens its assistant panel over the table
    if assistant.count():
        assistant.first.click()
    for name in COLUMNS:
        add_column(page, name)
    headers = page.locator("[role=columnheader]").all_inner_texts()
    assert all(any(name == h.strip() for h in headers) for name in COLUMNS), headers
    # Collapsed: one row, the sweep; its expander shows the children.
    row = page.locator(".ag-row").filter(has=parent)
    row.locator("button[data-component-id*=runnamecellrenderer]").click()
    for child in CHILDREN:
        page.get_by_text(child, exact=True).wait_for(timeout=60_000)
    cells = page.locator(".ag-cell").all_inner_texts()
    # the task and weights tags of the three children and of the parent (the tags all its jobs share)
    assert cells.count("text-generation") == 4 and cells.count("tiny-random") == 4, cells
    assert sum(bool(re.fullmatch(r"[\d.,]+", c.strip())) for c in cells) >= 3, cells  # latency p50 per child
    page.screenshot(path=str(out / "mlflow_runs.png"))
    # Compare the three children: tick them, then the Compare button.
    for child in CHILDREN:
        page.locator(".ag-row").filter(has=page.get_by_text(child, exact=True)).locator(
            "input[type=checkbox]"
        ).first.check()
    started = time.perf_counter()
    page.get_by_role("button", name=re.compile("^Compare")).first.click()
    page.get_by_text("Comparing 3 Runs").wait_for(timeout=PAGE_TIMEOUT_MS)
    timings["compare view"] = time.perf_counter() - started
    # Its parallel coordinates plot, with distinct_2 picked as the metric axis: a drawn axis of that name.
    page.locator("[class*=-select-selector]").filter(has_text="cases_total").first.click()
    page.keyboard.type("distinct_2")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.locator(".js-plotly-plot text", has_text=re.compile("^distinct_2$")).first.wait_for(timeout=60_000)
    page.screenshot(path=str(out / "mlflow_compare.png"), full_page=True)
    return timings


@pytest.mark.slow
def test_runs_page_shows_the_sweep_its_children_tags_and_metrics_in_a_browser(ui):
    out = ui["dir"]
    with chromium_page() as (page, requests):
        timings = check_runs_page(page, ui["base"], _experiment_id(out), out)
    print("\n" + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"screenshots: {out / 'mlflow_runs.png'}, {out / 'mlflow_compare.png'}")
    assert not requests.outside, requests.outside  # the UI asked this machine only
