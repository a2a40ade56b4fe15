"""tests/hub_server.py speaks the Hub's protocol: every call here goes through the real huggingface_hub client
over real HTTP, against a small hand-made layout (in a thread) or the stand-ins of conf/ (the CLI, in a process)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import yaml
from hub_server import CONVERT_BOT, STAND_INS_FILE, HubLayout, HubServer, git_blob_id
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors.numpy import save as save_safetensors

ROOT = Path(__file__).resolve().parents[1]
SERVER = Path(__file__).with_name("hub_server.py")
REPO = "acme/tiny"
DATASET = "acme/images"
PATTERNS = ["*.json", "*.safetensors"]


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client reads HF_HUB_OFFLINE once, at import: unsetting the variable is not enough in this process.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start_cli(root: Path, stderr: Path, *args: str, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """The CLI on a free port: (process, url), once it has printed its `serving` line."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--root", str(root), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=stderr.open("w"),  # a file, not a pipe nobody reads
        text=True,
        env=_env(),
    )
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail(f"no `serving` line within {timeout} s; stderr:\n{stderr.read_text()}")
    line = proc.stdout.readline()
    assert line.startswith("serving http://127.0.0.1:"), (line, stderr.read_text())
    return proc, line.split()[1]


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


# --- a hand-made layout, served from a thread ------------------------------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """acme/tiny: main = c1 <- c2; pull request #3 (SFconvertbot, open) at c3 <- c1, off main; #4 (alice, merged)."""
    root = tmp_path_factory.mktemp("layout")
    hub = HubLayout(root)
    weights = save_safetensors({"w": np.arange(300_000, dtype=np.float32).reshape(600, 500)})
    config = json.dumps({"architectures": ["BertModel"], "model_type": "bert"}).encode()
    c1 = hub.add_commit(REPO, {"config.json": config, "pytorch_model.bin": b"\x80pickle" * 100, "docs/a/b.txt": b"b"})
    c2 = hub.add_commit(REPO, {**hub.tree_of(REPO, c1), "README.md": b"# tiny\n"}, parent=c1, title="Add README")
    c3 = hub.add_commit(
        REPO,
        {**hub.tree_of(REPO, c1), "model.safetensors": weights},
        parent=c1,
        ref=None,
        author=CONVERT_BOT,
        title="Adding `safetensors` variant of this model",
    )
    hub.add_pull_request(REPO, c3, num=3)
    hub.add_pull_request(REPO, c2, num=4, author="alice", title="Add README", status="merged")
    cat = b"\xff\xd8\xff\xe0 not really a jpeg " * 1000
    d1 = hub.add_commit(DATASET, {"cat.jpeg": cat, "README.md": b"images"}, repo_type="dataset")
    return {"root": root, "c1": c1, "c2": c2, "c3": c3, "d1": d1, "weights": weights, "config": config, "cat": cat}


@pytest.fixture(scope="module")
def server(layout: dict) -> Iterator[HubServer]:
    with HubServer(layout["root"]) as hub:
        yield hub


@pytest.fixture
def api(server: HubServer) -> HfApi:
    return HfApi(endpoint=server.url, token=False)


