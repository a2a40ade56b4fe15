"""QA, summarization and translation by prompting an instruct model through `text-generation` (course PR #1277).

transformers 5 removed the dedicated question-answering, summarization and translation pipelines and recommends
asking an instruction-tuned chat model instead. A model whose config lists a task in ``prompted_tasks`` (e.g.
``smollm2-360m-instruct``) runs that task here: the runner loads a ``text-generation`` pipeline and uses one of
the classes below, which subclass the dedicated task classes, so case preparation (context repeats, the
multilingual translation path), summaries and course checks are the same code as for the dedicated models.

Each call builds chat messages from the task's ``prompt`` block (``conf/task/<task>.yaml``)::

    prompt:
      system: "..."                      # the system message (may use the same placeholders as user)
      user: "... {context} ... {question}"
      generation: {do_sample: false, max_new_tokens: 32}
      no_answer: unanswerable            # question-answering only: the reply that means "no answer"
      languages: {fr: French}            # translation only: language names for {src_name}/{tgt_name}

and turns the reply into the v4 output schema of the task, so the runner's schema validation, the summaries
and the records work unchanged. Placeholders per task: question-answering ``{question}``, ``{context}``;
summarization ``{text}``; translation ``{text}``, ``{src_lang}``, ``{tgt_lang}`` (codes) and ``{src_name}``,
``{tgt_name}`` (names from ``languages``, else the code). Templates use ``str.format``: a literal brace in a
template is written ``{{`` or ``}}``; braces inside the case texts need nothing.

The dedicated pipelines' call settings (``task.call``, case kwargs such as ``max_length`` or
``handle_impossible_answer``) mean nothing to text generation: they are not passed, and each case says so in
its notes. What is passed is ``prompt.generation`` plus ``return_full_text=False``; it is recorded as the case's
kwargs.
"""

from __future__ import annotations

import math
import re
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from pipelab.config import ConfigError
from pipelab.metrics import mean_token_logprob
from pipelab.tasks.base import Case, CaseResult, Task, TaskContext, plain
from pipelab.tasks.question_answering import QuestionAnswering
from pipelab.tasks.summarization import Summarization
from pipelab.tasks.text_generation import pad_on_the_left
from pipelab.tasks.translation import Translation

PROMPT_KEYS = ("system", "user", "generation", "no_answer", "languages")

# Opening quote -> closing quote, for the quotes a chat model tends to wrap a short answer in.
_QUOTES = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb", "\u201e": "\u201c"}
_TRAILING_PUNCTUATION = ".!?,;:"


# ---------------------------------------------------------------------------------------------------------
# Reply -> output schema (pure functions)
# ---------------------------------------------------------------------------------------------------------


def clean_reply(text: str) -> str:
    """The reply without surrounding whitespace and without quotes wrapped around all of it.

    Only quotes that enclose the whole reply go, layer by layer (``' "Paris" '`` -> ``Paris``); quotes inside
    the text stay (``He said "no".`` is unchanged). Nothing else is rewritten.
    """
    text = text.strip()
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def _candidates(answer: str) -> list[str]:
    """Forms of an answer to look for in the context, most literal first."""
    lines = [line for line in answer.splitlines() if line.strip()]
    forms = [answer] + ([lines[0]] if len(lines) > 1 else [])
    found: list[str] = []
    for form in forms:
        for variant in (form, form.rstrip(_TRAILING_PUNCTUATION)):
            variant = clean_reply(variant)
            if variant and variant not in found:
                found.append(variant)
    return found


def locate_answer(answer: str, context: str) -> tuple[int, int] | None:
    """Character span (start, end) of ``answer`` in ``context``, or None when it is not there.

    Tried in order, first hit wins: the answer as given, then (if the reply has several lines) its first line,
    each also without trailing sentence punctuation (``Brooklyn.`` -> ``Brooklyn``). Each form is searched
    literally, then ignoring case and treating any run of whitespace as equal; the first occurrence in the
    context is taken. ``context[start:end]`` is the located text.
    """
    for form in _candidates(answer):
        index = context.find(form)
        if index >= 0:
            return index, index + len(form)
        pattern = r"\s+".join(re.escape(word) for word in form.split())
        match = re.search(pattern, context, flags=re.IGNORECASE)
        if match:
            return match.start(), match.end()
    return None


