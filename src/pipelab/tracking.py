"""The only module that talks to MLflow.

Default store: ``sqlite:///<repo root>/mlflow.db`` with artifacts in ``<repo root>/mlruns``, whatever the working
directory; ``MLFLOW_TRACKING_URI`` (or ``tracking.uri``) points elsewhere, e.g. a team's ``mlflow server``.
The store and experiment are created once, before any job writes: two writers creating a fresh SQLite file at
once were measured to lose runs (alembic migration race). Writes retry while SQLite says it is locked.

A store that does not answer costs seconds, not minutes: :func:`check_store` asks it before any weights load, and
MLflow's own HTTP retries (7 retries with doubling backoff: ~260 s against a server that is down) are bounded for
every call this process makes. A run that cannot log keeps its record, marked "not logged"; :func:`log_record`
logs such a record later (stages/sync.py), idempotently: the run is found by its record id before one is created.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipelab.redaction import redact

T = TypeVar("T")

PARAM_VALUE_LIMIT = 6000
# MLflow 3 opens an experiment in the view its kind names; without the tag the UI guesses, and a pipelab
# experiment (no model training, text outputs) landed in the GenAI view. This is the model-training view.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# The context shown beside a dataset in the runs table: the inputs a run was evaluated on.
DATASET_CONTEXT = "eval"
RUN_NAME_LIMIT = 250  # MLflow's runs.name column: SQLite ignores the length, PostgreSQL refuses a longer name
CHECK_TIMEOUT_S = 4.0  # one health request; the whole check stays under 10 s even when both endpoints are tried
RECORD_ID_TAG = "pipelab.record_id"
SWEEP_ID_TAG = "pipelab.sweep_id"

# MLflow reads these at each request. Its defaults retry a refused connection for ~260 s and wait 120 s on a
# silent one; these bound a call to a few seconds (refused) or ~45 s (silent). setdefault: a user's value wins.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
for _name, _value in HTTP_BOUNDS.items():
    os.environ.setdefault(_name, _value)


class TrackingUnavailable(RuntimeError):
    """The tracking store does not answer; the message names it and says what to do."""


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


def display_uri(uri: str) -> str:
    """The URI without a password (it goes into records and messages)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _http_answers(uri: str, timeout: float) -> str | None:
    """None if the server answers its health endpoint (or, behind a proxy without it, the experiments API)."""
    base = uri.rstrip("/")
    headers = {}
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    problem = "no answer"
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        request = urllib.request.Request(base + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the user's own URI)
                if response.status < 300:
                    return None
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            # 401/403: it answers, and MLflow's own calls bring the credentials (MLFLOW_TRACKING_USERNAME...).
            if exc.code in (401, 403):
                return None
            problem = f"HTTP {exc.code} {exc.reason}"  # 404: try the other endpoint; 502/503: a proxy, no server
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
    return problem


def _sqlite_opens(uri: str, timeout: float) -> str | None:
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.parent.is_dir():
        return f"the folder {path.parent} does not exist"
    try:
        connection = sqlite3.connect(path, timeout=timeout)
        try:
            connection.execute("PRAGMA schema_version").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return f"sqlite: {exc}"
    return None


def _client_answers(uri: str, timeout: float) -> str | None:
    """Any other store (postgresql://, databricks...): one MLflow call, abandoned after `timeout`."""
    outcome: list[str | None] = []

    def call() -> None:
        try:
            client(uri).search_experiments(max_results=1)
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 (any failure means: it does not answer)
            outcome.append(f"{type(exc).__name__}: {str(exc)[:300]}")

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:.0f} s"


def check_store(uri: str, timeout: float = CHECK_TIMEOUT_S) -> str | None:
    """None if the tracking store answers, else what is wrong. Bounded: at most ~2 x timeout."""
    if uri.startswith(("http://", "https://")):
        return _http_answers(uri, timeout)
    if uri.startswith("sqlite:///"):
        return _sqlite_opens(uri, timeout)
    return _client_answers(uri, 2 * timeout)


def unavailable_message(uri: str, problem: str, seconds: float) -> str:
    return (
        f"the MLflow tracking store {display_uri(uri)} does not answer ({problem}; checked in {seconds:.1f} s), "
        "and nothing was run. Start it (README: 'A shared tracking server'), point tracking.uri= (or "
        "MLFLOW_TRACKING_URI) at one that answers, or add tracking.required=false to run anyway: the records are "
        "written as always, marked not logged, and `python stages/sync.py` logs them once the store is back"
    )


