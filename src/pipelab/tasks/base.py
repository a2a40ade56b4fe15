"""The protocol every task module follows, the parts most tasks share, and the registry of tasks.

A task module is the only place that knows its task (no MLflow, no Hydra, no timing loop):
  - its config name (``name``: conf/task/<name>.yaml) and its place in tables (``order``),
  - how a configured case becomes pipeline input (``prepare``) and how the pipeline is called (``call``),
  - the output schema (``validate``), what the record keeps of it (``recorded``),
  - the course check (``check_expectation``; ``check_course`` when an expectation compares two cases),
  - which numbers summarise a run (``summarize``) and what the benchmark adds (``bench_extras``),
  - what a run's name says beyond task and model (``run_name_parts``),
  - whether its pipeline generates (``generates``) and how its outputs agree with a reference's (``agreement``),
  - the plain ``pipe(...)`` call a user would write (``bare_arguments``, for benchmarks/overhead.py).
Defining a subclass with a ``name`` registers it; ``pipelab.tasks`` imports every module of the package, so a
new task is its module and its conf/task YAML. The runner owns the loop, the timing and the recording.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipelab import agreement, schemas
from pipelab.assets import AssetStore

# name -> task class, filled by Task.__init_subclass__ (the prompted variants register in tasks/prompted.py).
REGISTRY: dict[str, type[Task]] = {}


@dataclass
class Case:
    """One prepared pipeline input."""

    id: str
    kind: str
    input: Any  # what the pipeline receives (text, dict, PIL image, audio dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    display: Any = None  # JSON-able description of the input for records
    notes: list[str] = field(default_factory=list)  # e.g. "truncated to the 512-token window"
    language: str = "en"  # the input's language (the case config's `language`; the course is English)
    gold: Any = None  # the right output as data (the case config's `gold`), scored by the task's summarize


@dataclass
class CaseResult:
    case: Case
    output: Any = None  # JSON-able
    valid: bool = False
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    latency_ms: float | None = None


@dataclass
class TaskContext:
    cfg: DictConfig
    assets: AssetStore
    pipe: Any = None  # the loaded transformers pipeline (None while preparing cases before loading)


def plain(node: Any) -> Any:
    """OmegaConf nodes to plain Python containers."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