def qa_output(reply: str, context: str, score: float, no_answer: str | None = None) -> dict[str, Any]:
    """A question-answering reply as the v4 QA output ``{"answer", "score", "start", "end"}``.

    - An empty reply (after :func:`clean_reply`), or one equal to ``no_answer`` (ignoring case and trailing
      punctuation), is the v4 "no answer" form of ``handle_impossible_answer``: ``answer ""``, start = end = 0.
    - An answer found in the context (:func:`locate_answer`) is reported as the context's own text at that span,
      so ``context[start:end] == answer`` holds as for the dedicated extractive pipeline.
    - An answer that is not in the context (a paraphrase, a sentence, a made-up fact) is kept as the model wrote
      it, with start = end = -1: there is no span to point at, and -1 says so instead of pretending one.

    ``score`` is passed through unchanged (see :func:`reply_probability`): it is never made up here.
    """
    answer = clean_reply(reply)
    refusal = no_answer is not None and answer.rstrip(_TRAILING_PUNCTUATION).casefold() == no_answer.casefold()
    if not answer or refusal:
        return {"answer": "", "score": score, "start": 0, "end": 0}
    span = locate_answer(answer, context)
    if span is None:
        return {"answer": answer, "score": score, "start": -1, "end": -1}
    start, end = span
    return {"answer": context[start:end], "score": score, "start": start, "end": end}


def summary_output(reply: str) -> list[dict[str, str]]:
    """A summarization reply as the v4 output ``[{"summary_text"}]``."""
    return [{"summary_text": clean_reply(reply)}]


def translation_output(reply: str) -> list[dict[str, str]]:
    """A translation reply as the v4 output ``[{"translation_text"}]``."""
    return [{"translation_text": clean_reply(reply)}]


def scoring_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The chat prompt as the text that :func:`pipelab.metrics.mean_token_logprob` tokenises.

    The pipeline tokenises chats with ``apply_chat_template`` (no extra special tokens); ``mean_token_logprob``
    tokenises the prompt string with ``add_special_tokens=True``. For a tokenizer that adds a BOS itself and a
    template that already writes it, the template's copy is dropped so the model sees one BOS, as in generation.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        added = tokenizer("", add_special_tokens=True)["input_ids"]
        if tokenizer.bos_token_id in added:
            text = text[len(bos) :]
    return text


def reply_probability(model: Any, tokenizer: Any, messages: list[dict[str, str]], reply: str) -> float:
    """exp(mean log-probability per token) of the reply under the model, given the chat prompt: in (0, 1].

    The reply is the generated text exactly as the pipeline returned it (before any trimming), re-tokenised
    (for ordinary text, the tokens the model generated; the end-of-turn token is not counted). An empty reply
    means generation stopped at once: its probability is that of the end-of-turn (EOS) token as the first
    reply token. Computed by one extra forward pass over prompt + reply, so a prompted QA call's latency
    includes it (the dedicated pipeline's latency includes its own scoring too).
    """
    prompt = scoring_prompt(tokenizer, messages)
    continuation = reply
    if not tokenizer(reply, add_special_tokens=False)["input_ids"]:
        if tokenizer.eos_token is None:
            raise ValueError("empty reply and the tokenizer has no EOS token to score it by")
        continuation = tokenizer.eos_token
    return math.exp(mean_token_logprob(model, tokenizer, prompt, continuation))


