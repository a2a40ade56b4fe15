"""Everything pipelab asks of the Hugging Face Hub: which commit carries a model's weights, and the downloads.

A model is pinned to a commit (`revision:` in conf/model). Its weights come, in this order of preference, from
1. the pinned commit itself, when it has `*.safetensors`;
2. the Hub's safetensors conversion pull request of that commit: opened by the conversion bot, whose parent is
   the pinned commit and which changes no file but adds safetensors (so config and tokenizer are the pin's);
3. the pinned commit's `pytorch_model.bin`, only when the profile opts in (`profile.allow_pickle=true`); it then
   loads through `torch.load(weights_only=True)`, and the run is tagged.
Anything else is refused before a byte is downloaded, with the model config file to fix and the ways out.

Each completed download leaves a small resolution record in `<cache>/pipelab/`, so the next run resolves the
same pin from the cache with no network call at all (and a partial snapshot is never taken for a whole one).
The endpoint is `$HF_ENDPOINT` (read at each call, so tests can point it at a local server speaking the Hub's
protocol, `tests/hub_server.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

CONVERSION_BOT = "SFconvertbot"  # the account the Hub's safetensors conversion service opens its PRs as
# What a pipeline needs besides weights: configs, tokenizers, processors, chat templates.
SUPPORT_PATTERNS = ("*.json", "*.txt", "*.model", "*.spm", "*.tiktoken", "*.jinja")
SAFETENSORS_PATTERNS = ("*.safetensors",)
PICKLE_PATTERNS = ("pytorch_model*.bin",)  # only the model's weights: never optimizer or training pickles
_COMMIT = re.compile(r"[0-9a-f]{40}")


class HubRefusal(RuntimeError):
    """The Hub answered, and the answer does not give loadable weights: the message names the fix."""


class HubUnreachable(RuntimeError):
    """No connection to the Hub's host."""


@dataclass(frozen=True)
class WeightsPlan:
    """Where one model's files come from, and how many bytes that is."""

    repo_id: str
    revision: str  # as pinned in the model config
    pin: str  # the commit the pin resolves to
    commit: str  # the commit whose files are downloaded (the pin, or the conversion PR's head)
    pr: int | None  # the conversion pull request, when the weights come from one
    format: str  # "safetensors" | "pickle"
    files: dict[str, int] = field(default_factory=dict)  # file -> size in bytes

    @property
    def source(self) -> str:
        return f"PR #{self.pr}" if self.pr is not None else "pin"

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    @property
    def patterns(self) -> list[str]:
        return [*SUPPORT_PATTERNS, *(SAFETENSORS_PATTERNS if self.format == "safetensors" else PICKLE_PATTERNS)]