class Task:
    """Default behaviour: text in, `pipe(text, **kwargs)` out, label/score expectations."""

    name = ""
    order = 1000  # place in tables and listings: the course's chapter 1.3 order
    text_key: str | None = None  # for dict inputs: the key that `repeat` multiplies
    # The pipeline decodes with model.generate (a loop of forward passes): no single forward to export to ONNX
    # (ablation=runtime) or to redo by hand (tests/test_by_hand.py).
    generates = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")  # declared here, not inherited (a prompted variant inherits it)
        if name:
            if name in REGISTRY and REGISTRY[name].__qualname__ != cls.__qualname__:
                raise TypeError(f"task '{name}' is defined twice: {REGISTRY[name].__module__} and {cls.__module__}")
            REGISTRY[name] = cls

    def prepare(self, case_cfg: DictConfig, ctx: TaskContext) -> list[Case]:
        """A configured case -> zero or more prepared cases (translation drops other directions)."""
        value = plain(case_cfg.input)
        notes = []
        if case_cfg.repeat > 1:
            if isinstance(value, dict) and self.text_key:
                value = dict(value, **{self.text_key: " ".join([value[self.text_key]] * case_cfg.repeat)})
            else:
                value = " ".join([value] * case_cfg.repeat)
            notes.append(f"input text repeated {case_cfg.repeat} times")
        kwargs = dict(plain(ctx.cfg.task.call) or {})
        kwargs.update(plain(case_cfg.kwargs) or {})
        case = Case(case_cfg.id, case_cfg.kind, value, kwargs, display=value, notes=notes)
        case.language, case.gold = case_cfg.get("language") or "en", plain(case_cfg.get("gold"))
        return [case]

    def user_case(self, value: str, ctx: TaskContext) -> Case:
        """The top-level `input=` knob as an extra case."""
        return Case("user-input", "user", value, dict(plain(ctx.cfg.task.call) or {}), display=value)

    def annotate(self, case: Case, ctx: TaskContext) -> None:
        """After the pipeline is loaded: notes that need the tokenizer (truncation)."""
        text = case.input.get(self.text_key) if isinstance(case.input, dict) and self.text_key else case.input
        self.truncation_note(case, ctx, text)

    def call(self, pipe: Any, case: Case) -> Any:
        return pipe(case.input, **case.kwargs)

    def call_batch(self, pipe: Any, case: Case, batch_size: int) -> Any:
        """The same input `batch_size` times in one call (the batch-size ablation)."""
        return pipe([case.input] * batch_size, batch_size=batch_size, **case.kwargs)

    def validate(self, output: Any, case: Case | None = None) -> list[str]:
        """Problems with `output` (empty: it matches the task's v4 schema). Default: a list of {label, score}."""
        return schemas.list_of(output, schemas.label_score)

    def recorded(self, output: Any, case: Case) -> Any:
        """What the record keeps of a valid output (checks and summaries read it). Default: all of it."""
        return output

    def bench_extras(self, pipe: Any, case: Case) -> dict[str, float]:
        """Metrics measured beside the latency protocol (time to first token for generation)."""
        return {}

    def run_name_parts(self, cfg: DictConfig) -> dict[str, str]:
        """What a run's name says after task and model, under the config key each part shows (e.g.
        {"temperature": "T=0.7"}): a sweep over that key names its child runs by that part alone."""
        return {}

    def bare_arguments(self, pipe: Any, case: Case) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of the plain ``pipe(...)`` call a user would write for `case`, built once for a loop."""
        return (case.input,), dict(case.kwargs)

    def check_course(self, expectation: dict[str, Any], outputs: dict[str, Any]) -> tuple[bool, str]:
        """(passed, what was compared) for one expectation, given every valid output by case id.

        Default: the expectation's own case through ``check_expectation``; a task whose expectations compare
        cases (feature-extraction: a paraphrase pair against an unrelated pair) overrides this.
        """
        return self.check_expectation(expectation, outputs[expectation["case"]])

    def check_expectation(self, expectation: dict[str, Any], output: Any) -> tuple[bool, str]:
        """(passed, what was compared). Default: the top label and its score."""
        top = output[0] if isinstance(output, list) else output
        if isinstance(top, list):
            top = top[0]
        label, score = top["label"], float(top["score"])
        ok = label == expectation["label"] and abs(score - expectation["score"]) <= expectation["tol"]
        return ok, (
            f"got {label} {score:.4f}, expected {expectation['label']} {expectation['score']} +/- {expectation['tol']}"
        )

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        """Task-level numbers (the ablation metrics); the runner adds validity and latency."""
        return {}

    def agreement(self, results: list[CaseResult], reference: list[CaseResult]) -> dict[str, float]:
        """How this run's outputs agree with a reference run's on the same cases (``agree_*`` metrics).

        ``results`` and ``reference`` are the same cases in the same order; cases not valid in both are left
        out, and ``agree_cases`` says how many were compared. Default: top label and its score.
        """
        pairs = [(r.output, ref.output) for r, ref in zip(results, reference, strict=True) if r.valid and ref.valid]
        if not pairs:
            return {"agree_cases": 0.0}
        return {"agree_cases": float(len(pairs))} | self.agree(pairs)

    def agree(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        """The task's agreement measures over (output, reference output) pairs (see pipelab.agreement)."""
        return agreement.top_label(pairs)

    def truncation_note(self, case: Case, ctx: TaskContext, text: str) -> None:
        """Say so in the record when a text is longer than the model's window."""
        tokenizer = getattr(ctx.pipe, "tokenizer", None)
        if tokenizer is None or not isinstance(text, str):
            return
        limit = getattr(tokenizer, "model_max_length", None) or 0
        if 0 < limit < 100_000:
            count = len(tokenizer(text, add_special_tokens=True)["input_ids"])
            if count > limit:
                case.notes.append(f"input is {count} tokens; truncated to the model's {limit}-token window")