# ---------------------------------------------------------------------------------------------------------
# The prompt block
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptSpec:
    """A task's ``prompt`` block, checked: templates, generation kwargs, QA's no-answer reply, language names."""

    system: str
    user: str
    generation: dict[str, Any]
    no_answer: str | None = None
    languages: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: DictConfig, placeholders: tuple[str, ...]) -> PromptSpec:
        """Read ``cfg.task.prompt``; raise ConfigError (naming what is valid) before any weights load."""
        task = cfg.task.name
        raw = plain(cfg.task.get("prompt"))
        if not raw:
            raise ConfigError(
                f"model '{cfg.model.name}' does {task} by prompting, but conf/task/{task}.yaml has no `prompt:` "
                f"block (keys: {', '.join(PROMPT_KEYS)})"
            )
        unknown = sorted(set(raw) - set(PROMPT_KEYS))
        if unknown:
            raise ConfigError(f"task.prompt: unknown key(s) {', '.join(unknown)}. Valid keys: {', '.join(PROMPT_KEYS)}")
        for key in ("system", "user"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise ConfigError(f"task.prompt.{key} must be a non-empty text template")
            _check_template(raw[key], placeholders, f"task.prompt.{key}")
        generation = dict(raw.get("generation") or {})
        limit = generation.get("max_new_tokens")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ConfigError(f"task.prompt.generation.max_new_tokens must be a whole number > 0, got {limit!r}")
        if "return_full_text" in generation:
            raise ConfigError("task.prompt.generation.return_full_text is fixed to false (the reply alone is parsed)")
        generation.setdefault("do_sample", False)
        no_answer = raw.get("no_answer")
        if no_answer is not None and (task != "question-answering" or not str(no_answer).strip()):
            raise ConfigError("task.prompt.no_answer is a non-empty reply text, for question-answering only")
        languages = raw.get("languages") or {}
        if languages and task != "translation":
            raise ConfigError("task.prompt.languages names languages for translation only")
        return cls(
            system=raw["system"],
            user=raw["user"],
            generation=generation,
            no_answer=str(no_answer).strip() if no_answer is not None else None,
            languages={str(k): str(v) for k, v in languages.items()},
        )

    def messages(self, values: dict[str, str]) -> list[dict[str, str]]:
        """System + user chat messages with the placeholders filled in."""
        return [
            {"role": "system", "content": self.system.format_map(values)},
            {"role": "user", "content": self.user.format_map(values)},
        ]

    def call_kwargs(self) -> dict[str, Any]:
        """What the text-generation pipeline receives besides the messages."""
        return {**self.generation, "return_full_text": False}


def _check_template(template: str, placeholders: tuple[str, ...], where: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} (write a literal brace as {{{{ or }}}})") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in placeholders or spec or conversion:
            raise ConfigError(
                f"{where}: placeholder {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} "
                f"is not one of {', '.join('{' + p + '}' for p in placeholders)}"
            )


# ---------------------------------------------------------------------------------------------------------
# The prompted tasks
# ---------------------------------------------------------------------------------------------------------


# task name -> its prompted variant, filled by PromptedTask.__init_subclass__
PROMPTED_TASKS: dict[str, type[PromptedTask]] = {}


class PromptedTask(Task, ABC):
    """The shared part: prompt spec, call kwargs, chat messages, one text-generation call per case.

    Subclasses put this class before the dedicated task class (``class X(PromptedTask, QuestionAnswering)``),
    so ``prepare``/``user_case`` here wrap the dedicated ones, and provide ``placeholders``, ``values`` and
    ``convert``.
    """

    placeholders: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:  # a concrete variant: it inherits the name of the task it does
            PROMPTED_TASKS[cls.name] = cls

    def __init__(self) -> None:
        self.spec: PromptSpec | None = None

    def configure(self, ctx: TaskContext) -> PromptSpec:
        """The checked prompt spec of this run (read once, at the first case)."""
        if self.spec is None:
            self.spec = PromptSpec.from_config(ctx.cfg, self.placeholders)
        return self.spec

    def prepare(self, case_cfg: DictConfig, ctx: TaskContext) -> list[Case]:
        spec = self.configure(ctx)
        cases = super().prepare(case_cfg, ctx)
        for case in cases:
            self._adapt(case, spec)
        return cases

    def user_case(self, value: str, ctx: TaskContext) -> Case:
        spec = self.configure(ctx)
        case = super().user_case(value, ctx)
        self._adapt(case, spec)
        return case

    def _adapt(self, case: Case, spec: PromptSpec) -> None:
        """Swap the dedicated pipeline's kwargs for the prompt's generation kwargs, and say what was dropped."""
        dropped = sorted(set(case.kwargs) - self.prompt_keys())
        case.kwargs = spec.call_kwargs()
        case.notes.append("prompted through text-generation: chat messages from task.prompt")
        if dropped:
            case.notes.append(f"dedicated-pipeline settings not used by prompting: {', '.join(dropped)}")
        self.values(case)  # fails now, not mid-run, if a case lacks a field the prompt needs

    def prompt_keys(self) -> set[str]:
        """Case kwargs that the prompt itself carries (not dropped, not passed to generation)."""
        return set()

    def annotate(self, case: Case, ctx: TaskContext) -> None:
        pad_on_the_left(case, ctx.pipe.tokenizer)  # batched chats (call_batch)
        super().annotate(case, ctx)

    @abstractmethod
    def values(self, case: Case) -> dict[str, str]:
        """The placeholder values of a case."""

    @abstractmethod
    def convert(self, pipe: Any, messages: list[dict[str, str]], reply: str, case: Case) -> Any:
        """A reply as the task's v4 output."""

    def _spec(self) -> PromptSpec:
        if self.spec is None:
            raise RuntimeError(f"prompted {self.name}: call() before prepare(): no prompt spec")
        return self.spec

    def call(self, pipe: Any, case: Case) -> Any:
        messages = self._spec().messages(self.values(case))
        (reply,) = pipe(messages, **case.kwargs)
        return self.convert(pipe, messages, reply["generated_text"], case)

    def call_batch(self, pipe: Any, case: Case, batch_size: int) -> Any:
        messages = self._spec().messages(self.values(case))
        replies = pipe([messages] * batch_size, batch_size=batch_size, **case.kwargs)
        return [self.convert(pipe, messages, reply["generated_text"], case) for (reply,) in replies]


class PromptedQuestionAnswering(PromptedTask, QuestionAnswering):
    """Extractive QA asked of a chat model; the reply is located in the context (see :func:`qa_output`).

    ``score`` = :func:`reply_probability` of the raw reply: exp(mean token log-probability), in (0, 1]. It is
    the model's confidence in the text it produced, comparable in range (not in meaning) with the dedicated
    pipeline's span probability.
    """

    placeholders = ("question", "context")

    def values(self, case: Case) -> dict[str, str]:
        return {"question": case.input["question"], "context": case.input["context"]}

    def convert(self, pipe: Any, messages: list[dict[str, str]], reply: str, case: Case) -> Any:
        score = reply_probability(pipe.model, pipe.tokenizer, messages, reply)
        return qa_output(reply, case.input["context"], score, self._spec().no_answer)

    def summarize(self, results: list[CaseResult], ctx: TaskContext) -> dict[str, float]:
        """The dedicated summary, plus how often the reply was a span of the context or an abstention."""
        numbers = super().summarize(results, ctx)
        for group, kinds in (("answerable", {"course", "custom"}), ("unanswerable", {"unanswerable"})):
            outputs = [r.output for r in results if r.valid and r.case.kind in kinds]
            if outputs:
                numbers[f"{group}_located_rate"] = sum(o["end"] > o["start"] >= 0 for o in outputs) / len(outputs)
                numbers[f"{group}_no_answer_rate"] = sum(o["answer"] == "" for o in outputs) / len(outputs)
        return numbers


class PromptedSummarization(PromptedTask, Summarization):
    """Summarization asked of a chat model: the trimmed reply is the ``summary_text``."""

    placeholders = ("text",)

    def values(self, case: Case) -> dict[str, str]:
        return {"text": case.input}

    def convert(self, pipe: Any, messages: list[dict[str, str]], reply: str, case: Case) -> Any:
        return summary_output(reply)


class PromptedTranslation(PromptedTask, Translation):
    """Translation asked of a chat model, each case with its own source and target language in the prompt.

    A prompted model has no ``languages`` in its config, so ``Translation.prepare`` treats it as multilingual
    and keeps every case; src_lang/tgt_lang go into the prompt instead of the call.
    """

    placeholders = ("text", "src_lang", "tgt_lang", "src_name", "tgt_name")

    def prompt_keys(self) -> set[str]:
        return {"src_lang", "tgt_lang"}

    def values(self, case: Case) -> dict[str, str]:
        src, tgt = case.input["src_lang"], case.input["tgt_lang"]
        names = self._spec().languages
        return {
            "text": case.input["text"],
            "src_lang": src,
            "tgt_lang": tgt,
            "src_name": names.get(src, src),
            "tgt_name": names.get(tgt, tgt),
        }

    def convert(self, pipe: Any, messages: list[dict[str, str]], reply: str, case: Case) -> Any:
        return translation_output(reply)


def prompted_task(name: str) -> Task:
    """The prompted version of a task (question-answering, summarization, translation)."""
    if name not in PROMPTED_TASKS:
        raise ConfigError(
            f"task '{name}' cannot be done by prompting here. Prompted tasks: {', '.join(PROMPTED_TASKS)}"
        )
    return PROMPTED_TASKS[name]()