def test_model_info_at_a_sha_a_branch_and_a_pr_ref(api: HfApi, layout: dict) -> None:
    info = api.model_info(REPO, revision=layout["c1"], files_metadata=True)
    assert info.sha == layout["c1"]
    files = {s.rfilename: s for s in info.siblings}
    assert sorted(files) == ["config.json", "docs/a/b.txt", "pytorch_model.bin"]
    assert files["config.json"].blob_id == git_blob_id(layout["config"]) and files["config.json"].lfs is None
    assert files["pytorch_model.bin"].lfs.sha256 == hashlib.sha256(b"\x80pickle" * 100).hexdigest()
    assert info.safetensors is None and info.last_modified.year == 2024

    assert api.model_info(REPO).sha == api.model_info(REPO, revision="main").sha == layout["c2"]
    pr = api.model_info(REPO, revision="refs/pr/3", files_metadata=True)
    assert pr.sha == layout["c3"]  # a commit reachable only from the pull request's ref
    weights = next(s for s in pr.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs.sha256 == hashlib.sha256(layout["weights"]).hexdigest()
    assert weights.size == weights.lfs.size == len(layout["weights"])
    assert pr.safetensors.total == 300_000 and pr.safetensors.parameters == {"F32": 300_000}
    assert api.model_info(REPO, revision=layout["c3"]).sha == layout["c3"]


def test_dataset_info(api: HfApi, layout: dict) -> None:
    info = api.dataset_info(DATASET, revision=layout["d1"], files_metadata=True)
    cat = next(s for s in info.siblings if s.rfilename == "cat.jpeg")
    assert info.sha == layout["d1"] and cat.lfs.sha256 == hashlib.sha256(layout["cat"]).hexdigest()


def test_list_repo_tree_recursive_and_in_a_folder(api: HfApi, layout: dict) -> None:
    tree = {e.path: e for e in api.list_repo_tree(REPO, recursive=True, revision="refs/pr/3")}
    assert sorted(tree) == ["config.json", "docs", "docs/a", "docs/a/b.txt", "model.safetensors", "pytorch_model.bin"]
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(layout["weights"]).hexdigest()
    assert tree["config.json"].blob_id == git_blob_id(layout["config"])
    assert len(tree["docs"].tree_id) == 40
    assert [e.path for e in api.list_repo_tree(REPO, "docs", revision=layout["c1"])] == ["docs/a"]
    assert api.list_repo_files(REPO) == ["README.md", "config.json", "docs/a/b.txt", "pytorch_model.bin"]


def test_refs_and_commits_of_a_pr_ref(api: HfApi, layout: dict) -> None:
    refs = api.list_repo_refs(REPO, include_pull_requests=True)
    assert [(b.ref, b.target_commit) for b in refs.branches] == [("refs/heads/main", layout["c2"])]
    assert {p.ref: p.target_commit for p in refs.pull_requests} == {
        "refs/pr/3": layout["c3"],
        "refs/pr/4": layout["c2"],
    }
    commits = api.list_repo_commits(REPO, revision="refs/pr/3")
    assert [c.commit_id for c in commits] == [layout["c3"], layout["c1"]]
    assert commits[0].authors == [CONVERT_BOT] and commits[0].created_at > commits[1].created_at
    assert [c.commit_id for c in api.list_repo_commits(REPO)] == [layout["c2"], layout["c1"]]


def test_discussions_filtered_and_their_details(api: HfApi, layout: dict) -> None:
    by_bot = list(api.get_repo_discussions(REPO, author=CONVERT_BOT))
    assert [(d.num, d.is_pull_request, d.git_reference) for d in by_bot] == [(3, True, "refs/pr/3")]
    assert [d.num for d in api.get_repo_discussions(REPO, discussion_type="pull_request")] == [4, 3]
    assert [d.num for d in api.get_repo_discussions(REPO, discussion_status="closed")] == [4]
    assert list(api.get_repo_discussions(REPO, discussion_type="discussion")) == []
    details = api.get_discussion_details(REPO, 3)
    assert details.target_branch == "refs/heads/main" and details.status == "open"
    assert [e.oid for e in details.events if e.type == "commit"] == [layout["c3"]]
    assert "+++ b/model.safetensors" in details.diff and "README.md" not in details.diff
    assert [e.type for e in api.get_discussion_details(REPO, 4).events][-1] == "status-change"


def test_snapshot_download_with_allow_patterns(server: HubServer, layout: dict, tmp_path: Path) -> None:
    path = Path(
        snapshot_download(REPO, revision="refs/pr/3", cache_dir=tmp_path, allow_patterns=PATTERNS, endpoint=server.url)
    )
    assert path.name == layout["c3"]
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert (path / "model.safetensors").read_bytes() == layout["weights"]
    assert (path / "config.json").read_bytes() == layout["config"]
    assert (tmp_path / f"models--{REPO.replace('/', '--')}" / "refs" / "refs" / "pr" / "3").read_text() == layout["c3"]


def test_hf_hub_download_of_a_dataset_file(server: HubServer, layout: dict, tmp_path: Path) -> None:
    path = hf_hub_download(DATASET, "cat.jpeg", repo_type="dataset", cache_dir=tmp_path, endpoint=server.url)
    assert Path(path).read_bytes() == layout["cat"] and Path(path).parent.name == layout["d1"]


def test_errors_are_the_clients_exceptions(api: HfApi, server: HubServer, tmp_path: Path) -> None:
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="0" * 40, cache_dir=tmp_path, endpoint=server.url)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="refs/pr/99", cache_dir=tmp_path, endpoint=server.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/missing")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(DATASET, cache_dir=tmp_path, endpoint=server.url)  # a dataset, asked for as a model
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=server.url)  # not on main