def require_store(uri: str, required: bool) -> bool:
    """Check the store before anything runs: True if it answers; False (with a warning) if not and not required.

    Raises TrackingUnavailable (its message names the URI and the fixes) if it does not answer and is required.
    """
    started = time.perf_counter()
    problem = check_store(uri)
    if problem is None:
        return True
    message = unavailable_message(uri, problem, time.perf_counter() - started)
    if required:
        raise TrackingUnavailable(message)
    print(
        f"pipelab: warning: the MLflow tracking store {display_uri(uri)} does not answer ({problem}); "
        "tracking.required=false: running anyway, records marked not logged (`python stages/sync.py` logs them)",
        flush=True,
    )
    return False


def with_retry(fn: Callable[[], T], attempts: int = 8, first_wait: float = 0.2, also: tuple[str, ...] = ()) -> T:
    """Retry while SQLite is locked or busy (parallel jobs writing to one store), or on an error containing one
    of `also` (lower case) that the caller knows to be a race another writer wins."""
    wait = first_wait
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MlflowException wraps sqlalchemy's OperationalError
            text = str(exc).lower()
            transient = any(s in text for s in ("database is locked", "database is busy", "unable to open", *also))
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(wait)
            wait = min(wait * 2, 5.0)
    raise AssertionError("unreachable")


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (first client call runs the migrations) and the experiment; return its id.

    The experiment gets its kind tag (EXPERIMENT_KIND) when created, and an existing experiment that lacks it
    (made by an older pipelab) gets it too; one that has it costs no write.
    """
    mlflow_client = client(uri)
    key, kind = EXPERIMENT_KIND

    def get_or_create() -> str:
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(key) != kind:
                mlflow_client.set_experiment_tag(found.experiment_id, key, kind)
            return found.experiment_id
        try:
            return mlflow_client.create_experiment(name, artifact_location=artifact_root(uri), tags={key: kind})
        except Exception:
            found = mlflow_client.get_experiment_by_name(name)  # another process created it meanwhile
            if found is None:
                raise
            return found.experiment_id

    return with_retry(get_or_create)


def dataset_digest(rows: list[dict[str, Any]]) -> str:
    """Eight hex digits of the rows' canonical JSON: the same inputs give the same digest, run after run."""
    canonical = json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]


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
    """One MLflow run: start, log params/metrics/tags/artifacts in batches, end with a status.

    ``tolerant``: a call that fails (the server died mid-run) is reported once and every later call of this
    logger is skipped, so the run finishes and keeps its record; ``logged`` then says False and ``error`` why.
    """

    def __init__(self, uri: str, experiment_id: str, *, tolerant: bool = False) -> None:
        self.uri = uri
        self.client = client(uri)
        self.experiment_id = experiment_id
        self.run_id: str | None = None
        self.tolerant = tolerant
        self.error: str | None = None

    @property
    def logged(self) -> bool:
        return self.run_id is not None and self.error is None

    def _guard(self, what: str, call: Callable[[], T]) -> T | None:
        if self.error is not None:
            return None
        try:
            return call()
        except Exception as exc:
            if not self.tolerant:
                raise
            self.error = f"{what}: {type(exc).__name__}: {str(exc)[:300]}"
            print(
                f"pipelab: warning: MLflow at {display_uri(self.uri)} failed ({self.error}); the run goes on and its "
                "record is marked not logged (`python stages/sync.py` logs it later)",
                flush=True,
            )
            return None

    def attach(self, run_id: str) -> None:
        """Log into an existing run (sync completing a run the server lost half-way)."""
        self.run_id = run_id

    def start(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        start_time: int | None = None,
    ) -> str | None:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        all_tags = {k: str(v) for k, v in redact(tags).items()}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        if len(run_name) > RUN_NAME_LIMIT:  # a sweep named after long overrides (they stay whole in its tags)
            run_name = run_name[: RUN_NAME_LIMIT - 3] + "..."

        def create() -> str:
            run = with_retry(
                lambda: self.client.create_run(
                    self.experiment_id, start_time=start_time, tags=all_tags, run_name=run_name
                )
            )
            return run.info.run_id

        self.run_id = self._guard("create_run", create)
        return self.run_id

    def log(
        self,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if self.run_id is None:
            return
        now = int(time.time() * 1000)
        params_list = [Param(k, str(v)) for k, v in redact(params or {}).items()]
        metric_list = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
        tag_list = [RunTag(k, str(v)) for k, v in redact(tags or {}).items()]
        # MLflow caps one batch at 100 params / 1000 metrics: send in slices.
        for i in range(0, max(len(params_list), 1), 100):
            chunk = params_list[i : i + 100]
            first = i == 0
            self._guard(
                "log_batch",
                lambda chunk=chunk, first=first: with_retry(
                    lambda: self.client.log_batch(
                        self.run_id,
                        metrics=metric_list if first else [],
                        params=chunk,
                        tags=tag_list if first else [],
                    )
                ),
            )

    def log_dataset(self, name: str, rows: list[dict[str, Any]], source: str) -> str:
        """Log `rows` (JSON-able dicts, one per input) as the run's dataset input; return its digest.

        MLflow keeps a dataset's name, digest, source and profile, not its rows (outputs.json has them beside
        each output): the runs table's Dataset column shows `name (digest)`, so runs on the same inputs show
        the same digest, and `source` says where the inputs are configured.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        digest = dataset_digest(rows)
        dataset = Dataset(
            name=name,
            digest=digest,
            source_type="local",
            source=json.dumps({"uri": source}),
            profile=json.dumps({"num_rows": len(rows)}),
        )
        inputs = [DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, DATASET_CONTEXT)])]
        if self.run_id is not None:
            # Parallel jobs of a sweep log the same dataset: MLflow's SQL store checks for it, then inserts, so the
            # slower of two jobs can hit the unique constraint; tried again, it finds the row and links it.
            log = lambda: self.client.log_inputs(self.run_id, datasets=inputs)  # noqa: E731
            self._guard("log_inputs", lambda: with_retry(log, also=("unique constraint failed",)))
        return digest

    def log_artifacts(self, files: dict[str, str | bytes]) -> None:
        """Name -> content, written to a temp folder and uploaded under the run's artifacts."""
        if self.run_id is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                target = Path(tmp) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    target.write_bytes(content)
                else:
                    target.write_text(content, encoding="utf-8")
            self._guard("log_artifacts", lambda: with_retry(lambda: self.client.log_artifacts(self.run_id, tmp)))

    def end(self, status: str, end_time: int | None = None) -> None:
        """FINISHED | FAILED | KILLED."""
        if self.run_id is not None:
            self._guard(
                "set_terminated",
                lambda: with_retry(lambda: self.client.set_terminated(self.run_id, status=status, end_time=end_time)),
            )


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


def _find_by_tag(uri: str, experiment_id: str, tag: str, value: str) -> Any | None:
    runs = with_retry(
        lambda: client(uri).search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=2)
    )
    return runs[0] if runs else None


