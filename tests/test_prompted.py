"""QA, summarization and translation by prompting an instruct model (pipelab.tasks.prompted, course PR #1277).

Fast tests: reply -> v4 output conversion, the prompt block's checks, case preparation from the real task YAMLs,
and the QA score against a by-hand computation on the tiny instruct model. Slow tests: the real Hydra CLI on tiny
weights, for the three prompted tasks in one sweep and for the qa_prompted ablation beside the dedicated model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from test_cli import FAST, isolated, mlflow_runs

from pipelab.assets import AssetStore
from pipelab.config import ConfigError, load_model_config
from pipelab.tasks import TaskContext, get_task
from pipelab.tasks.prompted import (
    PromptedQuestionAnswering,
    PromptedSummarization,
    PromptedTranslation,
    clean_reply,
    locate_answer,
    qa_output,
    reply_probability,
    summary_output,
    translation_output,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-360m-instruct"
CONTEXT = "My name is Sylvain and I work at Hugging Face in Brooklyn"
SHORT = "++task.prompt.generation.max_new_tokens=4"  # random weights never stop: bound the replies


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def context_for(overrides: list[str], tmp_path: Path) -> TaskContext:
    return TaskContext(cfg=compose_cfg(overrides), assets=AssetStore({}, tmp_path, stand_ins=True))


# ---------------------------------------------------------------------------------------------------------
# Reply -> output schema
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "cleaned"),
    [
        ("  Hugging Face \n", "Hugging Face"),
        ('"Hugging Face"', "Hugging Face"),
        ("' \"Brooklyn\" '", "Brooklyn"),  # nested quotes, whitespace between the layers
        ("\u201cHugging Face\u201d", "Hugging Face"),
        ("\u00ab Bonjour \u00bb", "Bonjour"),
        ('He said "no".', 'He said "no".'),  # quotes inside the text stay
        ('"unbalanced', '"unbalanced'),
        ("", ""),
        ("\n\n\n", ""),
    ],
)
def test_clean_reply_trims_whitespace_and_enclosing_quotes_only(reply, cleaned):
    assert clean_reply(reply) == cleaned


@pytest.mark.parametrize(
    ("answer", "span"),
    [
        ("Hugging Face", (33, 45)),
        ("hugging  face", (33, 45)),  # case and whitespace runs differ: the context's own span
        ("Brooklyn.", (49, 57)),  # trailing sentence punctuation
        ('"Brooklyn".', (49, 57)),  # quotes inside the punctuation
        ("Hugging Face\nBecause the text says so.", (33, 45)),  # the first line of a chatty reply
        ("Sylvain", (11, 18)),
        ("Paris", None),
        ("I work at Hugging Face in Paris", None),
    ],
)
def test_locate_answer(answer, span):
    assert locate_answer(answer, CONTEXT) == span


def test_locate_answer_takes_the_first_occurrence():
    context = "Brooklyn is far. I work in Brooklyn."
    assert locate_answer("Brooklyn", context) == (0, 8)


def test_located_answer_is_the_context_span():
    out = qa_output(' "hugging face". ', CONTEXT, 0.25)
    assert out == {"answer": "Hugging Face", "score": 0.25, "start": 33, "end": 45}
    assert CONTEXT[out["start"] : out["end"]] == out["answer"]
    assert get_task("question-answering").validate(out) == []


def test_answer_not_in_the_context_keeps_the_reply_and_has_no_span():
    out = qa_output("He works in Paris.", CONTEXT, 0.5)
    assert out == {"answer": "He works in Paris.", "score": 0.5, "start": -1, "end": -1}
    assert get_task("question-answering").validate(out) == []


@pytest.mark.parametrize("reply", ["", "  \n\n ", "unanswerable", " Unanswerable. ", '"UNANSWERABLE"'])
def test_empty_reply_or_the_no_answer_reply_is_v4s_no_answer_form(reply):
    out = qa_output(reply, CONTEXT, 0.125, no_answer="unanswerable")
    assert out == {"answer": "", "score": 0.125, "start": 0, "end": 0}
    assert get_task("question-answering").validate(out) == []


def test_no_answer_text_is_only_special_when_configured():
    assert qa_output("unanswerable", CONTEXT, 0.1)["start"] == -1


def test_summary_and_translation_replies_are_trimmed_into_their_v4_schemas():
    assert summary_output('\n "A short summary." \n') == [{"summary_text": "A short summary."}]
    assert translation_output(" This course is produced by Hugging Face.\n") == [
        {"translation_text": "This course is produced by Hugging Face."}
    ]
    assert get_task("summarization").validate(summary_output("x")) == []
    assert get_task("translation").validate(translation_output("")) == []


# ---------------------------------------------------------------------------------------------------------
# The prompt block and case preparation (real task YAMLs, no weights)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "kind"),
    [
        ("question-answering", PromptedQuestionAnswering),
        ("summarization", PromptedSummarization),
        ("translation", PromptedTranslation),
    ],
)
def test_each_task_yaml_prompts_and_every_case_keeps_only_generation_kwargs(task, kind, tmp_path):
    ctx = context_for([f"task={task}", f"model={MODEL}", "profile=tiny"], tmp_path)
    prompted = get_task(task, prompted=True)
    assert type(prompted) is kind
    cases = [c for case_cfg in ctx.cfg.task.cases for c in prompted.prepare(case_cfg, ctx)]
    assert [c.id for c in cases] == [c.id for c in ctx.cfg.task.cases]  # every case, every direction
    limit = ctx.cfg.task.prompt.generation.max_new_tokens
    for case in cases:
        assert case.kwargs == {"do_sample": False, "max_new_tokens": limit, "return_full_text": False}
        assert any("prompted through text-generation" in note for note in case.notes)
        system, user = prompted.spec.messages(prompted.values(case))
        assert system["role"] == "system" and user["role"] == "user" and "{" not in user["content"]


def test_translation_prompt_names_each_cases_own_languages(tmp_path):
    ctx = context_for(["task=translation", f"model={MODEL}"], tmp_path)
    prompted = get_task("translation", prompted=True)
    cases = {c.id: c for case_cfg in ctx.cfg.task.cases for c in prompted.prepare(case_cfg, ctx)}
    users = {cid: prompted.spec.messages(prompted.values(c))[1]["content"] for cid, c in cases.items()}
    assert "French" in users["course-fr-en"] and "English" in users["course-fr-en"]
    assert "German" in users["custom-de-en"] and "French" in users["custom-en-fr"]
    assert users["custom-fr-de"].index("French") < users["custom-fr-de"].index("German")
    assert "Ce cours est produit par Hugging Face." in users["course-fr-en"]
    assert not any("src_lang" in note for c in cases.values() for note in c.notes)  # in the prompt, not dropped


def test_dedicated_pipeline_settings_are_dropped_and_said_so(tmp_path):
    ctx = context_for(["task=summarization", f"model={MODEL}"], tmp_path)
    prompted = get_task("summarization", prompted=True)
    (case,) = prompted.prepare(ctx.cfg.task.cases[1], ctx)  # custom-ai-industry: case kwargs max/min_length
    assert "dedicated-pipeline settings not used by prompting: max_length, min_length, truncation" in case.notes
    assert "max_length" not in case.kwargs


def test_user_input_case_is_prompted_too(tmp_path):
    ctx = context_for(["task=question-answering", f"model={MODEL}"], tmp_path)
    prompted = get_task("question-answering", prompted=True)
    case = prompted.user_case("Who am I?", ctx)
    assert case.input["question"] == "Who am I?" and case.kwargs["return_full_text"] is False
    assert "Who am I?" in prompted.spec.messages(prompted.values(case))[1]["content"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.pop("user"), "task.prompt.user must be a non-empty text template"),
        (lambda p: p.update(user="Q: {question} {answer}"), r"placeholder \{answer\} is not one of \{question\}"),
        (lambda p: p.update(user="Q: {question!r}"), r"placeholder \{question!r\}"),
        (lambda p: p.update(system="a { b"), "write a literal brace"),
        (lambda p: p.update(temperature=0.3), "unknown key.*temperature.*Valid keys: system, user"),
        (lambda p: p.update(generation={"do_sample": False}), "max_new_tokens must be a whole number > 0"),
        (lambda p: p["generation"].update(return_full_text=True), "return_full_text is fixed"),
        (lambda p: p.update(languages={"fr": "French"}), "languages for translation only"),
    ],
)
def test_bad_prompt_blocks_fail_before_any_weights_load(edit, message, tmp_path):
    ctx = context_for(["task=question-answering", f"model={MODEL}"], tmp_path)
    prompt = OmegaConf.to_container(ctx.cfg.task.prompt)
    edit(prompt)
    with open_dict(ctx.cfg):
        ctx.cfg.task.prompt = prompt
    with pytest.raises(ConfigError, match=message):
        get_task("question-answering", prompted=True).prepare(ctx.cfg.task.cases[0], ctx)


def test_a_task_without_a_prompt_block_says_so(tmp_path):
    ctx = context_for(["task=summarization", f"model={MODEL}"], tmp_path)
    with open_dict(ctx.cfg):
        ctx.cfg.task.prompt = {}
    with pytest.raises(ConfigError, match="has no `prompt:` block"):
        get_task("summarization", prompted=True).prepare(ctx.cfg.task.cases[0], ctx)


def test_only_three_tasks_can_be_prompted():
    with pytest.raises(ConfigError, match="Prompted tasks: question-answering, summarization, translation"):
        get_task("ner", prompted=True)


# ---------------------------------------------------------------------------------------------------------
# The QA score, checked by hand on the tiny instruct model
# ---------------------------------------------------------------------------------------------------------


class CannedPipe:
    """A text-generation pipeline stand-in: the tiny model and tokenizer, and a fixed reply."""

    def __init__(self, model: Any, tokenizer: Any, reply: str) -> None:
        self.model, self.tokenizer, self.reply = model, tokenizer, reply
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def __call__(self, messages: Any, **kwargs: Any) -> list[dict[str, str]]:
        self.calls.append((messages, kwargs))
        return [{"generated_text": self.reply}]


@pytest.fixture(scope="module")
def tiny_instruct(shared_data_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelab.weights import resolve_weights

    weights = resolve_weights(
        load_model_config(ROOT, MODEL), OmegaConf.create({"name": "tiny", "offline": True}), shared_data_dir
    )
    return AutoModelForCausalLM.from_pretrained(weights.path), AutoTokenizer.from_pretrained(weights.path)


def by_hand(model: Any, tokenizer: Any, messages: list[dict[str, str]], reply_ids: list[int]) -> float:
    """exp(mean log p) of reply_ids after the prompt exactly as the pipeline tokenises the chat."""
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    ids = torch.tensor([prompt_ids + reply_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    picked = [log_probs[len(prompt_ids) - 1 + i, token].item() for i, token in enumerate(reply_ids)]
    return math.exp(sum(picked) / len(picked))


def test_qa_call_locates_the_reply_and_scores_it_by_its_token_probability(tiny_instruct, tmp_path):
    model, tokenizer = tiny_instruct
    ctx = context_for(["task=question-answering", f"model={MODEL}"], tmp_path)
    prompted = get_task("question-answering", prompted=True)
    (case,) = prompted.prepare(ctx.cfg.task.cases[0], ctx)  # course-work
    reply = '"Hugging Face".'
    pipe = CannedPipe(model, tokenizer, reply)
    out = prompted.call(pipe, case)

    ((messages, kwargs),) = pipe.calls
    assert kwargs == {"do_sample": False, "max_new_tokens": 32, "return_full_text": False}
    assert [m["role"] for m in messages] == ["system", "user"]
    assert CONTEXT in messages[1]["content"] and "Where do I work?" in messages[1]["content"]
    expected = by_hand(model, tokenizer, messages, tokenizer(reply, add_special_tokens=False)["input_ids"])
    assert out["answer"] == "Hugging Face" and (out["start"], out["end"]) == (33, 45)
    assert 0 < out["score"] <= 1 and out["score"] == pytest.approx(expected, rel=1e-4)
    assert get_task("question-answering").validate(out) == []


def test_an_empty_reply_is_scored_by_the_end_of_turn_token(tiny_instruct, tmp_path):
    model, tokenizer = tiny_instruct
    ctx = context_for(["task=question-answering", f"model={MODEL}"], tmp_path)
    prompted = get_task("question-answering", prompted=True)
    (case,) = prompted.prepare(ctx.cfg.task.cases[4], ctx)  # unanswerable-opinion
    messages = prompted.spec.messages(prompted.values(case))
    out = prompted.call(CannedPipe(model, tokenizer, ""), case)
    assert out == {"answer": "", "score": out["score"], "start": 0, "end": 0}
    assert out["score"] == pytest.approx(by_hand(model, tokenizer, messages, [tokenizer.eos_token_id]), rel=1e-4)
    assert reply_probability(model, tokenizer, messages, "") == out["score"]


# ---------------------------------------------------------------------------------------------------------
# The real CLI on tiny weights
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_three_prompted_tasks_run_through_the_cli_on_one_text_generation_pipeline(tmp_path, shared_data_dir):
    tasks = ["question-answering", "summarization", "translation"]
    args = ["-m", f"task={','.join(tasks)}", f"model={MODEL}", SHORT, *FAST, *isolated(tmp_path, shared_data_dir)]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 jobs: 3 FINISHED" in result.stdout

    children = [r for r in mlflow_runs(tmp_path) if "mlflow.parentRunId" in r.data.tags]
    by_task = {r.data.tags["task"]: r for r in children}
    assert sorted(by_task) == sorted(r.info.run_name for r in children)  # a task sweep names its children by task
    for task in tasks:
        (path,) = (tmp_path / "results" / "runs" / task).glob("*.json")
        record = json.loads(path.read_text())
        assert record["status"] == "FINISHED" and record["task"] == task
        assert record["name"] == f"{task} {MODEL} (prompted) [tiny]"
        assert len(record["cases"]) == len(record["config"]["task"]["cases"])  # translation: all directions
        for case in record["cases"]:
            assert case["error"] is None and case["valid"], (case["id"], case["error"], case["problems"])
            assert get_task(task).validate(case["output"]) == []
            assert case["kwargs"] == {"do_sample": False, "max_new_tokens": 4, "return_full_text": False}
        run = by_task[task]
        assert run.info.status == "FINISHED" and run.data.tags["task"] == task
        assert run.data.metrics["schema_valid_rate"] == 1.0
        assert run.data.params["task.prompt.generation.max_new_tokens"] == "4"
    # one (model, device, dtype) in one process: the text-generation pipeline is built once for the three tasks
    assert sorted(r.data.metrics["pipeline_cache_hit"] for r in children) == [0.0, 1.0, 1.0]
    qa = by_task["question-answering"].data.metrics
    for key in ("answerable_score_mean", "unanswerable_score_mean", "answerable_located_rate"):
        assert key in qa, key
    translation = by_task["translation"].data.metrics
    assert translation["references"] == 5.0  # chrF/BLEU over every direction that has a reference


@pytest.mark.slow
def test_qa_prompted_ablation_runs_beside_the_dedicated_model(tmp_path, shared_data_dir):
    args = ["-m", "ablation=qa_prompted", SHORT, *FAST, *isolated(tmp_path, shared_data_dir)]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    children = [r for r in mlflow_runs(tmp_path) if "mlflow.parentRunId" in r.data.tags]
    names = sorted(r.info.run_name for r in children)
    assert names == ["distilbert-squad", f"{MODEL} (prompted)"]  # the ablation varies the model
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["ablation"] == "qa_prompted"
        assert run.data.metrics["schema_valid_rate"] == 1.0
        assert "answerable_score_mean" in run.data.metrics  # the same numbers, side by side
