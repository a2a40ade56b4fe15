"""Typed schema of a composed pipelab config, and the checks that run before any model loads.

The dataclasses are registered in Hydra's ConfigStore as ``pipelab_schema``; ``conf/config.yaml`` names it
first in its defaults list, so a misspelt key or a value of the wrong type fails at compose time with Hydra's
own message, before anything is loaded. Each dataclass checks its own values in ``__post_init__`` (ranges, a
bench case that exists), run by ``OmegaConf.to_object``; ``validate_config`` does that, then the checks that read
other files (a task module for the task, a model that can do it). Both raise ``ConfigError`` with the valid choices.
Hydra itself is imported only by ``register_schema``: the library imports without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

MAX_BENCH_ITERATIONS = 10_000  # bench.BenchSettings.max_iterations: the timed loop's safety cap
RUNTIMES = ("torch", "onnxruntime")  # what runs the model inside pipeline(): PyTorch, or an ONNX Runtime session


class ConfigError(ValueError):
    """A config value is wrong; the message says which, and what would be valid."""


@dataclass
class CaseSchema:
    id: str = MISSING
    kind: str = "custom"  # course | custom | edge | unanswerable | user
    input: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1  # the case's text (QA: its context) repeated this many times: inputs beyond the window
    language: str | None = None  # ISO 639-1 code of the input's language (null: English, the course's)
    gold: Any = None  # the right output as data, scored by the task (QA: answer strings; NER: entities)

    def __post_init__(self) -> None:
        _check_positive(self.repeat, f"case {self.id}: repeat", integer=True)


@dataclass
class GenerationSchema:
    do_sample: bool = True
    max_new_tokens: int = 30
    num_return_sequences: int = 1
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        _check_positive(self.top_k, "task.generation.top_k", integer=True)
        _check_positive(self.top_p, "task.generation.top_p")
        if self.top_p is not None and self.top_p > 1:
            raise ConfigError(f"task.generation.top_p must be in (0, 1], got {self.top_p}")
        _check_positive(self.max_new_tokens, "task.generation.max_new_tokens", integer=True)
        _check_positive(self.num_return_sequences, "task.generation.num_return_sequences", integer=True)
        if self.num_return_sequences > 1 and not self.do_sample:
            raise ConfigError(
                "task.generation.num_return_sequences > 1 needs sampling: greedy decoding returns one sequence. "
                "Set task.generation.do_sample=true or num_return_sequences=1"
            )


@dataclass
class HubFileSchema:
    repo_id: str = MISSING
    filename: str = MISSING
    repo_type: str = "dataset"
    revision: str = "main"  # a commit sha pins it; a branch is pinned by the first fetch (data/hub/pipelab/)


@dataclass
class AssetSchema:
    hub: HubFileSchema | None = None  # profile=hub: this file of a Hub repo, at its revision
    sha256: str | None = None  # null: the Hub's LFS sha256, else the first download's (recorded, then verified)
    offline: str | None = None  # skimage:<name> | resource:<file> (profile=tiny, and assets with no hub file)
    reference: str | None = None


@dataclass
class LongAudioSchema:
    """How speech recognition takes a clip longer than the model's window (Whisper: 30 s).

    chunked: the pipeline cuts the clip into `chunk_length_s` windows overlapping by `stride_length_s` on each
    side and joins their texts. long_form: Whisper's own sequential long-form generation over the whole clip
    (`return_timestamps=True`, which it needs to move from one window to the next).
    """

    mode: str = "chunked"
    chunk_length_s: float = 30.0
    stride_length_s: float | None = None  # null: the pipeline's default, chunk_length_s / 6
    # A 30 s window of speech holds ~75 words (~100 tokens): more than the short clips' max_new_tokens cap.
    max_new_tokens: int | None = 160

    def __post_init__(self) -> None:
        _check_positive(self.max_new_tokens, "task.long_audio.max_new_tokens", integer=True)
        if self.mode not in LONG_AUDIO_MODES:
            raise ConfigError(f"task.long_audio.mode must be one of {', '.join(LONG_AUDIO_MODES)}, got {self.mode!r}")
        _check_positive(self.chunk_length_s, "task.long_audio.chunk_length_s")
        _check_positive(self.stride_length_s, "task.long_audio.stride_length_s")
        if self.stride_length_s is not None and 2 * self.stride_length_s >= self.chunk_length_s:
            raise ConfigError(
                f"task.long_audio.stride_length_s ({self.stride_length_s}) must be less than half of "
                f"chunk_length_s ({self.chunk_length_s}): the strides are cut from both sides of each chunk"
            )


LONG_AUDIO_MODES = ("chunked", "long_form")


@dataclass
class TaskSchema:
    name: str = MISSING
    pipeline: str = MISSING
    default_model: str = MISSING
    default_model_gpu: str | None = None
    call: dict[str, Any] = field(default_factory=dict)
    generation: GenerationSchema | None = None
    bench_case: str = MISSING
    label_count: int | None = None
    label_pool: list[str] = field(default_factory=list)
    cases: list[CaseSchema] = field(default_factory=list)
    assets: dict[str, AssetSchema] = field(default_factory=dict)
    expectations: list[Any] = field(default_factory=list)
    prompt: dict[str, Any] = field(default_factory=dict)  # chat templates + generation: tasks/prompted.py
    long_audio: LongAudioSchema | None = None  # speech recognition: clips beyond the model's window

    def __post_init__(self) -> None:
        _check_positive(self.call.get("top_k"), "task.call.top_k", integer=True)
        _check_positive(self.label_count, "task.label_count", integer=True)
        case_ids = [c.id for c in self.cases]
        if case_ids and self.bench_case not in case_ids:
            raise ConfigError(f"task.bench_case '{self.bench_case}' is not a case id. Case ids: {', '.join(case_ids)}")


@dataclass
class TinySchema:
    family: str = MISSING
    labels: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSchema:
    name: str = MISSING
    hub_id: str | None = None
    revision: str | None = None
    # A local checkpoint directory, or `package:<module>/<dir>` for files a Python package ships: loaded on every
    # profile as pretrained weights, identified by the sha256 of their content (model.path=/my/checkpoint).
    path: str | None = None
    tasks: list[str] = field(default_factory=list)
    prompted_tasks: list[str] = field(default_factory=list)  # done by prompting through text-generation
    architecture: str | None = None
    params_millions: float | None = None
    trust_remote_code: bool = False
    languages: dict[str, str] | None = None
    tiny: TinySchema | None = None


@dataclass
class DeviceSchema:
    name: str = "auto"
    dtype: str = "auto"


@dataclass
class ProfileSchema:
    name: str = "hub"
    weights: str = "pretrained"
    offline: bool = False
    allow_pickle: bool = False  # true: a pin with only pytorch_model.bin loads it (torch.load weights_only=True)
    task_call: dict[str, Any] = field(default_factory=dict)  # task name -> call kwargs merged over task.call

    def __post_init__(self) -> None:
        if self.name not in ("hub", "tiny"):
            raise ConfigError(f"unknown profile '{self.name}'. Valid profiles: hub, tiny")


@dataclass
class AblationSchema:
    name: str = "none"
    description: str = ""
    axes: list[str] = field(default_factory=list)  # config keys whose values make the ablation point
    tasks: list[str] = field(default_factory=list)  # the tasks it applies to (empty: any task)


@dataclass
class TrackingSchema:
    enabled: bool = True
    uri: str | None = None
    experiment: str = "pipelab"
    # true: a store that does not answer stops the run before any weights load; false: run anyway, records
    # marked not logged, and `python stages/sync.py` logs them later.
    required: bool = True


@dataclass
class BenchSchema:
    warmup: int = 10
    min_iterations: int = 10
    min_duration_s: float = 10.0
    batch_size: int = 1  # items per timed call (ablation=batch_size sweeps it)
    stage_calls: int = 3  # extra calls after the timed loop that time preprocess / forward / postprocess (0: off)

    def __post_init__(self) -> None:
        _check_positive(self.batch_size, "bench.batch_size", integer=True)
        _check_positive(self.stage_calls, "bench.stage_calls", strictly=False, integer=True)
        _check_positive(self.min_iterations, "bench.min_iterations", integer=True)
        if self.min_iterations > MAX_BENCH_ITERATIONS:
            raise ConfigError(f"bench.min_iterations must be <= {MAX_BENCH_ITERATIONS}, got {self.min_iterations}")
        _check_positive(self.warmup, "bench.warmup", strictly=False, integer=True)
        _check_positive(self.min_duration_s, "bench.min_duration_s", strictly=False)


@dataclass
class PipelineCacheSchema:
    """How many loaded pipelines one process keeps (a DVC stage runs all its task's sweeps in one process)."""

    max_models: int = 3  # beyond this, the least recently used pipeline is dropped before the next load
    max_memory_mb: float | None = None  # and beyond this many MiB of weights in memory (None: no budget)

    def __post_init__(self) -> None:
        _check_positive(self.max_models, "pipeline_cache.max_models", integer=True)
        if self.max_memory_mb is not None:
            _check_positive(self.max_memory_mb, "pipeline_cache.max_memory_mb")


@dataclass
class PipelabConfig:
    task: TaskSchema = field(default_factory=TaskSchema)
    model: ModelSchema = field(default_factory=ModelSchema)
    device: DeviceSchema = field(default_factory=DeviceSchema)
    profile: ProfileSchema = field(default_factory=ProfileSchema)
    ablation: AblationSchema = field(default_factory=AblationSchema)
    tracking: TrackingSchema = field(default_factory=TrackingSchema)
    bench: BenchSchema = field(default_factory=BenchSchema)
    pipeline_cache: PipelineCacheSchema = field(default_factory=PipelineCacheSchema)
    seed: int = 42
    temperature: float = 1.0
    quantization: str = "none"  # pipelab.quantization.METHODS: none | int8_dynamic | int8_weight_only | bnb_int8 | ...
    runtime: str = "torch"  # torch | onnxruntime (pipelab.onnx_runtime)
    compare_to_reference: bool = False  # also record agreement, latency and size against the none/torch variant
    rerun: bool = False
    input: str | None = None  # an extra user case: a text, or an image/audio file path for those tasks
    results_dir: str = "results"
    data_dir: str = "data"

    def __post_init__(self) -> None:
        _check_positive(self.temperature, "temperature")
        from pipelab.quantization import METHODS

        if self.quantization not in METHODS:
            raise ConfigError(f"unknown quantization '{self.quantization}'. Valid: {', '.join(METHODS)}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime '{self.runtime}'. Valid: {', '.join(RUNTIMES)}")
        if self.ablation.tasks and self.task.name not in self.ablation.tasks:
            raise ConfigError(
                f"ablation '{self.ablation.name}' applies to {', '.join(self.ablation.tasks)}, "
                f"not to task '{self.task.name}'"
            )


def register_schema() -> None:
    """Register the schema under the name conf/config.yaml's defaults list uses (idempotent), and the schemas
    of the launcher plugins that conf/hydra/launcher/ extends (pipelab.launchers).

    Called by the entry points that compose (stages/run.py, pipelab.dag, benchmarks/overhead.py, tests).
    """
    from hydra.core.config_store import ConfigStore

    from pipelab.launchers import register_launcher_schemas

    store = ConfigStore.instance()
    # Storing converts the dataclasses to a config (~30 ms); Hydra hands out deep copies, so once per process is
    # enough (fetch composes ~30 configs).
    if "pipelab_schema.yaml" not in store.repo:
        store.store(name="pipelab_schema", node=PipelabConfig)
    register_launcher_schemas(conf_dir(Path(__file__).resolve().parents[2]))  # src/pipelab/ -> the repo root


def conf_dir(root: Path) -> Path:
    return root / "conf"


def group_choices(root: Path, group: str) -> list[str]:
    """The names a config group offers (the YAML files of conf/<group>/)."""
    return sorted(p.stem for p in (conf_dir(root) / group).glob("*.yaml"))


def load_model_config(root: Path, name: str) -> DictConfig:
    """Load conf/model/<name>.yaml through the schema (used to resolve model=auto)."""
    path = conf_dir(root) / "model" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"model '{name}' has no config file {path}. Valid models: {', '.join(group_choices(root, 'model'))}"
        )
    return OmegaConf.merge(OmegaConf.structured(ModelSchema), OmegaConf.load(path))


