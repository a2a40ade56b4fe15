"""Ablation statistics: small pure functions that turn pipeline outputs into numbers.

Each function returns a float (or a flat dict of floats) that a tracker can log as is. Text statistics split
on whitespace (``str.split()``), are case-sensitive and keep punctuation attached to words: they compare
outputs of the same pipeline under different settings, so a simple, tokenizer-independent unit is what keeps
two models with different vocabularies comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sacrebleu


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")


def distinct_n(texts: list[str], n: int) -> float:
    """Corpus-level distinct-n (Li et al., 2016): unique n-grams / total n-grams, pooled over all texts.

    N-grams are taken inside each text (never across two texts) over whitespace tokens. 1.0 means no n-gram
    occurs twice anywhere in the corpus; lower values mean less diverse output. Returns 0.0 when the texts
    contain no n-gram at all (every text shorter than ``n`` tokens).
    """
    _check_n(n)
    total = 0
    unique: set[tuple[str, ...]] = set()
    for text in texts:
        grams = _ngrams(text.split(), n)
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def repetition_rate(texts: list[str], n: int = 4) -> float:
    """Mean within-text repetition, seq-rep-n of Welleck et al. (2019), with n = 4 by default.

    For one text with n-gram list G (whitespace tokens), ``seq_rep_n = 1 - |set(G)| / |G|``: the fraction
    of its n-grams that repeat an earlier n-gram of the same text. The result is the mean over the texts that
    have at least one n-gram (shorter texts cannot repeat a 4-gram, so counting them as 0 would dilute the
    degeneration signal); 0.0 if no text has one. Unlike :func:`distinct_n`, repeats across different texts
    do not count: this measures looping inside an output, not diversity across outputs.
    """
    _check_n(n)
    rates = []
    for text in texts:
        grams = _ngrams(text.split(), n)
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def mean_length_tokens(texts: list[str]) -> float:
    """Mean number of whitespace tokens per text; 0.0 for an empty list."""
    if not texts:
        return 0.0
    return sum(len(text.split()) for text in texts) / len(texts)


def mean_token_logprob(model: Any, tokenizer: Any, prompt: str, continuation: str) -> float:
    """Mean natural-log probability per token of ``continuation`` given ``prompt`` under a causal LM.

    Prompt and continuation are tokenised separately and concatenated, so exactly the continuation's own
    tokens are scored (tokenising the joined string could merge tokens across the boundary). The prompt
    gets the tokenizer's special tokens (e.g. a BOS), the continuation none; put any separating space at the
    start of the continuation (``" world"``), as BPE vocabularies expect. An empty prompt falls back to the
    BOS token, since the first continuation token needs some context to be predicted from. Always <= 0.

    The model runs in eval mode (dropout off) under ``torch.no_grad``; its previous mode is restored.
    """
    import torch  # deferred: the text statistics above must not pay for importing torch

    prompt_ids: list[int] = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else []
    continuation_ids: list[int] = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not continuation_ids:
        raise ValueError("continuation tokenises to no token; nothing to score")
    if not prompt_ids:
        if tokenizer.bos_token_id is None:
            raise ValueError("empty prompt and the tokenizer has no BOS token to condition on")
        prompt_ids = [tokenizer.bos_token_id]

    input_ids = torch.tensor([prompt_ids + continuation_ids], device=model.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[0]
    finally:
        model.train(was_training)
    # Position t predicts token t + 1: the continuation's tokens are predicted by the positions just before.
    start = len(prompt_ids)
    predicting = logits[start - 1 : start - 1 + len(continuation_ids)].float()
    log_probs = torch.log_softmax(predicting, dim=-1)
    targets = torch.tensor(continuation_ids, device=log_probs.device)
    token_log_probs = log_probs.gather(1, targets[:, None]).squeeze(1)
    return float(token_log_probs.mean())


def entropy(scores: list[float]) -> float:
    """Shannon entropy in nats of ``scores`` renormalised to sum to 1.

    For e.g. the label scores of a zero-shot or text-classification call (which need not sum to 1 with
    ``multi_label`` or ``top_k`` truncation). ``0 * log 0`` counts as 0. Range ``[0, log(len(scores))]``:
    0 is a certain prediction, ``log(k)`` a uniform one over k labels.
    """
    if not scores:
        raise ValueError("entropy of an empty score list is undefined")
    arr = np.asarray(scores, dtype=np.float64)
    if np.any(arr < 0) or not np.all(np.isfinite(arr)):
        raise ValueError(f"scores must be finite and non-negative, got {scores}")
    total = arr.sum()
    if total == 0:
        raise ValueError("scores sum to 0: no distribution to renormalise")
    p = arr[arr > 0] / total
    # Written as sum p*log(1/p) so a certain prediction gives 0.0, not -0.0.
    return float(np.sum(p * np.log(1.0 / p)))


def compression_ratio(source: str, summary: str) -> float:
    """Whitespace words of ``summary`` divided by words of ``source``.

    Direction: summary over source, so smaller means more compression (0.25 = the summary is a quarter of the
    source's length) and a value above 1 flags a "summary" longer than its input.
    """
    source_words = len(source.split())
    if source_words == 0:
        raise ValueError("source has no words: compression ratio undefined")
    return len(summary.split()) / source_words


def _check_parallel(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no hypotheses to score")


def chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus-level chrF (sacrebleu defaults: character 1..6-grams, beta = 2, whitespace ignored), 0..100.

    One reference per hypothesis. Corpus-level means the n-gram counts of all sentences are summed before the
    score is computed, which is not the mean of sentence scores.
    """
    _check_parallel(hypotheses, references)
    return float(sacrebleu.corpus_chrf(hypotheses, [references]).score)


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus-level BLEU (sacrebleu defaults: 13a tokenisation, up to 4-grams, exponential smoothing), 0..100.

    One reference per hypothesis; counts and lengths are summed over the corpus before the geometric mean and
    brevity penalty are applied.
    """
    _check_parallel(hypotheses, references)
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def score_distribution(scores: list[float]) -> dict[str, float]:
    """Summary of a score sample, e.g. QA confidence on answerable vs unanswerable questions.

    Returns ``mean``, ``min``, ``max``, ``std`` (sample standard deviation, ``ddof=1``, 0.0 for one score, the
    same convention as the latency statistics) and ``n``.
    """
    if not scores:
        raise ValueError("score_distribution needs at least one score")
    arr = np.asarray(scores, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "n": float(arr.size),
    }


# Scripts written without spaces between words: a whitespace "token" there is a whole clause, so SQuAD's token
# F1 would be all-or-nothing. Their characters are tokens instead, as MLQA's evaluation does for Chinese ("mixed
# segmentation"). Character-level rather than the model's own tokenizer, so two models with different
# vocabularies are scored on the same units. Korean is written with spaces between words: not listed.
_UNSPACED_SCRIPTS = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
)
_ENGLISH_ARTICLES = frozenset({"a", "an", "the"})


def _unspaced(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _UNSPACED_SCRIPTS)


def answer_tokens(text: str) -> list[str]:
    """SQuAD's normalisation (lower case, no punctuation, no English articles), then mixed segmentation.

    Words of spaced scripts (Latin, Arabic, Cyrillic, Devanagari...) are whitespace tokens; each character of
    an unspaced script (Thai, CJK...) is a token of its own, with the combining marks that follow it (Thai vowel
    and tone marks). Marks are letters here, not punctuation, so Arabic harakat stay too.
    """
    import unicodedata

    cleaned = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text.lower())
    tokens: list[str] = []
    for word in cleaned.split():
        if word in _ENGLISH_ARTICLES:
            continue
        spaced, after_unspaced = "", False
        for ch in word:
            if not _unspaced(ch):
                spaced, after_unspaced = spaced + ch, False
                continue
            if spaced:
                tokens.append(spaced)
                spaced = ""
            if unicodedata.category(ch) in ("Mn", "Mc") and after_unspaced:
                tokens[-1] += ch  # a combining mark belongs to the character before it
            else:
                tokens.append(ch)
            after_unspaced = True
        if spaced:
            tokens.append(spaced)
    return tokens


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer (SQuAD EM), else 0.0."""
    got = answer_tokens(prediction)
    return float(any(got == answer_tokens(answer) for answer in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD's token-overlap F1 against the best gold answer, over :func:`answer_tokens` (characters in Thai)."""
    from collections import Counter

    got = answer_tokens(prediction)
    best = 0.0
    for answer in answers:
        gold = answer_tokens(answer)
        if not got or not gold:
            best = max(best, float(got == gold))
            continue
        common = sum((Counter(got) & Counter(gold)).values())
        if common:
            precision, recall = common / len(got), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best
