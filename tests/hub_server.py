"""A local server that speaks the Hugging Face Hub's HTTP protocol, for tests.

The real ``huggingface_hub`` client, pointed at it with ``endpoint="http://127.0.0.1:PORT"`` (or ``HF_ENDPOINT`` in
a subprocess), can call ``model_info`` / ``dataset_info`` (``files_metadata`` too), ``list_repo_tree``,
``list_repo_refs``, ``list_repo_commits``, ``get_repo_discussions``, ``get_discussion_details``,
``snapshot_download`` and ``hf_hub_download``, and gets the Hub's errors (``RepositoryNotFoundError``,
``RevisionNotFoundError``, ``RemoteEntryNotFoundError``) from the same ``X-Error-Code`` headers. Files are served
over plain HTTP with ``Range`` support (no Xet headers), so an interrupted download resumes.

The server keeps no state of its own: every request reads this layout from disk, written through
:class:`HubLayout`::

    ROOT/<models|datasets>/<org>/<name>/repo.json
    ROOT/<models|datasets>/<org>/<name>/commits/<40-hex sha>/<the full file tree of that commit>

Run it::

    python tests/hub_server.py --root DIR --port 0 [--drop-once-after N] [--request-log FILE]

If DIR is empty or missing it is first filled with :func:`build_stand_ins` (tiny random-weight models at every
pin of ``conf/model``, laid out as the Hub has them; see ``tests/hub_stand_ins.yaml``). It then prints exactly one
line, ``serving http://127.0.0.1:PORT``, on stdout, serves until SIGTERM or SIGINT, and exits 0. Progress goes to
stderr. In a test, :class:`HubServer` is also a context manager that serves from a thread.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubLayout", "HubServer", "build_stand_ins", "git_blob_id", "is_lfs", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
STAND_INS_FILE = Path(__file__).with_name("hub_stand_ins.yaml")

_PLURAL = {"model": "models", "dataset": "datasets"}
# What the Hub's default .gitattributes (as far as these tests need it) stores in LFS, plus anything over 10 MB.
_LFS_SUFFIXES = frozenset({".safetensors", ".bin", ".jpeg", ".jpg", ".png", ".flac", ".wav", ".model"})
_LFS_MIN_SIZE = 10 * 1024 * 1024
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_PR_REF = re.compile(r"refs/pr/(\d+)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FIRST_DATE = "2024-01-01T00:00:00.000Z"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"
_DISCUSSIONS_PAGE = 50  # the Hub's page size for discussions
_CHUNK = 1024 * 1024
CONVERT_BOT = "SFconvertbot"
CONVERT_TITLE = "Adding `safetensors` variant of this model"


def is_lfs(name: str, size: int) -> bool:
    """Whether the Hub would store this file in LFS (then its ETag is its sha256, not its git blob id)."""
    return Path(name).suffix.lower() in _LFS_SUFFIXES or size > _LFS_MIN_SIZE


def git_blob_id(content: bytes) -> str:
    """The git blob sha1 of `content`, as ``git hash-object`` computes it."""
    return _git_object_id("blob", content)


def _git_object_id(kind: str, body: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(body)}\0".encode() + body).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer file git stores for an LFS file: its blob id and size are what the Hub reports as blobId and
    pointerSize (the content's own sha256 is the lfs oid)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _repo_id_parts(repo_id: str) -> tuple[str, str]:
    org, sep, name = repo_id.partition("/")
    if not (sep and _NAME.fullmatch(org) and _NAME.fullmatch(name)):
        raise ValueError(f"repo id must be <org>/<name>, got {repo_id!r}")
    return org, name


def _check_file_name(name: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"file names must be relative posix paths inside the repo, got {name!r}")


def _next_day(date: str) -> str:
    return (datetime.strptime(date, _DATE_FORMAT) + timedelta(days=1)).strftime(_DATE_FORMAT)


def _object_id(*parts: str) -> str:
    """A deterministic 24-hex id, the shape of the Hub's (MongoDB) object ids for repos and events."""
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:24]


