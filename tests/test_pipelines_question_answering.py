"""pipelab's question-answering pipeline: inputs, options, long contexts, errors.

Most tests use a "keyword spotter": a DistilBERT QA model with no transformer layer whose weights are set
by hand so that the answer start is wherever a chosen token is and the answer end wherever another chosen
token is. Unlike random weights, it makes the right answer known in advance, so the tests can check that
the pipeline finds it in any window, maps it to the right characters and ranks it first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import pipelab  # noqa: F401  (registers the pipelines)

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "parity"))
import parity_models  # noqa: E402

COURSE_QUESTION = "Where do I work?"
COURSE_CONTEXT = "My name is Sylvain and I work at Hugging Face in Brooklyn"
FILLER = "The weather was mild and the streets were quiet that morning. "


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny DistilBERT QA model of the parity fixtures (real BERT uncased vocabulary)."""
    return parity_models.ensure_model("distilbert-qa", tmp_path_factory.getbasetemp() / "parity-models")


@pytest.fixture(scope="module")
def tokenizer(qa_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qa_dir)


def spotter(tokenizer: Any, start: list[str], end: list[str], null: bool = False, strength: float = 1.0) -> Any:
    """A QA model whose start logits are high on the ``start`` tokens and end logits on the ``end`` tokens.

    No transformer layer: a token's final hidden state is LayerNorm(its embedding). The start tokens get
    one +-1 pattern as embedding and the end tokens an orthogonal one; every other embedding is zero (so
    LayerNorm gives zero) and the span head reads each pattern. With ``null``, [CLS] carries both patterns:
    the "no answer" span (CLS, CLS) then competes with the real one.
    """
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    dim = 32
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=dim, n_layers=0, n_heads=2, hidden_dim=64, dropout=0.0, qa_dropout=0.0
    )
    model = DistilBertForQuestionAnswering(config).eval()
    start_pattern = torch.tensor([1.0, -1.0] * (dim // 2))
    end_pattern = torch.tensor([1.0, 1.0, -1.0, -1.0] * (dim // 4))
    with torch.no_grad():
        model.distilbert.embeddings.word_embeddings.weight.zero_()
        model.distilbert.embeddings.position_embeddings.weight.zero_()
        for token in start:
            model.distilbert.embeddings.word_embeddings.weight[tokenizer.convert_tokens_to_ids(token)] += start_pattern
        for token in end:
            model.distilbert.embeddings.word_embeddings.weight[tokenizer.convert_tokens_to_ids(token)] += end_pattern
        if null:
            model.distilbert.embeddings.word_embeddings.weight[tokenizer.cls_token_id] = start_pattern + end_pattern
        model.qa_outputs.weight.copy_(torch.stack([start_pattern, end_pattern]) * strength)
        model.qa_outputs.bias.zero_()
    return model


def qa_pipeline(model: Any, tokenizer: Any) -> Any:
    from transformers import pipeline

    return pipeline("question-answering", model=model, tokenizer=tokenizer, device="cpu")


@pytest.fixture(scope="module")
def hugging_face(tokenizer: Any) -> Any:
    """Answers "Hugging Face": starts on "hugging", ends on "face"."""
    return qa_pipeline(spotter(tokenizer, ["hugging"], ["face"]), tokenizer)


def assert_offsets(result: dict[str, Any], context: str) -> None:
    assert sorted(result) == ["answer", "end", "score", "start"]
    assert context[result["start"] : result["end"]] == result["answer"]
    # Spans that map to the same text add up (as in v4): float rounding can pass 1 by a hair.
    assert isinstance(result["score"], float) and 0.0 <= result["score"] <= 1.0 + 1e-6


def test_course_snippet_runs_unchanged_with_a_local_model(qa_dir: Path) -> None:
    from transformers import pipeline

    question_answerer = pipeline("question-answering", model=str(qa_dir))
    result = question_answerer(
        question="Where do I work?", context="My name is Sylvain and I work at Hugging Face in Brooklyn"
    )
    assert type(question_answerer).__module__ == "pipelab.pipelines.question_answering"
    assert_offsets(result, COURSE_CONTEXT)
    json.dumps(result)  # plain Python types only


def test_spotter_finds_the_course_answer_with_the_course_offsets(hugging_face: Any) -> None:
    result = hugging_face(question=COURSE_QUESTION, context=COURSE_CONTEXT)
    assert result["answer"] == "Hugging Face"
    assert (result["start"], result["end"]) == (33, 45)  # what the course shows
    assert result["score"] > 0.99


def test_top_k_one_gives_a_dict_and_more_a_ranked_list(hugging_face: Any) -> None:
    single = hugging_face(question=COURSE_QUESTION, context=COURSE_CONTEXT, top_k=1)
    ranked = hugging_face(question=COURSE_QUESTION, context=COURSE_CONTEXT, top_k=3)
    assert isinstance(single, dict)
    assert isinstance(ranked, list) and len(ranked) == 3
    assert ranked[0] == single
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert len({r["answer"] for r in ranked}) == 3
    for result in ranked:
        assert_offsets(result, COURSE_CONTEXT)
    json.dumps(ranked)


def test_long_context_is_split_into_overlapping_windows(hugging_face: Any) -> None:
    context = FILLER * 12 + "Sylvain works at Hugging Face in Brooklyn."
    windows = list(
        hugging_face.preprocess({"question": COURSE_QUESTION, "context": context}, max_seq_len=64, doc_stride=16)
    )
    assert len(windows) > 3
    assert [w["is_last"] for w in windows] == [False] * (len(windows) - 1) + [True]
    assert all(w["input_ids"].shape[1] <= 64 for w in windows)
    # Consecutive windows share doc_stride context tokens.
    first, second = (w["encoding"] for w in windows[:2])
    first_context = [t for t, s in zip(first.ids, first.sequence_ids, strict=True) if s == 1]
    second_context = [t for t, s in zip(second.ids, second.sequence_ids, strict=True) if s == 1]
    assert first_context[-16:] == second_context[:16]


def test_best_span_across_windows_wins_with_exact_character_offsets(hugging_face: Any) -> None:
    context = FILLER * 12 + "Sylvain works at Hugging Face in Brooklyn. " + FILLER * 3
    result = hugging_face(question=COURSE_QUESTION, context=context, max_seq_len=64, doc_stride=16)
    assert result["answer"] == "Hugging Face"
    assert result["start"] == context.index("Hugging Face")
    assert_offsets(result, context)


def test_default_window_fits_a_short_context_in_one_piece(hugging_face: Any) -> None:
    windows = list(hugging_face.preprocess({"question": COURSE_QUESTION, "context": COURSE_CONTEXT}))
    assert len(windows) == 1


def test_max_answer_len_bounds_the_span(tokenizer: Any) -> None:
    # Start on "sylvain", end on "brooklyn": a 10-token span.
    pipe = qa_pipeline(spotter(tokenizer, ["sylvain"], ["brooklyn"]), tokenizer)
    full = pipe(question=COURSE_QUESTION, context=COURSE_CONTEXT)
    assert full["answer"] == "Sylvain and I work at Hugging Face in Brooklyn"
    short = pipe(question=COURSE_QUESTION, context=COURSE_CONTEXT, max_answer_len=3)
    assert len(tokenizer.tokenize(short["answer"])) <= 3
    assert_offsets(short, COURSE_CONTEXT)


def test_handle_impossible_answer_returns_the_empty_answer_when_it_scores_best(tokenizer: Any) -> None:
    pipe = qa_pipeline(spotter(tokenizer, ["hugging"], ["face"], null=True), tokenizer)
    context = "My name is Sylvain and I live in Paris."  # no "hugging face" here
    assert pipe(question=COURSE_QUESTION, context=context)["answer"] != ""
    impossible = pipe(question=COURSE_QUESTION, context=context, handle_impossible_answer=True)
    assert impossible == {"score": pytest.approx(impossible["score"]), "start": 0, "end": 0, "answer": ""}
    assert impossible["score"] > 0.9
    # Where the answer is there, it still beats the empty one.
    found = pipe(question=COURSE_QUESTION, context=COURSE_CONTEXT, handle_impossible_answer=True, top_k=2)
    assert [r["answer"] for r in found] == ["Hugging Face", ""]


def test_align_to_words_widens_a_span_to_whole_words(tokenizer: Any) -> None:
    word = "Huggingfaceland"
    pieces = tokenizer.tokenize(word)
    assert len(pieces) >= 3, pieces  # the test needs a word of several word pieces
    pipe = qa_pipeline(spotter(tokenizer, [pieces[0]], [pieces[1]]), tokenizer)
    context = f"I work at {word} in Brooklyn."
    aligned = pipe(question=COURSE_QUESTION, context=context)
    raw = pipe(question=COURSE_QUESTION, context=context, align_to_words=False)
    assert aligned["answer"] == word
    # Without alignment: exactly the characters of the two word pieces.
    assert raw["answer"] == word[: len(pieces[0]) + len(pieces[1].removeprefix("##"))]
    for result in (aligned, raw):
        assert_offsets(result, context)


def test_lists_and_dicts_are_batched_with_one_result_each(hugging_face: Any) -> None:
    contexts = [COURSE_CONTEXT, "Yesterday the Hugging Face team met in Paris.", FILLER * 8 + "Hugging Face!"]
    questions = ["Where do I work?", "Who met?", "Who?"]
    one_by_one = [hugging_face(question=q, context=c) for q, c in zip(questions, contexts, strict=True)]
    assert hugging_face(question=questions, context=contexts, batch_size=2) == one_by_one
    dicts = [{"question": q, "context": c} for q, c in zip(questions, contexts, strict=True)]
    assert hugging_face(dicts, batch_size=3) == one_by_one
    # One context for several questions.
    shared = hugging_face(question=questions, context=COURSE_CONTEXT)
    assert [r["answer"] for r in shared] == ["Hugging Face"] * 3
    # A list in gives a list out, even of one.
    assert hugging_face([dicts[0]]) == [one_by_one[0]]
    assert hugging_face(dicts[0]) == one_by_one[0]
    assert list(hugging_face(d for d in dicts)) == one_by_one


def test_left_padding_tokenizer_puts_the_context_first(qa_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qa_dir, padding_side="left")
    pipe = qa_pipeline(spotter(tokenizer, ["hugging"], ["face"]), tokenizer)
    question = "Is it Hugging Face?"  # the question holds the keywords too: they must not be answers
    window = next(iter(pipe.preprocess({"question": question, "context": COURSE_CONTEXT})))
    assert window["encoding"].sequence_ids[1] == 0  # context first
    result = pipe(question=question, context=COURSE_CONTEXT)
    assert (result["answer"], result["start"], result["end"]) == ("Hugging Face", 33, 45)
    # Left-padded batches shift token indices: offsets must still be right.
    contexts = [COURSE_CONTEXT, "Short: Hugging Face.", FILLER * 3 + "At Hugging Face in Brooklyn."]
    batched = pipe(question=[question] * 3, context=contexts, batch_size=3)
    for result, context in zip(batched, contexts, strict=True):
        assert result["answer"] == "Hugging Face"
        assert_offsets(result, context)


def test_max_question_len_cuts_long_questions(hugging_face: Any, tokenizer: Any) -> None:
    question = "Where " + "exactly " * 80 + "do I work?"
    cut = tokenizer.convert_tokens_to_string(tokenizer.tokenize(question)[:5])
    assert hugging_face._cut_question(question, 5) == (question[: len("Where exactly exactly exactly exactly")], 5)
    window = next(iter(hugging_face.preprocess({"question": question, "context": COURSE_CONTEXT}, max_question_len=5)))
    assert tokenizer.decode(window["input_ids"][0][1:6]) == cut.lower()
    assert hugging_face(question=question, context=COURSE_CONTEXT, max_question_len=5)["answer"] == "Hugging Face"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"question": "", "context": COURSE_CONTEXT}, "`question` is empty"),
        ({"question": COURSE_QUESTION, "context": "   "}, "`context` is empty"),
        ({"question": None, "context": COURSE_CONTEXT}, "`question` is missing"),
        ({"question": ["a", "b"], "context": ["c"]}, "2 questions and 1 contexts"),
        ({"question": COURSE_QUESTION, "context": COURSE_CONTEXT, "top_k": 0}, "top_k must be >= 1"),
        ({"question": COURSE_QUESTION, "context": COURSE_CONTEXT, "max_seq_len": 32, "doc_stride": 40}, "doc_stride"),
        ({"question": COURSE_QUESTION, "context": COURSE_CONTEXT, "max_answer_len": 0}, "max_answer_len"),
    ],
)
def test_bad_inputs_raise_a_value_error_that_says_what_to_do(
    hugging_face: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        hugging_face(**kwargs)


def test_dict_without_context_is_rejected(hugging_face: Any) -> None:
    with pytest.raises(ValueError, match=r"lacks \['context'\]"):
        hugging_face({"question": COURSE_QUESTION})


def test_question_too_long_for_the_window_is_a_value_error_not_a_tokenizer_panic(hugging_face: Any) -> None:
    question = "Where " + "exactly " * 40 + "do I work?"
    with pytest.raises(ValueError, match="tokens per context window"):
        hugging_face(question=question, context=FILLER * 10, max_seq_len=48, doc_stride=16, max_question_len=100)


def test_unknown_option_is_a_type_error(hugging_face: Any) -> None:
    with pytest.raises(TypeError, match="topk"):
        hugging_face(question=COURSE_QUESTION, context=COURSE_CONTEXT, topk=2)


def test_slow_tokenizer_is_refused_with_an_explanation(qa_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from transformers import AutoTokenizer, pipeline

    marian = parity_models.ensure_model("marian-fr-en", tmp_path_factory.getbasetemp() / "parity-models")
    slow = AutoTokenizer.from_pretrained(marian)
    assert not slow.is_fast
    with pytest.raises(ValueError, match="needs a fast tokenizer"):
        pipeline("question-answering", model=str(qa_dir), tokenizer=slow)


def test_saved_pipeline_reloads_as_a_plain_checkpoint(hugging_face: Any, tmp_path: Path) -> None:
    from transformers import pipeline

    hugging_face.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "custom_pipelines" not in config  # nothing that would demand trust_remote_code
    reloaded = pipeline("question-answering", model=str(tmp_path))
    assert reloaded(question=COURSE_QUESTION, context=COURSE_CONTEXT)["answer"] == "Hugging Face"