TERMINAL = ("FINISHED", "FAILED", "KILLED")


def log_record_run(
    uri: str,
    experiment_id: str,
    *,
    record_id: str,
    name: str,
    tags: dict[str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    artifacts: dict[str, str | bytes],
    status: str,
    start_time: int | None,
    end_time: int | None,
    parent_run_id: str | None,
) -> tuple[str, bool]:
    """Log one run from a record, idempotently: (run id, whether anything was logged).

    The run is looked up by its record id first: a run already ended is left as it is; a run the server lost
    half-way (created, then the server died) is completed with the params and metrics it lacks, so nothing is
    logged twice; otherwise the run is created.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    existing = _find_by_tag(uri, experiment_id, RECORD_ID_TAG, record_id)
    if existing is not None and existing.info.status in TERMINAL:
        return existing.info.run_id, False
    logger = RunLogger(uri, experiment_id)
    have_params: dict[str, str] = {}
    have_metrics: dict[str, float] = {}
    extra_tags = {}
    if existing is None:
        logger.start(name, tags | {RECORD_ID_TAG: record_id}, parent_run_id=parent_run_id, start_time=start_time)
    else:
        logger.attach(existing.info.run_id)
        have_params, have_metrics = existing.data.params, existing.data.metrics
        extra_tags = dict(tags)
        if parent_run_id and existing.data.tags.get(MLFLOW_PARENT_RUN_ID) != parent_run_id:
            extra_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    logger.log(
        params={k: v for k, v in params.items() if k not in have_params},
        metrics={k: v for k, v in metrics.items() if k not in have_metrics},
        tags=extra_tags,
    )
    logger.log_artifacts(artifacts)  # same names overwrite: idempotent
    logger.end(status, end_time=end_time)
    assert logger.run_id is not None
    return logger.run_id, True


def sweep_run(uri: str, experiment_id: str, sweep: dict[str, Any]) -> tuple[str, str, bool]:
    """The parent run of a sweep (run id, status, created now): the one the sweep opened, else the one found by
    the sweep's id (a previous sync created it), else a new one."""
    mlflow_client = client(uri)
    if sweep.get("parent_run_id"):
        try:
            run = with_retry(lambda: mlflow_client.get_run(sweep["parent_run_id"]))
            if run.info.lifecycle_stage == "active":
                return run.info.run_id, run.info.status, False
        except Exception:  # noqa: BLE001 (not in this store: another store, or created where the server lost it)
            pass
    found = _find_by_tag(uri, experiment_id, SWEEP_ID_TAG, sweep["id"])
    if found is not None:
        return found.info.run_id, found.info.status, False
    logger = RunLogger(uri, experiment_id)
    run_id = logger.start(sweep["name"], sweep_tags(sweep) | {"pipelab.synced": "true"})
    assert run_id is not None
    return run_id, "RUNNING", True


def sweep_tags(sweep: dict[str, Any]) -> dict[str, str]:
    return {
        "pipelab.sweep": "true",
        "sweep_dir": str(sweep.get("dir", "")),
        "overrides": str(sweep.get("overrides", "")),
        SWEEP_ID_TAG: sweep["id"],
    }


def sweep_children_statuses(uri: str, experiment_id: str, parent_run_id: str) -> list[str]:
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    runs = with_retry(
        lambda: client(uri).search_runs(
            [experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'", max_results=5000
        )
    )
    return [run.info.status for run in runs]


def _param_value(text: str) -> Any:
    """A param back to the type the record had (params are strings): numbers, booleans, null, JSON lists."""
    import yaml

    if text == "None":  # flatten wrote a null as str(None)
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _unflatten(flat: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, text in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = _param_value(text)
    return tree


def sweep_records(uri: str, parent_run_id: str) -> list[dict[str, Any]]:
    """The child runs of a sweep's parent run as record-shaped dicts, for a comparison (pipelab_tools.compare).

    From what each child logged: its tags (task, model, ablation), its params (the flattened config), its status,
    and its `outputs.json` (cases) and `latency_samples_ms.json` artifacts. Raises ValueError with the reason
    when the run does not exist or has no children.
    """
    # one bar per downloaded artifact would bury the comparison (read at each download)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow_client = client(uri)
    try:
        parent = with_retry(lambda: mlflow_client.get_run(parent_run_id))
    except Exception as exc:
        raise ValueError(f"no MLflow run {parent_run_id} in {uri}: {exc}") from None
    children = with_retry(
        lambda: mlflow_client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
        )
    )
    if not children:
        raise ValueError(f"MLflow run {parent_run_id} has no child runs: give the id of a sweep's parent run")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for child in children:
            run_id = child.info.run_id

            def artifact(name: str, run_id: str = run_id) -> Any:
                try:
                    path = mlflow_client.download_artifacts(run_id, name, tmp)
                except Exception:  # a FAILED run has no outputs
                    return []
                return json.loads(Path(path).read_text(encoding="utf-8"))

            tags, params = child.data.tags, child.data.params
            config = _unflatten(params)
            for counted in ("cases", "expectations"):  # params hold their count (run_record.params_view)
                config.get("task", {}).pop(counted, None)
            axes = config.get("ablation", {}).get("axes") or []
            point = {axis: _param_value(params[axis]) for axis in axes if axis in params}
            batch = config.get("bench", {}).get("batch_size", 1)
            records.append(
                {
                    "task": tags.get("task", "?"),
                    "model": {"name": tags.get("model", "?"), "weights": tags.get("weights")},
                    "status": child.info.status,
                    "ablation": {"name": tags.get("ablation", "none"), "point": point},
                    "config": config,
                    "cases": artifact("outputs.json"),
                    "benchmark": {"samples_ms": artifact("latency_samples_ms.json"), "settings": {"batch_size": batch}},
                    "started_at": str(child.info.start_time),
                    "mlflow_run_id": run_id,
                }
            )
    return records