class HubLayout:
    """Writes repos, commits and pull requests in the on-disk layout the server reads (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def repo_dir(self, repo_id: str, repo_type: str = "model") -> Path:
        org, name = _repo_id_parts(repo_id)
        if repo_type not in _PLURAL:
            raise ValueError(f"repo_type must be one of {sorted(_PLURAL)}, got {repo_type!r}")
        return self.root / _PLURAL[repo_type] / org / name

    def read(self, repo_id: str, repo_type: str = "model") -> dict[str, Any] | None:
        """The repo's repo.json, or None if the repo does not exist."""
        path = self.repo_dir(repo_id, repo_type) / "repo.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _write(self, repo_id: str, repo_type: str, meta: dict[str, Any]) -> None:
        # Atomic: a server reading concurrently sees the old repo.json or the new one, never half of one.
        repo = self.repo_dir(repo_id, repo_type)
        repo.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=repo, prefix=".repo.json.")
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        os.replace(tmp, repo / "repo.json")

    def add_commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        parent: str | None = None,
        ref: str | None = "main",
        repo_type: str = "model",
        sha: str | None = None,
        title: str = "Upload folder using huggingface_hub",
        author: str | None = None,
        date: str | None = None,
    ) -> str:
        """Add a commit whose tree is exactly `files` (name -> content or a file to copy); returns its sha.

        Nothing is inherited from `parent`: pass the whole tree (``tree_of`` gives a parent's files to copy).
        `sha` defaults to a sha1 of the repo id, the parent, the title, author and date, and the files' digests;
        `author` to the repo's namespace; `date` to the parent's date plus one day (the first commit: 2024-01-01).
        `ref` is the branch moved to the new commit (None: no branch, e.g. the head of a pull request).
        """
        for name in files:
            _check_file_name(name)
        meta = self.read(repo_id, repo_type) or {"refs": {}, "commits": {}, "pull_requests": []}
        if parent is not None and parent not in meta["commits"]:
            raise ValueError(f"parent {parent} is not a commit of {repo_type} {repo_id}")
        if ref is not None and ref.startswith("refs/") and not ref.startswith("refs/heads/"):
            raise ValueError(f"ref must be a branch, got {ref!r} (pull request refs come from add_pull_request)")
        contents = {name: data if isinstance(data, bytes) else Path(data).read_bytes() for name, data in files.items()}
        author = author or repo_id.split("/")[0]
        if date is None:
            date = _next_day(meta["commits"][parent]["date"]) if parent is not None else _FIRST_DATE
        if sha is None:
            # Like git's, the id covers the message and author too: two commits of one tree with different titles
            # are two commits, not one whose metadata the second call overwrites.
            digest = hashlib.sha1(f"{repo_type}\0{repo_id}\0{parent or ''}\0{title}\0{author}\0{date}\0".encode())
            for name in sorted(contents):
                digest.update(f"{name}\0{hashlib.sha256(contents[name]).hexdigest()}\0".encode())
            sha = digest.hexdigest()
        if not _COMMIT_SHA.fullmatch(sha):
            raise ValueError(f"sha must be 40 lowercase hex digits, got {sha!r}")

        commits_dir = self.repo_dir(repo_id, repo_type) / "commits"
        commits_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=commits_dir, prefix=".staging-"))
        for name, data in contents.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        final = commits_dir / sha
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)

        meta["commits"][sha] = {"parent": parent, "title": title, "author": author, "date": date}
        if ref is not None:
            meta["refs"][ref.removeprefix("refs/heads/")] = sha
        self._write(repo_id, repo_type, meta)
        return sha

    def add_pull_request(
        self,
        repo_id: str,
        head: str,
        *,
        num: int,
        author: str = CONVERT_BOT,
        title: str = CONVERT_TITLE,
        status: str = "open",
        repo_type: str = "model",
        created_at: str | None = None,
    ) -> None:
        """Open pull request `num` (ref ``refs/pr/<num>``) at commit `head`; replaces an earlier one of that number."""
        meta = self.read(repo_id, repo_type)
        if meta is None or head not in meta["commits"]:
            raise ValueError(f"head {head} is not a commit of {repo_type} {repo_id}")
        if status not in ("open", "closed", "merged", "draft"):
            raise ValueError(f"status must be open, closed, merged or draft, got {status!r}")
        pull = {
            "num": num,
            "head": head,
            "author": author,
            "title": title,
            "status": status,
            "created_at": created_at or meta["commits"][head]["date"],
        }
        meta["pull_requests"] = [p for p in meta["pull_requests"] if p["num"] != num] + [pull]
        self._write(repo_id, repo_type, meta)

    def tree_of(self, repo_id: str, sha: str, repo_type: str = "model") -> dict[str, Path]:
        """The files of commit `sha`: repo path -> file on disk."""
        base = self.repo_dir(repo_id, repo_type) / "commits" / sha
        if not base.is_dir():
            raise KeyError(f"no commit {sha} in {repo_type} {repo_id}")
        return _files_under(base)


def _files_under(base: Path) -> dict[str, Path]:
    return {p.relative_to(base).as_posix(): p for p in sorted(base.rglob("*")) if p.is_file()}


# --- serving ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Digest:
    size: int
    blob_id: str  # git blob sha1: of the content, or of the LFS pointer for an LFS file
    sha256: str | None  # LFS files only
    pointer_size: int | None