@dataclass(frozen=True)
class FilePlan:
    """One input file of a dataset (or model) repo at a pinned revision."""

    repo_id: str
    repo_type: str
    filename: str
    revision: str
    commit: str
    size: int
    sha256: str | None  # the Hub's LFS sha256 of the file, when it is stored in LFS


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def check_reachable(timeout: float = 5.0) -> None:
    """Fail in seconds when the Hub's host does not answer, instead of the client's minutes of retries."""
    url = urllib.parse.urlparse(endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise HubUnreachable(f"cannot reach the Hugging Face Hub at {endpoint()} ({exc})") from exc


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


def _matches(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    return any(fnmatch(name, p) for p in patterns)


def _siblings(info: Any) -> dict[str, Any]:
    return {s.rfilename: s for s in info.siblings or []}


def plan_weights(repo_id: str, revision: str, *, allow_pickle: bool, config_file: str) -> WeightsPlan:
    """Ask the Hub where the weights of `repo_id` at `revision` come from; HubRefusal if nowhere acceptable."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    api = _api()
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except RevisionNotFoundError as exc:
        raise HubRefusal(
            f"{repo_id} has no revision {revision!r} on the Hub ({endpoint()}). Fix `revision:` in {config_file}: "
            f"`python stages/fetch.py --check-pins` lists what each pin resolves to"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise HubRefusal(f"the Hub has no model repo {repo_id!r}: fix `hub_id:` in {config_file}") from exc
    files = _siblings(info)

    def plan(commit: str, pr: int | None, fmt: str, tree: dict[str, Any]) -> WeightsPlan:
        draft = WeightsPlan(repo_id, revision, info.sha, commit, pr, fmt)
        sizes = {name: int(s.size or 0) for name, s in sorted(tree.items()) if _matches(name, draft.patterns)}
        return WeightsPlan(repo_id, revision, info.sha, commit, pr, fmt, sizes)

    if any(_matches(name, SAFETENSORS_PATTERNS) for name in files):
        return plan(info.sha, None, "safetensors", files)
    found, reasons = _conversion_pr(api, repo_id, info.sha, files)
    if found is not None:
        num, head, tree = found
        return plan(head, num, "safetensors", tree)
    has_pickle = any(_matches(name, PICKLE_PATTERNS) for name in files)
    if allow_pickle and has_pickle:
        return plan(info.sha, None, "pickle", files)
    why = "; ".join(reasons) if reasons else "the repo has no pull request at all"
    ways = [
        f"pin a commit that has model.safetensors (`revision:` in {config_file})",
    ]
    if has_pickle:
        ways.append(
            "or opt in to its pickled pytorch_model.bin with profile.allow_pickle=true (loaded only through "
            "torch.load(weights_only=True); such runs are tagged weights_format=pickle)"
        )
    raise HubRefusal(
        f"{repo_id} at {info.sha[:12]} (pinned in {config_file}) has no safetensors weights, and no safetensors "
        f"conversion pull request by {CONVERSION_BOT} with that commit as parent was found ({why}). "
        f"pipelab loads safetensors only by default: {' '.join(ways)}"
    )


def _conversion_pr(
    api: Any, repo_id: str, pin: str, pin_files: dict[str, Any]
) -> tuple[tuple[int, str, dict[str, Any]] | None, list[str]]:
    """The bot's conversion PR of `pin` as (number, head commit, head tree), and why others were passed over."""
    reasons: list[str] = []
    for pr in api.get_repo_discussions(repo_id, discussion_type="pull_request"):
        if pr.author != CONVERSION_BOT:
            reasons.append(f"PR #{pr.num} was opened by {pr.author}, not {CONVERSION_BOT}")
            continue
        if pr.status == "closed":
            reasons.append(f"PR #{pr.num} is closed")
            continue
        commits = api.list_repo_commits(repo_id, revision=f"refs/pr/{pr.num}")
        head = commits[0].commit_id
        parent = commits[1].commit_id if len(commits) > 1 else None
        if parent != pin:
            reasons.append(f"PR #{pr.num}'s parent is {str(parent)[:12]}, not the pin {pin[:12]}")
            continue
        tree = _siblings(api.model_info(repo_id, revision=head, files_metadata=True))
        changed = sorted(
            name
            for name in set(tree) | set(pin_files)
            if not _matches(name, SAFETENSORS_PATTERNS)
            and getattr(tree.get(name), "blob_id", None) != getattr(pin_files.get(name), "blob_id", None)
        )
        if changed:
            reasons.append(f"PR #{pr.num} changes more than weights ({', '.join(changed[:3])})")
            continue
        if not any(_matches(name, SAFETENSORS_PATTERNS) for name in tree):
            reasons.append(f"PR #{pr.num} adds no safetensors file")
            continue
        return (pr.num, head, tree), reasons
    return None, reasons


# ----------------------------------------------------------------------------------------------------------
# The cache: snapshots in the Hugging Face layout, plus pipelab's resolution records beside them
# ----------------------------------------------------------------------------------------------------------


def _record_path(cache_dir: Path, kind: str, repo_id: str, revision: str, filename: str = "") -> Path:
    """`<cache>/pipelab/<kind>--<org>--<name>--<revision>[--<file>].json` (one file per pin, never a path escape)."""
    key = "--".join(part for part in (kind, repo_id, revision, filename) if part)
    return cache_dir / "pipelab" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', key.replace('/', '--'))}.json"


def _write_record(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def cached_plan(repo_id: str, revision: str, cache_dir: Path) -> WeightsPlan | None:
    """The plan of a completed earlier download of this pin, or None."""
    path = _record_path(cache_dir, "model", repo_id, revision)
    if not path.is_file():
        return None
    return WeightsPlan(**json.loads(path.read_text(encoding="utf-8")))


def local_snapshot(plan: WeightsPlan, cache_dir: Path) -> Path | None:
    """The complete local snapshot of a plan, with no network call; None when any file is missing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(
            snapshot_download(
                plan.repo_id,
                revision=plan.commit,
                cache_dir=str(cache_dir),
                allow_patterns=plan.patterns,
                local_files_only=True,
            )
        )
    except (LocalEntryNotFoundError, OSError):
        return None
    return path if all((path / name).is_file() for name in plan.files) else None


@contextlib.contextmanager
def _download_progress(what: str, size: int) -> Iterator[None]:
    """Bytes while downloading: huggingface_hub's own per-file bars on a terminal; elsewhere (CI logs, DVC) its
    bars are switched off (they redraw with carriage returns) and one plain line says the size and the rate."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    terminal = sys.stderr.isatty()
    print(f"hub: downloading {what}: {size / 1e6:,.1f} MB", flush=True)
    were_disabled = are_progress_bars_disabled()
    if not terminal:
        disable_progress_bars()
    started = time.perf_counter()
    try:
        yield
    finally:
        if not terminal and not were_disabled:
            enable_progress_bars()
    seconds = time.perf_counter() - started
    rate = size / 1e6 / seconds if seconds > 0 else 0.0
    print(f"hub: downloaded {what}: {size / 1e6:,.1f} MB in {seconds:.1f} s ({rate:,.1f} MB/s)", flush=True)


def download_weights(plan: WeightsPlan, cache_dir: Path) -> Path:
    """Download a plan's files (resuming interrupted files), then record the resolution for offline reuse."""
    from huggingface_hub import snapshot_download

    with _download_progress(f"{plan.repo_id} @ {plan.commit[:12]}", missing_bytes(plan, cache_dir)):
        path = Path(
            snapshot_download(
                plan.repo_id,
                revision=plan.commit,
                cache_dir=str(cache_dir),
                allow_patterns=plan.patterns,
                endpoint=endpoint(),
            )
        )
    missing = [name for name in plan.files if not (path / name).is_file()]
    if missing:
        raise HubRefusal(f"{plan.repo_id} at {plan.commit[:12]}: the download left out {', '.join(missing)}")
    remember_plan(plan, cache_dir)
    return path


def remember_plan(plan: WeightsPlan, cache_dir: Path) -> None:
    """Record a pin whose files are all in the cache: later runs resolve it with no network call."""
    _write_record(_record_path(cache_dir, "model", plan.repo_id, plan.revision), asdict(plan))


def missing_bytes(plan: WeightsPlan, cache_dir: Path) -> int:
    """Bytes of a plan not yet in the local cache."""
    from huggingface_hub.file_download import repo_folder_name

    snapshot = cache_dir / repo_folder_name(repo_id=plan.repo_id, repo_type="model") / "snapshots" / plan.commit
    return sum(size for name, size in plan.files.items() if not (snapshot / name).is_file())


# ----------------------------------------------------------------------------------------------------------
# Input files of dataset repos (the course's cat photo and speech clip)
# ----------------------------------------------------------------------------------------------------------


def cached_file(
    repo_id: str, repo_type: str, filename: str, revision: str, cache_dir: Path
) -> tuple[Path, dict] | None:
    """(local path, its resolution record) of an input file fetched before, with no network call."""
    record = _record_path(cache_dir, repo_type, repo_id, revision, filename)
    if not record.is_file():
        return None
    data = json.loads(record.read_text(encoding="utf-8"))
    from huggingface_hub import try_to_load_from_cache

    # Not hf_hub_download(local_files_only=True): it builds request headers, and that alone asks the Hub for
    # its agent registry. This looks in the cache folders only.
    path = try_to_load_from_cache(
        repo_id, filename, cache_dir=str(cache_dir), revision=data["commit"], repo_type=repo_type
    )
    return (Path(path), data) if isinstance(path, str) else None


def plan_file(repo_id: str, repo_type: str, filename: str, revision: str) -> FilePlan:
    """Ask the Hub for one file at a revision: its commit, size and LFS sha256."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    api = _api()
    try:
        info = api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise HubRefusal(f"the Hub has no {repo_type} {repo_id} at revision {revision!r}: fix the task config") from exc
    sibling = _siblings(info).get(filename)
    if sibling is None:
        raise HubRefusal(f"{repo_type} {repo_id} at {info.sha[:12]} has no file {filename!r}: fix the task config")
    sha256 = sibling.lfs.sha256 if sibling.lfs is not None else None
    return FilePlan(repo_id, repo_type, filename, revision, info.sha, int(sibling.size or 0), sha256)


def download_file(plan: FilePlan, cache_dir: Path) -> Path:
    """Download one input file at its plan's commit (the caller checks it, then `record_file`)."""
    from huggingface_hub import hf_hub_download

    with _download_progress(f"{plan.repo_id}/{plan.filename} @ {plan.commit[:12]}", plan.size):
        return Path(
            hf_hub_download(
                plan.repo_id,
                plan.filename,
                repo_type=plan.repo_type,
                revision=plan.commit,
                cache_dir=str(cache_dir),
                endpoint=endpoint(),
            )
        )


def record_file(plan: FilePlan, cache_dir: Path, sha256: str) -> None:
    """Remember a checked input file: later runs find it offline and verify it against this sha256."""
    _write_record(
        _record_path(cache_dir, plan.repo_type, plan.repo_id, plan.revision, plan.filename),
        {"commit": plan.commit, "sha256": sha256, "size": plan.size},
    )


def is_commit(revision: str) -> bool:
    return bool(_COMMIT.fullmatch(revision))