def test_range_requests(server: HubServer, layout: dict) -> None:
    url = f"{server.url}/{REPO}/resolve/refs%2Fpr%2F3/model.safetensors"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=100-"})) as response:
        assert response.status == 206 and response.read() == layout["weights"][100:]
        assert response.headers["Content-Range"] == f"bytes 100-{len(layout['weights']) - 1}/{len(layout['weights'])}"
        assert response.headers["X-Linked-Etag"] == f'"{hashlib.sha256(layout["weights"]).hexdigest()}"'
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={len(layout['weights'])}-"}))
    assert error.value.code == 416


def test_an_interrupted_download_resumes(layout: dict, tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    with HubServer(layout["root"], drop_once_after=4096, request_log=log) as hub:
        path = hf_hub_download(
            REPO, "model.safetensors", revision=layout["c3"], cache_dir=tmp_path / "cache", endpoint=hub.url
        )
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == hashlib.sha256(layout["weights"]).hexdigest()
    assert not list((tmp_path / "cache").rglob("*.incomplete"))
    gets = [line for line in log.read_text().splitlines() if line.startswith("GET ") and "model.safetensors" in line]
    assert len(gets) == 2  # the dropped one, and the one that resumed with a Range


def test_a_cached_pinned_snapshot_makes_no_request(layout: dict, tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    with HubServer(layout["root"], request_log=log) as hub:
        kwargs = dict(revision=layout["c3"], cache_dir=tmp_path, allow_patterns=PATTERNS, endpoint=hub.url)
        first = snapshot_download(REPO, **kwargs)
        assert log.read_text()
        log.write_text("")
        assert snapshot_download(REPO, **kwargs) == first
    assert log.read_text() == ""


def test_cli_prints_one_line_and_exits_0_on_sigterm(layout: dict, tmp_path: Path) -> None:
    proc, url = _start_cli(layout["root"], tmp_path / "stderr.txt")
    try:
        with urllib.request.urlopen(f"{url}/api/models/{REPO}") as response:
            assert json.load(response)["sha"] == layout["c2"]
    finally:
        assert _stop(proc) == 0
    assert proc.stdout.read() == ""


# --- the stand-ins of conf/, built and served by the CLI --------------------------------------------------------


def _model_pins() -> dict[str, str]:
    pins = {}
    for path in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        if path.name != "auto.yaml" and config.get("hub_id") and config.get("revision"):
            pins[config["hub_id"]] = config["revision"]
    return pins


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The CLI on an empty root: it builds the stand-ins, then serves them."""
    base = tmp_path_factory.mktemp("stand-ins")
    proc, url = _start_cli(base / "hub", base / "stderr.txt")
    yield url
    _stop(proc)


def test_stand_ins_serve_every_model_pin(stand_ins: str) -> None:
    api = HfApi(endpoint=stand_ins, token=False)
    evidence = yaml.safe_load(STAND_INS_FILE.read_text())
    pins = _model_pins()
    for hub_id, revision in pins.items():
        info = api.model_info(hub_id, revision=revision, files_metadata=True)
        names = {s.rfilename for s in info.siblings}
        assert info.sha == revision and "config.json" in names and "pipelab_tiny.json" not in names, hub_id
        pickle_only = evidence["pickle_only_with_conversion_pr"].get(hub_id)
        repinned = evidence["pinned_to_conversion_pr_head"].get(hub_id)
        if repinned and repinned["parent"] != revision:
            num, pin, head = repinned["pr"], repinned["parent"], revision
            assert api.model_info(hub_id).sha == pin  # main stays at the old, pickle-only pin
        elif pickle_only or repinned:  # (a re-pinned model whose config still names the old pin: the same shape)
            num, pin = (pickle_only or repinned)["pr"], revision
            head = api.model_info(hub_id, revision=f"refs/pr/{num}").sha
        else:
            assert "model.safetensors" in names, hub_id
            continue
        at_pin = {s.rfilename for s in api.model_info(hub_id, revision=pin).siblings}
        at_head = {s.rfilename for s in api.model_info(hub_id, revision=head).siblings}
        assert "pytorch_model.bin" in at_pin and not any(n.endswith(".safetensors") for n in at_pin), hub_id
        assert at_head == at_pin | {"model.safetensors"}, hub_id
        assert [c.commit_id for c in api.list_repo_commits(hub_id, revision=head)] == [head, pin], hub_id
        (pull,) = api.get_repo_discussions(hub_id, author=CONVERT_BOT, discussion_type="pull_request")
        assert pull.num == num and api.model_info(hub_id, revision=pull.git_reference).sha == head, hub_id


def test_stand_in_pickle_is_the_conversions_weights(stand_ins: str, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    hub_id, pr = "sshleifer/distilbart-cnn-12-6", 28
    pin = _model_pins()[hub_id]
    pickled = hf_hub_download(hub_id, "pytorch_model.bin", revision=pin, cache_dir=tmp_path, endpoint=stand_ins)
    converted = hf_hub_download(
        hub_id, "model.safetensors", revision=f"refs/pr/{pr}", cache_dir=tmp_path, endpoint=stand_ins
    )
    a, b = torch.load(pickled, weights_only=True), load_file(converted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stand_in_dataset_files(stand_ins: str, tmp_path: Path) -> None:
    import soundfile
    from PIL import Image
    from skimage import data as skdata

    revisions = {}
    for path in (ROOT / "conf" / "task").glob("*.yaml"):
        for asset in (yaml.safe_load(path.read_text()).get("assets") or {}).values():
            if isinstance(asset, dict) and isinstance(asset.get("hub"), dict):
                revisions[asset["hub"]["repo_id"]] = asset["hub"].get("revision") or "main"
    files = {}
    for repo_id, entry in yaml.safe_load(STAND_INS_FILE.read_text())["datasets"].items():
        files[entry["source"]] = hf_hub_download(
            repo_id,
            entry["file"],
            repo_type="dataset",
            revision=revisions.get(repo_id, "main"),
            cache_dir=tmp_path,
            endpoint=stand_ins,
        )
    image = Image.open(files["skimage:chelsea"])
    assert image.format == "JPEG" and image.size == Image.fromarray(skdata.chelsea()).size
    flac, _ = soundfile.read(io.BytesIO(Path(files["resource:speech_en.wav"]).read_bytes()), dtype="int16")
    wav, _ = soundfile.read(ROOT / "src" / "pipelab" / "resources" / "speech_en.wav", dtype="int16")
    assert soundfile.info(files["resource:speech_en.wav"]).format == "FLAC" and np.array_equal(flac, wav)