class _Digests:
    """File digests, cached on (path, inode, size, mtime): weights are hashed once, not on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int, int, int], _Digest] = {}

    def __call__(self, name: str, path: Path) -> _Digest:
        st = path.stat()
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        content = path.read_bytes()
        if is_lfs(name, len(content)):
            sha256 = hashlib.sha256(content).hexdigest()
            pointer = _lfs_pointer(sha256, len(content))
            digest = _Digest(len(content), git_blob_id(pointer), sha256, len(pointer))
        else:
            digest = _Digest(len(content), git_blob_id(content), None, None)
        with self._lock:
            self._cache[key] = digest
        return digest


@dataclass
class _Repo:
    """One repo as read from disk for one request."""

    repo_id: str
    repo_type: str
    dir: Path
    meta: dict[str, Any]

    def resolve(self, revision: str) -> str | None:
        """The commit a revision names: a branch, refs/heads/<branch>, refs/pr/<num>, or any commit's sha."""
        if revision in self.meta["commits"]:
            sha = revision
        elif match := _PR_REF.fullmatch(revision):
            sha = next((p["head"] for p in self.meta["pull_requests"] if p["num"] == int(match[1])), None)
        else:
            sha = self.meta["refs"].get(revision.removeprefix("refs/heads/"))
        return sha if sha is not None and (self.dir / "commits" / sha).is_dir() else None

    def files(self, sha: str) -> dict[str, Path]:
        return _files_under(self.dir / "commits" / sha)

    def history(self, sha: str) -> list[str]:
        """`sha` and its ancestors, newest first."""
        chain: list[str] = []
        while sha is not None and sha not in chain:
            chain.append(sha)
            sha = self.meta["commits"][sha]["parent"]
        return chain


class _HubError(Exception):
    """A Hub error response: status, the X-Error-Code the client maps to an exception, and a message."""

    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, dict(headers or {})


def _repo_not_found() -> _HubError:
    return _HubError(404, "RepoNotFound", "Repository not found")


def _revision_not_found(revision: str) -> _HubError:
    return _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")


def _entry_not_found(path: str, revision: str, sha: str) -> _HubError:
    # The Hub names the commit even on a 404: the client records the file's absence under it (.no_exist/<sha>/).
    return _HubError(404, "EntryNotFound", f'{path} does not exist on "{revision}"', {"X-Repo-Commit": sha})


def _split_revision(segments: list[str]) -> tuple[str, list[str]]:
    """(revision, remaining segments) from raw path segments: the client url-quotes the revision into one segment
    (refs%2Fpr%2F3), but an unquoted refs/pr/3 or refs/heads/main takes three."""
    if segments[0] == "refs" and len(segments) >= 3:
        return "/".join(segments[:3]), segments[3:]
    return unquote(segments[0]), segments[1:]


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return query.get(name, [""])[-1].lower() in ("1", "true")


def _safetensors_summary(paths: list[Path]) -> dict[str, Any] | None:
    """The `safetensors` field of the Hub's model info: parameter counts per dtype, read from the files' headers.
    None, as on the Hub, when a file is not valid safetensors."""
    counts: dict[str, int] = {}
    for path in paths:
        try:
            with path.open("rb") as f:
                (header_size,) = struct.unpack("<Q", f.read(8))
                if header_size > path.stat().st_size:
                    return None
                header = json.loads(f.read(header_size))
            tensors = [t for key, t in header.items() if key != "__metadata__"]
            for tensor in tensors:
                counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + math.prod(tensor["shape"])
        except (struct.error, ValueError, KeyError, TypeError, AttributeError):
            return None
    return {"parameters": counts, "total": sum(counts.values())}


def _git_tree_id(blob_ids: Mapping[str, str], prefix: str = "") -> str:
    """The git tree sha1 of the directory `prefix` (``""``: the root) of a commit's files."""
    entries: dict[str, tuple[str, str]] = {}
    for name, oid in blob_ids.items():
        if not name.startswith(prefix):
            continue
        child, sep, _ = name[len(prefix) :].partition("/")
        if not sep:
            entries[child] = ("100644", oid)
        elif child + "/" not in entries:
            entries[child + "/"] = ("40000", _git_tree_id(blob_ids, f"{prefix}{child}/"))
    # git orders tree entries by name, a directory's name compared as if it ended in "/": the keys above.
    body = b"".join(
        f"{mode} {key.rstrip('/')}".encode() + b"\0" + bytes.fromhex(oid)
        for key, (mode, oid) in sorted(entries.items())
    )
    return _git_object_id("tree", body)


