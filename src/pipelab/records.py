"""The JSON record of a run: the truth the reports are built from (MLflow is for browsing).

A record is written atomically (a temp file in the same folder, then ``os.replace``), so an interrupted run
leaves either the previous record or none, never half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RECORD_VERSION = 1
# Keys that do not change what a run computes: left out of the config hash, so resume still matches.
HASH_EXCLUDED = ("rerun", "tracking", "results_dir", "data_dir", "pipeline_cache")


def config_hash(config: dict[str, Any], model_revision: str) -> str:
    """Stable hash of a composed config (as a plain dict) plus the resolved model revision."""
    kept = {k: v for k, v in config.items() if k not in HASH_EXCLUDED}
    blob = json.dumps({"config": kept, "revision": model_revision}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def record_path(results_dir: Path, task: str, model_name: str, digest: str) -> Path:
    return results_dir / "runs" / task / f"{model_name}__{digest[:12]}.json"


def write_record(path: Path, record: dict[str, Any]) -> Path:
    """Write atomically: readers see the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2, ensure_ascii=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def iter_records(results_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every record under results/runs/, sorted by path (temp files are skipped)."""
    for path in sorted((results_dir / "runs").glob("*/*.json")):
        if not path.name.startswith("."):
            yield path, read_record(path)