def models_for_task(root: Path, task: str) -> list[str]:
    """Every model config whose `tasks` list names this task."""
    names = []
    for name in group_choices(root, "model"):
        if name == "auto":
            continue
        raw = OmegaConf.load(conf_dir(root) / "model" / f"{name}.yaml")
        if task in (raw.get("tasks") or []) or task in (raw.get("prompted_tasks") or []):
            names.append(name)
    return names


def _check_positive(value: Any, what: str, *, strictly: bool = True, integer: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(float(value)):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    if (strictly and value <= 0) or (not strictly and value < 0):
        bound = "> 0" if strictly else ">= 0"
        raise ConfigError(f"{what} must be {bound}, got {value!r}")


def validate_config(cfg: DictConfig, root: Path) -> None:
    """The schema's own checks (each dataclass's ``__post_init__``), then those that read other files.

    Runs before any weights are resolved or loaded, so a bad sweep point costs milliseconds.
    """
    from pipelab.tasks import get_task  # the task registry imports this module

    OmegaConf.to_object(cfg)
    task = cfg.task.name
    get_task(task)  # a conf/task YAML whose name no module in src/pipelab/tasks declares
    if cfg.model.name != "auto" and task not in cfg.model.tasks and task not in cfg.model.prompted_tasks:
        valid = models_for_task(root, task)
        raise ConfigError(
            f"model '{cfg.model.name}' cannot do task '{task}' (it does: {', '.join(cfg.model.tasks) or 'nothing'}). "
            f"Models for {task}: {', '.join(valid)} (or model=auto for the course default)"
        )