class _HTTPServer(http.server.ThreadingHTTPServer):
    """Tracks open connections so that stopping also closes the client's idle keep-alive connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@dataclass
class _State:
    layout: HubLayout
    drop_once_after: int | None
    request_log: Path | None
    digests: _Digests
    lock: threading.Lock
    dropped: set[tuple[str, ...]]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        # Silent: a test may pipe stderr without reading it, and a full pipe would block the server.
        pass

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _unsupported(self) -> None:
        self._log()
        self._send_error(_HubError(405, None, f"{self.command} is not supported by this test server"), head=False)

    do_POST = do_PUT = do_PATCH = do_DELETE = _unsupported

    # -- plumbing --

    def _log(self) -> None:
        state = self.server.state
        if state.request_log is not None:
            with state.lock, state.request_log.open("a") as f:
                f.write(f"{self.command} {self.path}\n")

    def _send(self, status: int, body: bytes, headers: Mapping[str, str], *, head: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(self, data: Any, *, head: bool, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self._send(200, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, head=head)

    def _send_error(self, error: _HubError, *, head: bool) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": error.message}
        if error.code is not None:
            headers["X-Error-Code"] = error.code
        body = json.dumps({"error": error.message}).encode()
        self._send(error.status, body, {**headers, **error.headers}, head=head)

    def _dispatch(self, *, head: bool) -> None:
        self._log()
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        segments = [s for s in url.path.split("/") if s]
        try:
            if segments[:1] == ["api"]:
                self._api(segments[1:], query, head=head)
            else:
                self._resolve(segments, head=head)
        except _HubError as error:
            self._send_error(error, head=head)

    def _repo(self, repo_type: str, org: str, name: str) -> _Repo:
        repo_id, layout = f"{unquote(org)}/{unquote(name)}", self.server.state.layout
        try:
            meta = layout.read(repo_id, repo_type)
        except ValueError:  # not an <org>/<name> this layout can hold
            raise _repo_not_found() from None
        if meta is None:
            raise _repo_not_found()
        return _Repo(repo_id, repo_type, layout.repo_dir(repo_id, repo_type), meta)

    # -- /{repo_id}/resolve/{revision}/{file}, /datasets/{repo_id}/resolve/... --

    def _resolve(self, segments: list[str], *, head: bool) -> None:
        repo_type = "model"
        if segments[:1] == ["datasets"]:
            repo_type, segments = "dataset", segments[1:]
        if len(segments) < 5 or segments[2] != "resolve":
            # A one-part repo id (legacy "gpt2") lands here too: no such repo in this layout.
            raise _repo_not_found() if "resolve" in segments else _HubError(404, None, "Not found")
        repo = self._repo(repo_type, segments[0], segments[1])
        revision, rest = _split_revision(segments[3:])
        sha = repo.resolve(revision)
        if sha is None:
            raise _revision_not_found(revision)
        name = "/".join(unquote(s) for s in rest)
        path = repo.files(sha).get(name)
        if path is None:
            raise _entry_not_found(name, revision, sha)
        self._serve_file(repo, sha, name, path, head=head)

    def _serve_file(self, repo: _Repo, sha: str, name: str, path: Path, *, head: bool) -> None:
        digest = self.server.state.digests(name, path)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "X-Repo-Commit": sha,
            "ETag": f'"{digest.sha256 or digest.blob_id}"',
        }
        if digest.sha256 is not None:
            # What the client prefers to ETag and Content-Length for an LFS file (the Hub's redirect to its CDN
            # carries them); it names the blob in the cache after the linked etag.
            headers["X-Linked-Etag"] = f'"{digest.sha256}"'
            headers["X-Linked-Size"] = str(digest.size)
        start, end, status = 0, digest.size - 1, 200
        requested = self.headers.get("Range")
        if requested and not head:
            match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", requested)
            if match and (match[1] or match[2]):  # anything else (several ranges) is ignored, as HTTP allows
                if match[1]:
                    start, end = int(match[1]), min(int(match[2]) if match[2] else end, end)
                else:
                    start = max(digest.size - int(match[2]), 0)
                if start > end:
                    self._send(416, b"", {**headers, "Content-Range": f"bytes */{digest.size}"}, head=False)
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{digest.size}"
        length = end - start + 1
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if head:
            return
        budget = length
        if digest.sha256 is not None and self._drop_now(repo, name, digest.sha256) and length > 0:
            # Send part of the body, then end the connection: the client sees a short body (a protocol error it
            # retries with a Range request), not a reset.
            budget = min(self.server.state.drop_once_after or 0, length - 1)
            self.close_connection = True
        with path.open("rb") as f:
            f.seek(start)
            while budget > 0:
                chunk = f.read(min(_CHUNK, budget))
                if not chunk:
                    break
                self.wfile.write(chunk)
                budget -= len(chunk)
        self.wfile.flush()

    def _drop_now(self, repo: _Repo, name: str, sha256: str) -> bool:
        state = self.server.state
        if state.drop_once_after is None:
            return False
        key = (repo.repo_type, repo.repo_id, name, sha256)
        with state.lock:
            if key in state.dropped:
                return False
            state.dropped.add(key)
            return True

    # -- /api/... --

    def _api(self, segments: list[str], query: dict[str, list[str]], *, head: bool) -> None:
        plural = {v: k for k, v in _PLURAL.items()}
        if len(segments) < 3 or segments[0] not in plural:
            raise _HubError(404, None, "Not found")
        repo = self._repo(plural[segments[0]], segments[1], segments[2])
        action, rest = (segments[3], segments[4:]) if len(segments) > 3 else ("revision", ["main"])
        if action in ("revision", "tree", "commits"):
            if not rest:
                raise _HubError(404, None, "Not found")
            revision, rest = _split_revision(rest)
            if action == "revision":
                # The revision is one url-quoted segment; a literal refs/pr/N arrives as several.
                revision = "/".join([revision, *(unquote(s) for s in rest)])
            sha = repo.resolve(revision)
            if sha is None:
                raise _revision_not_found(revision)
            if action == "revision":
                self._send_json(self._info(repo, sha, query), head=head)
            elif action == "tree":
                path = "/".join(unquote(s) for s in rest).strip("/")
                self._send_json(self._tree(repo, sha, revision, path, _flag(query, "recursive")), head=head)
            else:
                self._send_json([self._commit_json(repo, c) for c in repo.history(sha)], head=head)
        elif action == "refs" and not rest:
            self._send_json(self._refs(repo, _flag(query, "include_prs")), head=head)
        elif action == "discussions" and not rest:
            self._send_json(self._discussions(repo, query), head=head)
        elif action == "discussions" and len(rest) == 1 and rest[0].isdigit():
            self._send_json(self._discussion_details(repo, int(rest[0])), head=head)
        else:
            raise _HubError(404, None, "Not found")

    def _info(self, repo: _Repo, sha: str, query: dict[str, list[str]]) -> dict[str, Any]:
        files = repo.files(sha)
        commit = repo.meta["commits"][sha]
        siblings = []
        for name, path in files.items():
            sibling: dict[str, Any] = {"rfilename": name}
            if _flag(query, "blobs"):
                digest = self.server.state.digests(name, path)
                sibling |= {"size": digest.size, "blobId": digest.blob_id}
                if digest.sha256 is not None:
                    sibling["lfs"] = {"sha256": digest.sha256, "size": digest.size, "pointerSize": digest.pointer_size}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": _object_id(repo.repo_type, repo.repo_id),
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": repo.meta["commits"][repo.history(sha)[-1]]["date"],
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(path.stat().st_size for path in files.values()),
        }
        if repo.repo_type == "model" and "config.json" in files:
            config = json.loads(files["config.json"].read_text())
            info["library_name"] = "transformers"
            info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
        weights = [path for name, path in files.items() if name.endswith(".safetensors")]
        if repo.repo_type == "model" and weights and (summary := _safetensors_summary(weights)) is not None:
            info["safetensors"] = summary
        expand = query.get("expand", []) + query.get("expand[]", [])
        if expand:  # the Hub then returns only these properties (and the ids)
            info = {k: v for k, v in info.items() if k in ("_id", "id", *expand)}
        return info

    def _tree(self, repo: _Repo, sha: str, revision: str, path: str, recursive: bool) -> list[dict[str, Any]]:
        digests = {name: self.server.state.digests(name, p) for name, p in repo.files(sha).items()}
        blob_ids = {name: d.blob_id for name, d in digests.items()}
        directories = {name.rsplit("/", 1)[0] for name in digests if "/" in name}
        directories |= {d.rsplit("/", i)[0] for d in directories for i in range(d.count("/") + 1)}
        if path and path not in directories:
            raise _entry_not_found(path, revision, sha)
        prefix = f"{path}/" if path else ""

        def listed(name: str) -> bool:
            return name.startswith(prefix) and (recursive or "/" not in name[len(prefix) :])

        entries: list[dict[str, Any]] = [
            {"type": "directory", "oid": _git_tree_id(blob_ids, f"{d}/"), "size": 0, "path": d}
            for d in sorted(directories)
            if listed(d)
        ]
        for name, digest in digests.items():
            if listed(name):
                entry: dict[str, Any] = {"type": "file", "oid": digest.blob_id, "size": digest.size, "path": name}
                if digest.sha256 is not None:
                    # Named "oid" here, where the model info's siblings call it "sha256".
                    entry["lfs"] = {"oid": digest.sha256, "size": digest.size, "pointerSize": digest.pointer_size}
                entries.append(entry)
        return entries

    @staticmethod
    def _commit_json(repo: _Repo, sha: str) -> dict[str, Any]:
        commit = repo.meta["commits"][sha]
        return {
            "id": sha,
            "title": commit["title"],
            "message": "",
            "date": commit["date"],
            "authors": [{"user": commit["author"], "avatar": None}],
        }

    @staticmethod
    def _refs(repo: _Repo, include_prs: bool) -> dict[str, Any]:
        refs: dict[str, Any] = {
            "branches": [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                for name, sha in sorted(repo.meta["refs"].items())
            ],
            "converts": [],
            "tags": [],
        }
        if include_prs:
            refs["pullRequests"] = [
                {"name": f"pr/{p['num']}", "ref": f"refs/pr/{p['num']}", "targetCommit": p["head"]}
                for p in sorted(repo.meta["pull_requests"], key=lambda p: p["num"])
            ]
        return refs

    @staticmethod
    def _discussion_json(repo: _Repo, pull: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "num": pull["num"],
            "title": pull["title"],
            "status": pull["status"],
            "createdAt": pull["created_at"],
            "isPullRequest": True,
            "author": {"name": pull["author"], "type": "user"},
            "repo": {"name": repo.repo_id, "type": repo.repo_type},
            "numComments": 1,
            "pinned": False,
        }

    def _discussions(self, repo: _Repo, query: dict[str, list[str]]) -> dict[str, Any]:
        # Only pull requests exist in this layout, so type=discussion lists nothing. "closed" covers merged too.
        kind = query.get("type", ["all"])[-1]
        status = query.get("status", ["all"])[-1]
        author = query.get("author", [None])[-1]
        selected = [
            p
            for p in sorted(repo.meta["pull_requests"], key=lambda p: -p["num"])  # newest first, as on the Hub
            if kind in ("all", "pull_request")
            and (status == "all" or (status == "open") == (p["status"] in ("open", "draft")))
            and (author is None or p["author"] == author)
        ]
        start = int(query.get("p", ["0"])[-1]) * _DISCUSSIONS_PAGE
        return {
            "discussions": [self._discussion_json(repo, p) for p in selected[start : start + _DISCUSSIONS_PAGE]],
            "count": len(selected),
            "start": start,
            "numClosedDiscussions": sum(p["status"] in ("closed", "merged") for p in selected),
        }

    def _discussion_details(self, repo: _Repo, num: int) -> dict[str, Any]:
        pull = next((p for p in repo.meta["pull_requests"] if p["num"] == num), None)
        if pull is None:
            raise _HubError(404, None, "Discussion not found")
        # The pull request's own commits: the head's ancestors down to the first one on main.
        on_main = set(repo.history(repo.meta["refs"]["main"])) if "main" in repo.meta["refs"] else set()
        own = []
        for sha in repo.history(pull["head"]):
            if sha in on_main:
                break
            own.append(sha)
        base = repo.meta["commits"][own[-1]]["parent"] if own else pull["head"]
        author = {"name": pull["author"], "type": "user"}
        events: list[dict[str, Any]] = [
            {
                "id": _object_id(repo.repo_id, str(num), "comment"),
                "type": "comment",
                "createdAt": pull["created_at"],
                "author": author,
                "data": {
                    "edited": False,
                    "hidden": False,
                    "latest": {
                        "raw": pull["title"],
                        "html": f"<p>{pull['title']}</p>",
                        "updatedAt": pull["created_at"],
                    },
                    "numEdits": 0,
                    "editors": [pull["author"]],
                    "history": [],
                },
            }
        ]
        for sha in reversed(own):
            commit = repo.meta["commits"][sha]
            events.append(
                {
                    "id": _object_id(repo.repo_id, str(num), sha),
                    "type": "commit",
                    "createdAt": commit["date"],
                    "author": {"name": commit["author"], "type": "user"},
                    "data": {"subject": commit["title"], "oid": sha},
                }
            )
        if pull["status"] in ("closed", "merged"):
            events.append(
                {
                    "id": _object_id(repo.repo_id, str(num), pull["status"]),
                    "type": "status-change",
                    "createdAt": pull["created_at"],
                    "author": author,
                    "data": {"status": pull["status"]},
                }
            )
        return {
            **self._discussion_json(repo, pull),
            "events": events,
            "changes": {"base": "refs/heads/main"},
            "filesWithConflicts": [],
            "diff": self._diff(repo, base, pull["head"]),
        }

    def _diff(self, repo: _Repo, base: str | None, head: str) -> str:
        """A git diff of `base`..`head`, headers only: which files changed, not how."""
        digests = self.server.state.digests
        old = {n: digests(n, p).blob_id for n, p in repo.files(base).items()} if base else {}
        new = {n: digests(n, p).blob_id for n, p in repo.files(head).items()}
        lines = []
        for name in sorted(old.keys() | new.keys()):
            if old.get(name) == new.get(name):
                continue
            lines.append(f"diff --git a/{name} b/{name}")
            if name not in old:
                lines += ["new file mode 100644", f"index 0000000..{new[name][:7]}", "--- /dev/null", f"+++ b/{name}"]
            elif name not in new:
                lines += [
                    "deleted file mode 100644",
                    f"index {old[name][:7]}..0000000",
                    f"--- a/{name}",
                    "+++ /dev/null",
                ]
            else:
                lines += [f"index {old[name][:7]}..{new[name][:7]} 100644", f"--- a/{name}", f"+++ b/{name}"]
        return "".join(f"{line}\n" for line in lines)


class HubServer:
    """The Hub protocol over HTTP on 127.0.0.1, serving the layout under `root`.

    Bound on construction (``port=0``: a free port, see `url`); serves from a thread between `start` and `stop`,
    or as a context manager. `drop_once_after`: the first GET of each LFS file sends that many bytes of the body
    (at most all but one) and then ends the connection, so the client must resume. `request_log`: one line
    ``METHOD path`` appended per request.
    """

    def __init__(
        self,
        root: Path,
        port: int = 0,
        *,
        drop_once_after: int | None = None,
        request_log: Path | None = None,
    ) -> None:
        state = _State(
            HubLayout(Path(root)),
            drop_once_after,
            Path(request_log) if request_log is not None else None,
            _Digests(),
            threading.Lock(),
            set(),
        )
        self._httpd = _HTTPServer(("127.0.0.1", port), state)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- stand-ins -------------------------------------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def _progress(message: str) -> None:
    print(f"hub stand-ins: {message}", file=sys.stderr, flush=True)


def _tiny_files(config: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """The files of the config's tiny model, built into `out` (the builder's marker file left out)."""
    from pipelab import tiny

    spec = config["tiny"]
    labels = list(spec["labels"]) if spec.get("labels") else None
    options = dict(spec["options"]) if spec.get("options") else None
    tiny.build_tiny_model(spec["family"], out, labels=labels, options=options)
    return {p.name: p for p in sorted(out.iterdir()) if p.is_file() and p.name != tiny.MARKER_FILE}


def _pickled(files: dict[str, Path], work: Path) -> dict[str, Path]:
    """`files` with model.safetensors replaced by the same weights as pytorch_model.bin."""
    import torch
    from safetensors.torch import load_file

    work.mkdir(parents=True, exist_ok=True)
    # The full state dict of the safetensors file (tied weights as the builder saved them): that is what loads.
    torch.save(load_file(files["model.safetensors"]), work / "pytorch_model.bin")
    return {
        **{k: v for k, v in files.items() if k != "model.safetensors"},
        "pytorch_model.bin": work / "pytorch_model.bin",
    }


def _dataset_file(source: str, repo_root: Path) -> bytes:
    kind, _, name = source.partition(":")
    if kind == "skimage":
        from PIL import Image
        from skimage import data as skdata

        out = io.BytesIO()
        Image.fromarray(getattr(skdata, name)()).save(out, format="JPEG", quality=90)
        return out.getvalue()
    if kind == "resource":
        import soundfile

        # The resource is 16-bit PCM: read as int16 and written as 16-bit FLAC, the samples are unchanged.
        samples, rate = soundfile.read(repo_root / "src" / "pipelab" / "resources" / name, dtype="int16")
        out = io.BytesIO()
        soundfile.write(out, samples, rate, format="FLAC", subtype="PCM_16")
        return out.getvalue()
    raise ValueError(f"unknown stand-in source {source!r} (expected skimage:<name> or resource:<file>)")


def _dataset_pins(repo_root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(repo_type, repo_id) -> the `hub:` mapping of a task asset that reads a file from that repo."""
    pins: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((repo_root / "conf" / "task").glob("*.yaml")):
        for asset in (_yaml(path).get("assets") or {}).values():
            where = asset.get("hub") if isinstance(asset, dict) else None
            if isinstance(where, dict) and where.get("repo_id"):
                pins[(where.get("repo_type") or "dataset", where["repo_id"])] = where
    return pins


