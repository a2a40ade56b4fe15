"""Pipeline internals (course chapter 2.2): tokenizer -> model -> softmax / argmax / decoding by hand gives what
`pipeline()` returns, for every task whose pipeline is one forward pass (every registered task that does not
generate). The by-hand code uses the loaded pipeline's own tokenizer (or image processor) and model, so what it
checks is the pipeline's pre- and post-processing, on the tiny models (and the real MiniLM for feature-extraction,
whose default model is real weights on every profile).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT

from pipelab import runner
from pipelab.dag import compose
from pipelab.pipeline_cache import load_pipeline
from pipelab.tasks import REGISTRY, TASK_NAMES, Case
from pipelab.weights import resolve_weights

ENCODER_TASKS = [name for name in TASK_NAMES if not REGISTRY[name].generates]


def softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softmax(logits.float(), dim=-1)


def text_classification(pipe: Any, case: Case) -> Any:
    inputs = pipe.tokenizer(case.input, return_tensors="pt", truncation=True)
    probs = softmax(pipe.model(**inputs).logits[0])
    best = int(probs.argmax())
    return [{"label": pipe.model.config.id2label[best], "score": float(probs[best])}]


def zero_shot(pipe: Any, case: Case) -> Any:
    sequence, labels = case.input["sequence"], case.input["candidate_labels"]
    template = case.kwargs.get("hypothesis_template", "This example is {}.")
    entail = next(i for label, i in pipe.model.config.label2id.items() if label.lower().startswith("entail"))
    logits = torch.stack(
        [
            pipe.model(**pipe.tokenizer(sequence, template.format(label), return_tensors="pt", truncation="only_first"))
            .logits[0]
            .float()
            for label in labels
        ]
    )
    if case.kwargs.get("multi_label"):
        contradiction = next(i for label, i in pipe.model.config.label2id.items() if label.lower().startswith("contra"))
        scores = softmax(logits[:, [contradiction, entail]])[:, 1]
    else:
        scores = softmax(logits[:, entail])
    order = scores.argsort(descending=True)
    return {"sequence": sequence, "labels": [labels[i] for i in order], "scores": [float(scores[i]) for i in order]}


def fill_mask(pipe: Any, case: Case) -> Any:
    inputs = pipe.tokenizer(case.input, return_tensors="pt")
    (position,) = (inputs["input_ids"][0] == pipe.tokenizer.mask_token_id).nonzero()[0]
    probs = softmax(pipe.model(**inputs).logits[0, position])
    top = probs.topk(case.kwargs.get("top_k", 5))
    return [
        {"token": int(i), "token_str": pipe.tokenizer.decode([int(i)]), "score": float(p)}
        for p, i in zip(top.values, top.indices, strict=True)
    ]


def ner_tokens(pipe: Any, text: str) -> list[dict[str, Any]]:
    """One entry per non-special token: its argmax label and probability (aggregation_strategy none keeps all but O)."""
    inputs = pipe.tokenizer(text, return_tensors="pt", return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets, special = inputs.pop("offset_mapping")[0], inputs.pop("special_tokens_mask")[0]
    probs = softmax(pipe.model(**inputs).logits[0])
    tokens = []
    for index, token_id in enumerate(inputs["input_ids"][0].tolist()):
        if special[index]:
            continue
        best = int(probs[index].argmax())
        tokens.append(
            {
                "entity": pipe.model.config.id2label[best],
                "score": float(probs[index, best]),
                "index": index,
                # an unknown token (a Thai word the vocabulary lacks) keeps its characters, as the pipeline does
                "word": text[int(offsets[index][0]) : int(offsets[index][1])]
                if token_id == pipe.tokenizer.unk_token_id
                else pipe.tokenizer.convert_ids_to_tokens(token_id),
                "start": int(offsets[index][0]),
                "end": int(offsets[index][1]),
            }
        )
    return tokens


def ner(pipe: Any, case: Case) -> Any:
    """aggregation_strategy=simple by hand: adjacent tokens of one type join unless the next one starts (B-) anew."""
    groups: list[list[dict[str, Any]]] = []
    for token in ner_tokens(pipe, case.input):
        bi, tag = (token["entity"][:1], token["entity"][2:]) if token["entity"][1:2] == "-" else ("I", token["entity"])
        token["tag"] = tag
        if groups and groups[-1][-1]["tag"] == tag and bi != "B":
            groups[-1].append(token)
        else:
            groups.append([token])
    return [
        {
            "entity_group": group[0]["tag"],
            "score": sum(t["score"] for t in group) / len(group),
            "word": pipe.tokenizer.convert_tokens_to_string([t["word"] for t in group]),
            "start": group[0]["start"],
            "end": group[-1]["end"],
        }
        for group in groups
        if group[0]["tag"] != "O"
    ]


def question_answering(pipe: Any, case: Case) -> Any:
    """Start/end softmax over the context tokens and CLS (v4's "no answer" slot, which is then never picked), the
    best span of at most 15 tokens, its characters."""
    question, context = case.input["question"], case.input["context"]
    inputs = pipe.tokenizer(question, context, return_tensors="pt", return_offsets_mapping=True)
    offsets = inputs.pop("offset_mapping")[0]
    is_cls = inputs["input_ids"][0] == pipe.tokenizer.cls_token_id
    in_context = torch.tensor([s == 1 for s in inputs.sequence_ids(0)]) | is_cls
    out = pipe.model(**inputs)
    start = softmax(out.start_logits[0].float().masked_fill(~in_context, -10000.0)).masked_fill(is_cls, 0.0)
    end = softmax(out.end_logits[0].float().masked_fill(~in_context, -10000.0)).masked_fill(is_cls, 0.0)
    spans = torch.triu(start[:, None] * end[None, :]) - torch.triu(start[:, None] * end[None, :], diagonal=15)
    s, e = divmod(int(spans.argmax()), spans.shape[1])
    first, last = int(offsets[s][0]), int(offsets[e][1])
    return {"score": float(spans[s, e]), "start": first, "end": last, "answer": context[first:last]}


def image_classification(pipe: Any, case: Case) -> Any:
    inputs = pipe.image_processor(images=case.input.convert("RGB"), return_tensors="pt")
    probs = softmax(pipe.model(**inputs).logits[0])
    top = probs.topk(min(case.kwargs.get("top_k", 5), probs.numel()))
    return [
        {"label": pipe.model.config.id2label[int(i)], "score": float(p)}
        for p, i in zip(top.values, top.indices, strict=True)
    ]


def feature_extraction(pipe: Any, case: Case) -> Any:
    """The last hidden state of each sentence, [1][tokens][hidden]: the pipeline adds nothing but the nesting."""
    return [pipe.model(**pipe.tokenizer(text, return_tensors="pt")).last_hidden_state.tolist() for text in case.input]


BY_HAND: dict[str, Callable[[Any, Case], Any]] = {
    "text-classification": text_classification,
    "zero-shot-classification": zero_shot,
    "fill-mask": fill_mask,
    "ner": ner,
    "question-answering": question_answering,
    "image-classification": image_classification,
    "feature-extraction": feature_extraction,
}
# What each task's pipeline is asked, beyond the case's own kwargs, so that the by-hand code stays short:
# QA's answer as its tokens' characters (not widened to whole words).
CALL_KWARGS = {"question-answering": {"align_to_words": False}}


def assert_close(got: Any, want: Any, where: str = "output") -> None:
    """Same structure, same strings and integers, floats within 1e-4 (float32 sums in another order)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not a dict"
        for key, value in want.items():
            assert key in got, f"{where}: the pipeline's output has no {key!r}: {got!r}"
            assert_close(got[key], value, f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {len(got)} items, by hand {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-4), f"{where}: pipeline {got}, by hand {want}"
    else:
        assert got == want, f"{where}: pipeline {got!r}, by hand {want!r}"


def test_every_task_that_does_not_generate_has_a_by_hand_version():
    assert sorted(BY_HAND) == sorted(ENCODER_TASKS)


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ENCODER_TASKS)
def test_by_hand_gives_the_pipelines_output(task_name: str, shared_data_dir: Path):
    cfg = compose(ROOT, [f"task={task_name}", "profile=tiny", f"data_dir={shared_data_dir}"])
    task, ctx, cases, device, dtype = runner._prepare(cfg, ROOT)
    weights = resolve_weights(cfg.model, cfg.profile, shared_data_dir)
    loaded, _ = load_pipeline(cfg.task.pipeline, weights, device, dtype, cfg.model)
    ctx.pipe = pipe = loaded.pipe
    checked = 0
    for case in cases:
        if case.kind == "edge":  # empty texts, 1x1 images: what the pipeline makes of them is another test's
            continue
        task.annotate(case, ctx)
        case.kwargs = {**case.kwargs, **CALL_KWARGS.get(task_name, {})}
        with torch.no_grad():
            want = BY_HAND[task_name](pipe, case)
        assert_close(task.call(pipe, case), want, f"{task_name}/{case.id}")
        checked += 1
    assert checked >= 1
    if task_name == "feature-extraction":
        assert weights.weights == "pretrained"  # the real MiniLM, as the task config says
