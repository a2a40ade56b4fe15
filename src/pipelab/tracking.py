"""The only module that talks to MLflow.

Default store: ``sqlite:///<repo root>/mlflow.db`` with artifacts in ``<repo root>/mlruns``, whatever the working
directory; ``MLFLOW_TRACKING_URI`` (or ``tracking.uri``) points elsewhere, e.g. a team's ``mlflow server``.
The store and experiment are created once, before any job writes: two writers creating a fresh SQLite file at
once were measured to lose runs (alembic migration race). Writes retry while SQLite says it is locked.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipelab.redaction import redact

T = TypeVar("T")

PARAM_VALUE_LIMIT = 6000


def default_uri(root: Path) -> str:
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def tracking_uri(configured: str | None, root: Path) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else the repo's SQLite file."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(root)


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live in `mlruns/` next to the database file (None: the server decides)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / "mlruns").resolve().as_uri()


def with_retry(fn: Callable[[], T], attempts: int = 8, first_wait: float = 0.2) -> T:
    """Retry while SQLite is locked or busy (parallel jobs writing to one store)."""
    wait = first_wait
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MlflowException wraps sqlalchemy's OperationalError
            text = str(exc).lower()
            transient = "database is locked" in text or "database is busy" in text or "unable to open" in text
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(wait)
            wait = min(wait * 2, 5.0)
    raise AssertionError("unreachable")


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (first client call runs the migrations) and the experiment; return its id."""
    mlflow_client = client(uri)

    def get_or_create() -> str:
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return mlflow_client.create_experiment(name, artifact_location=artifact_root(uri))
        except Exception:
            found = mlflow_client.get_experiment_by_name(name)  # another process created it meanwhile
            if found is None:
                raise
            return found.experiment_id

    return with_retry(get_or_create)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys -> string values (lists as JSON), cut to MLflow's param limit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)
            flat[name] = text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."
    return flat


class RunLogger:
    """One MLflow run: start, log params/metrics/tags/artifacts in batches, end with a status."""

    def __init__(self, uri: str, experiment_id: str) -> None:
        self.uri = uri
        self.client = client(uri)
        self.experiment_id = experiment_id
        self.run_id: str | None = None

    def start(self, run_name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        all_tags = {k: str(v) for k, v in redact(tags).items()}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = with_retry(lambda: self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name))
        self.run_id = run.info.run_id
        return self.run_id

    def log(
        self,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        params_list = [Param(k, str(v)) for k, v in redact(params or {}).items()]
        metric_list = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
        tag_list = [RunTag(k, str(v)) for k, v in redact(tags or {}).items()]
        # MLflow caps one batch at 100 params / 1000 metrics: send in slices.
        for i in range(0, max(len(params_list), 1), 100):
            chunk = params_list[i : i + 100]
            first = i == 0
            with_retry(
                lambda chunk=chunk, first=first: self.client.log_batch(
                    self.run_id,
                    metrics=metric_list if first else [],
                    params=chunk,
                    tags=tag_list if first else [],
                )
            )

    def log_artifacts(self, files: dict[str, str | bytes]) -> None:
        """Name -> content, written to a temp folder and uploaded under the run's artifacts."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                target = Path(tmp) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    target.write_bytes(content)
                else:
                    target.write_text(content, encoding="utf-8")
            with_retry(lambda: self.client.log_artifacts(self.run_id, tmp))

    def end(self, status: str) -> None:
        """FINISHED | FAILED | KILLED."""
        if self.run_id is not None:
            with_retry(lambda: self.client.set_terminated(self.run_id, status=status))


def find_finished_run(uri: str, experiment_id: str, digest: str) -> str | None:
    """The id of a FINISHED run with this config hash, if any (for resume)."""
    runs = with_retry(
        lambda: client(uri).search_runs(
            [experiment_id],
            filter_string=f"tags.`pipelab.config_hash` = '{digest}' and attributes.status = 'FINISHED'",
            max_results=1,
        )
    )
    return runs[0].info.run_id if runs else None