def build_stand_ins(root_dir: Path, repo_root: Path) -> None:
    """Lay out, under `root_dir`, a stand-in for every Hub repo the configs of `repo_root` pin.

    Every ``conf/model/*.yaml`` with a hub_id and a revision gets its tiny random-weight model as the commit of
    that revision, main pointing at it. The pins ``tests/hub_stand_ins.yaml`` lists as pickle-only get
    pytorch_model.bin there instead, and a conversion pull request by SFconvertbot adding model.safetensors. The
    dataset files it lists get a commit at the revision a task asset's ``hub:`` mapping pins (a deterministic
    one if none does, or it says main).
    """
    started = time.perf_counter()
    layout = HubLayout(Path(root_dir))
    evidence = _yaml(STAND_INS_FILE)
    pickle_only: dict[str, Any] = evidence.get("pickle_only_with_conversion_pr") or {}
    repinned: dict[str, Any] = evidence.get("pinned_to_conversion_pr_head") or {}
    with tempfile.TemporaryDirectory(prefix="hub-stand-ins-") as tmp:
        work = Path(tmp)
        for path in sorted((repo_root / "conf" / "model").glob("*.yaml")):
            config = _yaml(path)
            if path.name == "auto.yaml" or not (config.get("hub_id") and config.get("revision")):
                continue
            t0 = time.perf_counter()
            hub_id, revision = config["hub_id"], config["revision"]
            files = _tiny_files(config, work / config["name"])
            shape = "safetensors"
            if hub_id in repinned and repinned[hub_id]["parent"] != revision:
                # The config is pinned to the pull request's head; main stays at the pickle-only parent.
                parent = layout.add_commit(
                    hub_id, _pickled(files, work / f"{config['name']}.bin"), sha=repinned[hub_id]["parent"]
                )
                tree = {**layout.tree_of(hub_id, parent), "model.safetensors": files["model.safetensors"]}
                head = layout.add_commit(
                    hub_id, tree, parent=parent, ref=None, sha=revision, title=CONVERT_TITLE, author=CONVERT_BOT
                )
                layout.add_pull_request(hub_id, head, num=repinned[hub_id]["pr"])
                shape = f"pull request #{repinned[hub_id]['pr']} head, parent {parent[:7]} pickle-only"
            elif hub_id in pickle_only or hub_id in repinned:
                # Pickle-only at the pin. A re-pinned model whose config still names the old pin lands here too.
                num = (pickle_only.get(hub_id) or repinned.get(hub_id))["pr"]
                pin = layout.add_commit(hub_id, _pickled(files, work / f"{config['name']}.bin"), sha=revision)
                tree = {**layout.tree_of(hub_id, pin), "model.safetensors": files["model.safetensors"]}
                head = layout.add_commit(hub_id, tree, parent=pin, ref=None, title=CONVERT_TITLE, author=CONVERT_BOT)
                layout.add_pull_request(hub_id, head, num=num)
                shape = f"pickle-only, pull request #{num} at {head[:7]}"
            else:
                layout.add_commit(hub_id, files, sha=revision)
            _progress(f"{hub_id} @ {revision[:7]} ({shape}) {time.perf_counter() - t0:.1f} s")

    pins = _dataset_pins(repo_root)
    for repo_id, entry in (evidence.get("datasets") or {}).items():
        where = pins.get(("dataset", repo_id), {})
        if where.get("filename", entry["file"]) != entry["file"]:
            raise ValueError(
                f"a task asset reads {where['filename']} from {repo_id}, the stand-ins have {entry['file']}"
            )
        revision = where.get("revision")
        sha = revision if isinstance(revision, str) and _COMMIT_SHA.fullmatch(revision) else None
        sha = layout.add_commit(
            repo_id, {entry["file"]: _dataset_file(entry["source"], repo_root)}, repo_type="dataset", sha=sha
        )
        _progress(f"dataset {repo_id} @ {sha[:7]} ({entry['file']})")
    _progress(f"built in {time.perf_counter() - started:.1f} s")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to fd 1 (libraries' C code included) to stderr: stdout carries one line only."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _ensure_stand_ins(root: Path) -> None:
    if root.is_dir() and any(root.iterdir()):
        return
    # Built beside the target and moved into place, so an interrupted build never leaves a half-filled root.
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    with _stdout_to_stderr():
        build_stand_ins(staging, REPO_ROOT)
    if root.is_dir():
        root.rmdir()
    staging.rename(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="layout root; built with the stand-ins if empty")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--drop-once-after", type=int, default=None, metavar="N")
    parser.add_argument("--request-log", type=Path, default=None, metavar="FILE")
    args = parser.parse_args(argv)

    _ensure_stand_ins(args.root)
    # Signals are blocked before the server's threads start (they inherit the mask) and taken here with sigwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = HubServer(args.root, args.port, drop_once_after=args.drop_once_after, request_log=args.request_log)
    server.start()
    print(f"serving {server.url}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
