"""Tests for pipelab.metrics against values worked out by hand (the working is in the comments)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pipelab.metrics import (
    bleu,
    chrf,
    compression_ratio,
    distinct_n,
    entropy,
    mean_length_tokens,
    mean_token_logprob,
    repetition_rate,
    score_distribution,
)
from pipelab.tiny import build_tiny_model

TinyLM = tuple[PreTrainedModel, PreTrainedTokenizerBase]

# --- text statistics ----------------------------------------------------------------------------------------


def test_distinct_n_pools_ngrams_over_texts_without_crossing_text_boundaries() -> None:
    texts = ["a b a b", "a b c"]
    # Unigrams: a b a b a b c -> 7 in total, {a, b, c} unique.
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    # Bigrams: (a b)(b a)(a b) + (a b)(b c) -> 5 in total, {ab, ba, bc} unique; "b a" across the two
    # texts is not a bigram.
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)


def test_distinct_n_is_zero_when_no_text_has_an_ngram() -> None:
    assert distinct_n(["a b", ""], 3) == 0.0
    assert distinct_n([], 1) == 0.0


def test_distinct_n_rejects_n_below_one() -> None:
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_repetition_rate_is_mean_seq_rep_4_over_texts_long_enough_to_repeat() -> None:
    looping = "a b c d a b c d"  # 4-grams abcd bcda cdab dabc abcd: 5 in total, 4 unique -> 1 - 4/5 = 0.2
    fresh = "w x y z"  # one 4-gram, no repeat -> 0.0
    too_short = "a a a"  # no 4-gram: left out of the mean instead of counting as 0
    assert repetition_rate([looping]) == pytest.approx(0.2)
    assert repetition_rate([looping, fresh, too_short]) == pytest.approx((0.2 + 0.0) / 2)
    assert repetition_rate([too_short]) == 0.0


def test_repetition_rate_ignores_repeats_across_texts() -> None:
    assert repetition_rate(["a b c d", "a b c d"]) == 0.0
    assert distinct_n(["a b c d", "a b c d"], 4) == pytest.approx(1 / 2)


def test_repetition_rate_uses_the_requested_order() -> None:
    # Bigrams of "a a a": (a a)(a a): 2 in total, 1 unique -> 0.5.
    assert repetition_rate(["a a a"], n=2) == pytest.approx(0.5)


def test_mean_length_tokens_counts_whitespace_tokens() -> None:
    assert mean_length_tokens(["a b c", "d", ""]) == pytest.approx(4 / 3)
    assert mean_length_tokens(["  spaced   out\ttext\n"]) == 3.0
    assert mean_length_tokens([]) == 0.0


# --- score statistics ---------------------------------------------------------------------------------------


def test_entropy_is_in_nats_of_renormalised_scores() -> None:
    assert entropy([0.5, 0.5]) == pytest.approx(math.log(2))
    # p = [1/4, 1/4, 1/2]: 2 * (1/4) ln 4 + (1/2) ln 2 = ln 2 + (1/2) ln 2.
    assert entropy([1, 1, 2]) == pytest.approx(1.5 * math.log(2))
    # Renormalisation: unnormalised scores give the entropy of their proportions.
    assert entropy([2.0, 2.0]) == pytest.approx(math.log(2))


def test_entropy_of_a_certain_prediction_is_zero() -> None:
    assert entropy([1.0, 0.0, 0.0]) == 0.0
    assert entropy([0.3]) == 0.0


@pytest.mark.parametrize("scores", [[], [0.0, 0.0], [0.5, -0.1], [float("nan"), 1.0]])
def test_entropy_rejects_scores_that_are_no_distribution(scores: list[float]) -> None:
    with pytest.raises(ValueError):
        entropy(scores)


def test_compression_ratio_is_summary_words_over_source_words() -> None:
    assert compression_ratio("one two three four", "one two") == pytest.approx(0.5)
    assert compression_ratio("short", "a longer summary") == pytest.approx(3.0)
    with pytest.raises(ValueError):
        compression_ratio("   ", "anything")


def test_score_distribution_summarises_with_sample_std() -> None:
    summary = score_distribution([0.2, 0.4, 0.9])
    # mean 0.5; deviations -0.3, -0.1, 0.4: squares sum to 0.26, sample variance 0.26 / 2 = 0.13.
    assert summary == pytest.approx({"mean": 0.5, "min": 0.2, "max": 0.9, "std": math.sqrt(0.13), "n": 3.0})
    assert score_distribution([0.7])["std"] == 0.0
    with pytest.raises(ValueError):
        score_distribution([])


# --- chrF and BLEU ------------------------------------------------------------------------------------------


def _chrf_from_counts(hyp: list[int], ref: list[int], match: list[int], beta: int = 2) -> float:
    """chrF as sacrebleu defines it: P and R averaged over the 6 character orders, then F-beta, times 100."""
    precision = sum(Fraction(m, h) for m, h in zip(match, hyp, strict=True)) / 6
    recall = sum(Fraction(m, r) for m, r in zip(match, ref, strict=True)) / 6
    return float(100 * (1 + beta**2) * precision * recall / (beta**2 * precision + recall))


def test_chrf_of_identical_and_disjoint_text() -> None:
    assert chrf(["kitten"], ["kitten"]) == pytest.approx(100.0)
    assert chrf(["aaaaaa"], ["bbbbbb"]) == pytest.approx(0.0)


def test_chrf_matches_hand_count_when_precision_equals_recall() -> None:
    # "abcdefg" vs "abcdefh": order n has 8 - n n-grams on each side, 7 - n of them shared, so
    # P_n = R_n = (7 - n) / (8 - n) and F-beta is just that mean: (6/7 + 5/6 + 4/5 + 3/4 + 2/3 + 1/2) / 6.
    expected = 100 * (6 / 7 + 5 / 6 + 4 / 5 + 3 / 4 + 2 / 3 + 1 / 2) / 6
    assert chrf(["abcdefg"], ["abcdefh"]) == pytest.approx(expected)
    assert expected == pytest.approx(73.452, abs=1e-3)


def test_chrf_weights_recall_twice_as_much_as_precision() -> None:
    # "abcdef" vs "abcdefgh": every hypothesis n-gram is in the reference (P = 1), order n has
    # 7 - n hypothesis and 9 - n reference n-grams. F2 = 5 P R / (4 P + R) with R the mean recall.
    orders = range(1, 7)
    expected = _chrf_from_counts(
        hyp=[7 - n for n in orders], ref=[9 - n for n in orders], match=[7 - n for n in orders]
    )
    assert chrf(["abcdef"], ["abcdefgh"]) == pytest.approx(expected)
    # The same pair the other way round swaps P and R, and beta = 2 makes that score higher.
    assert chrf(["abcdefgh"], ["abcdef"]) > chrf(["abcdef"], ["abcdefgh"])


def test_chrf_is_corpus_level_summing_counts_not_averaging_sentences() -> None:
    # Counts of the two pairs above, summed per order n: hypotheses (8-n)+(7-n), references (8-n)+(9-n),
    # matches (7-n)+(7-n).
    orders = range(1, 7)
    expected = _chrf_from_counts(
        hyp=[15 - 2 * n for n in orders], ref=[17 - 2 * n for n in orders], match=[14 - 2 * n for n in orders]
    )
    corpus = chrf(["abcdefg", "abcdef"], ["abcdefh", "abcdefgh"])
    assert corpus == pytest.approx(expected)
    sentence_mean = (chrf(["abcdefg"], ["abcdefh"]) + chrf(["abcdef"], ["abcdefgh"])) / 2
    assert corpus != pytest.approx(sentence_mean)


def test_bleu_matches_hand_computed_ngram_precisions() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (6 tokens each, brevity penalty 1):
    # clipped precisions 5/6 (the, cat, sat, on, mat), 3/5, 2/4, 1/3; all non-zero, so no smoothing applies
    # and BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4).
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected)
    assert expected == pytest.approx(53.728, abs=1e-3)
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)


def test_corpus_scores_reject_mismatched_or_empty_input() -> None:
    for metric in (chrf, bleu):
        with pytest.raises(ValueError):
            metric(["one", "two"], ["one"])
        with pytest.raises(ValueError):
            metric([], [])


# --- mean_token_logprob -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    """The project's tiny random GPT-2 (dropout 0.1 as in GPT2Config) and its trained byte-level BPE."""
    model_dir = build_tiny_model("gpt2-causal-lm", tmp_path_factory.mktemp("tiny") / "gpt2")
    return AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)


