"""What `dvc repro` runs: params.yaml -> the Hydra sweeps of each task, and the weights and inputs they need.

params.yaml holds only the DAG's own choices (the profile, the tasks and their ablations, the latency protocol
per profile); everything else about a run stays in conf/. This module turns those choices into the override
lists of `python stages/run.py -m ...`, and composes conf/ with Hydra's compose API to find which models and
input files the fetch stage must provide, so that list is never written twice. It runs no model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from pipelab.composition import shared_compositions
from pipelab.config import BenchSchema, ConfigError, group_choices
from pipelab.forked import fork_map

# The latency protocol params.yaml sets per profile: every bench setting but batch_size, which ablations sweep.
BENCH_KEYS = tuple(f.name for f in fields(BenchSchema) if f.name != "batch_size")
COURSE = "course"  # the label of a task's first sweep: its cases with the course default settings


@dataclass(frozen=True)
class DagParams:
    """params.yaml, checked: unknown tasks, ablations or profiles fail here, before any stage runs."""

    profile: str
    bench: dict[str, Any]  # the latency protocol of the selected profile
    tasks: dict[str, tuple[str, ...]]  # task -> its ablations, in params.yaml order
    threads: int | None = None  # OMP_NUM_THREADS of each run; None: torch's default
    left_out: tuple[str, ...] = ()  # conf/task files params.yaml does not name: dvc repro does not run them


@dataclass(frozen=True)
class Sweep:
    """One `stages/run.py -m` invocation: a task's course sweep or one of its ablation sweeps."""

    task: str
    ablation: str  # "none" for the course sweep
    overrides: tuple[str, ...]

    @property
    def label(self) -> str:
        return COURSE if self.ablation == "none" else self.ablation

    def sweep_dir(self, base: Path) -> Path:
        """Hydra's multirun folder for this sweep (one per task and label, reused run after run)."""
        return base / self.task / self.label


def load_params(path: Path, root: Path, *, profile: str | None = None) -> DagParams:
    """Read params.yaml (with another profile than its own, if given) and check every name in it against conf/."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    profile = profile or raw.get("profile")
    profiles = group_choices(root, "profile")
    if profile not in profiles:
        raise ConfigError(f"{path}: profile '{profile}' is not one of {', '.join(profiles)}")
    bench = (raw.get("bench") or {}).get(profile)
    if not isinstance(bench, dict) or sorted(bench) != sorted(BENCH_KEYS):
        raise ConfigError(f"{path}: bench.{profile} must set exactly {', '.join(BENCH_KEYS)}; got {bench!r}")
    ablations = set(group_choices(root, "ablation"))
    known = group_choices(root, "task")
    tasks: dict[str, tuple[str, ...]] = {}
    for task, entry in (raw.get("tasks") or {}).items():
        if task not in known:
            raise ConfigError(
                f"{path}: unknown task '{task}' (no conf/task/{task}.yaml). Valid tasks: {', '.join(known)}"
            )
        names = tuple((entry or {}).get("ablations") or ())
        unknown = [name for name in names if name not in ablations or name == "none"]
        if unknown:
            raise ConfigError(
                f"{path}: tasks.{task}.ablations names {', '.join(unknown)}, which are not ablation files. "
                f"Valid: {', '.join(sorted(ablations - {'none'}))} (the course sweep always runs)"
            )
        tasks[task] = names
    if not tasks:
        raise ConfigError(f"{path}: `tasks` lists no task")
    threads = (raw.get("threads") or {}).get(profile)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"{path}: threads.{profile} must be a whole number >= 1 or null, got {threads!r}")
    left_out = tuple(task for task in known if task not in tasks)
    return DagParams(profile=profile, bench=dict(bench), tasks=tasks, threads=threads, left_out=left_out)


def run_environment(params: DagParams, base: dict[str, str]) -> dict[str, str]:
    """The environment of each `stages/run.py` process: the caller's, with the profile's thread count."""
    env = dict(base)
    if params.threads is not None:
        env["OMP_NUM_THREADS"] = str(params.threads)  # read by torch at import: fixes its intra-op pool
    return env


def task_sweeps(params: DagParams, task: str) -> list[Sweep]:
    """The course sweep of a task, then one sweep per ablation, as Hydra overrides."""
    if task not in params.tasks:
        raise ConfigError(f"task '{task}' is not in params.yaml `tasks` ({', '.join(params.tasks)})")
    common = (
        f"task={task}",
        f"profile={params.profile}",
        # The DVC outputs are results/runs/<task> and data/: pinned here whatever a user's conf says.
        "results_dir=results",
        "data_dir=data",
        *(f"bench.{key}={params.bench[key]}" for key in BENCH_KEYS),
    )
    sweeps = [Sweep(task, "none", common)]
    sweeps += [Sweep(task, name, (*common, f"ablation={name}")) for name in params.tasks[task]]
    return sweeps


def check_sweep(sweep_dir: Path, records_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(the sweep's job rows, problems that must fail the stage) after `stages/run.py -m` returned.

    A FAILED run is data: its record says why and the reports show it. A job that left no record (a config,
    input or weights error caught before the run started, or a killed job), a record outside the task's
    folder, or a sweep that launched no job at all is a problem: DVC must not record that stage as done.
    """
    from pipelab.jobs import read_jobs

    launched = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()] if sweep_dir.is_dir() else []
    rows = read_jobs(sweep_dir) if sweep_dir.is_dir() else []
    recorded = [row for row in rows if row.get("record")]
    problems = []
    if not launched:
        problems.append("launched no job (Hydra stopped before the sweep; its error is above)")
    elif len(recorded) < len(launched):
        problems.append(f"{len(launched) - len(recorded)} of {len(launched)} jobs left no record (errors above)")
    for row in recorded:
        if not Path(row["record"]).resolve().is_relative_to(records_dir.resolve()):
            problems.append(f"job {row.get('name')} wrote its record outside {records_dir}: {row['record']}")
    return rows, problems


def compose(root: Path, overrides: list[str] | tuple[str, ...], *, with_hydra: bool = False) -> DictConfig:
    """conf/config.yaml composed with overrides, exactly as `stages/run.py` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pipelab.config import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)


def sweep_axes(cfg: DictConfig) -> list[list[str]]:
    """A composed config's `hydra.sweeper.params` as one list of `key=value` overrides per axis.

    The ablation files carry their own sweep values; Hydra's override parser expands them the way its basic
    sweeper does, so the product of the axes is exactly the list of jobs the sweep launches.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    node = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(node, resolve=False) if node is not None else {}
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    return [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [f"{o.get_key_element()}={o.get_value_element_as_str()}"]
        for o in parsed
    ]


def sweep_points(root: Path, sweep: Sweep) -> list[tuple[str, ...]]:
    """The full override list of every job of a sweep."""
    axes = sweep_axes(compose(root, sweep.overrides, with_hydra=True))
    return [(*sweep.overrides, *point) for point in itertools.product(*axes)]


@dataclass(frozen=True)
class FetchPlan:
    """What the fetch stage provides: model config names, and the input assets of each task."""

    profile: str
    models: tuple[str, ...]
    assets: dict[str, dict[str, Any]]  # "<task>/<asset name>" -> the asset's spec from conf/task


# Overrides that cannot change which weights or input files a job uses (conf/decoding only sets
# task.generation; a quantized or ONNX model is made at run time from the same weights): a sweep point made of
# these and `model=` choices needs no composing of its own, which costs ~0.2-0.5 s a config with the typed
# schema. A test composes every point of the grid and compares.
_INERT_PREFIXES = (
    "temperature=",
    "seed=",
    "bench.",
    "task.call.",
    "task.generation.",
    "task.label_count=",
    "decoding=",
    "quantization=",
    "runtime=",
)


def fetch_plan(root: Path, params: DagParams, device: str) -> FetchPlan:
    """Every model and asset any job of the DAG uses, found by composing the jobs' configs.

    `device` decides what model=auto means (the ASR default is a larger Whisper on CUDA), as in the runner.
    The sweeps are composed by one forked process per core where that is safe (`fork_map`): a composition is
    ~0.25 s of CPU, and the tiny grid has ~30.
    """
    with shared_compositions():  # the workers (forked) share within their own sweeps
        found = fork_map(
            _sweep_needs, [(root, sweep, device) for task in params.tasks for sweep in task_sweeps(params, task)]
        )
    models = set().union(*(needed for needed, _ in found))
    assets = {key: spec for _, given in found for key, spec in given.items()}
    return FetchPlan(params.profile, tuple(sorted(models)), dict(sorted(assets.items())))


def _sweep_needs(job: tuple[Path, Sweep, str]) -> tuple[set[str], dict[str, dict[str, Any]]]:
    """The model names and "<task>/<asset>" specs of every job of one sweep."""
    from pipelab.models import resolve_model

    root, sweep, device = job
    models: set[str] = set()
    assets: dict[str, dict[str, Any]] = {}

    def collect(cfg: DictConfig) -> None:
        resolve_model(cfg, root, device)
        models.add(str(cfg.model.name))
        for name, spec in (OmegaConf.to_container(cfg.task.assets, resolve=True) or {}).items():
            assets[f"{cfg.task.name}/{name}"] = spec

    base = compose(root, sweep.overrides, with_hydra=True)
    axes = sweep_axes(base)
    with open_dict(base):
        del base["hydra"]
    collect(base)
    for point in itertools.product(*axes):
        chosen = [o.split("=", 1)[1] for o in point if o.startswith("model=")]
        if "auto" not in chosen and all(o.startswith((*_INERT_PREFIXES, "model=")) for o in point):
            models.update(chosen)  # a model group choice is the name of its conf/model file
        else:
            collect(compose(root, (*sweep.overrides, *point)))
    return models, assets