def _hand_mean_logprob(model: PreTrainedModel, context_ids: list[int], continuation_ids: list[int]) -> float:
    """log p(token) = logit - log(sum(exp(logits))), in plain Python floats from the raw logits."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context_ids + continuation_ids])).logits[0].tolist()
    total = 0.0
    for offset, token in enumerate(continuation_ids):
        row = logits[len(context_ids) - 1 + offset]  # the position before a token predicts it
        total += row[token] - math.log(sum(math.exp(x) for x in row))
    return total / len(continuation_ids)


def test_mean_token_logprob_equals_hand_computation_for_a_two_token_continuation(
    tiny_gpt2: TinyLM,
) -> None:
    model, tokenizer = tiny_gpt2
    prompt_ids = tokenizer("The cat sat on")["input_ids"]
    continuation_ids = tokenizer(" the mat", add_special_tokens=False)["input_ids"]
    assert len(continuation_ids) == 2  # " the" and " mat" in the tiny BPE

    value = mean_token_logprob(model, tokenizer, "The cat sat on", " the mat")

    assert value <= 0
    assert value == pytest.approx(_hand_mean_logprob(model, prompt_ids, continuation_ids), abs=1e-5)


def test_mean_token_logprob_conditions_an_empty_prompt_on_bos(
    tiny_gpt2: TinyLM,
) -> None:
    model, tokenizer = tiny_gpt2
    continuation_ids = tokenizer("ab", add_special_tokens=False)["input_ids"]
    expected = _hand_mean_logprob(model, [tokenizer.bos_token_id], continuation_ids)
    assert mean_token_logprob(model, tokenizer, "", "ab") == pytest.approx(expected, abs=1e-5)


def test_mean_token_logprob_scores_without_dropout_and_restores_training_mode(
    tiny_gpt2: TinyLM,
) -> None:
    model, tokenizer = tiny_gpt2
    eval_value = mean_token_logprob(model, tokenizer, "hello", " world")
    model.train()
    try:
        # Dropout (p = 0.1 in GPT2Config) would make repeated training-mode scores differ.
        train_values = {mean_token_logprob(model, tokenizer, "hello", " world") for _ in range(3)}
        assert model.training
    finally:
        model.eval()
    assert train_values == {eval_value}


def test_mean_token_logprob_rejects_an_empty_continuation(
    tiny_gpt2: TinyLM,
) -> None:
    model, tokenizer = tiny_gpt2
    with pytest.raises(ValueError, match="continuation"):
        mean_token_logprob(model, tokenizer, "hello", "")
