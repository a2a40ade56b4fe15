"""Extractive question answering, as transformers 4.57's ``QuestionAnsweringPipeline`` did it.

The model scores every token of the context as a possible answer start and end; the best span (start <= end,
at most ``max_answer_len`` tokens) wins. A context longer than the model's window is split into overlapping
windows (``doc_stride`` tokens of overlap) and the best span across all windows wins. Spans are mapped back to
character offsets of the original context with the fast tokenizer's offsets, so ``context[start:end] == answer``.

The span scoring (``select_starts_ends``, ``decode_spans``) is transformers 4.57's arithmetic, kept operation
for operation so that scores agree with it to float precision.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES
from transformers.pipelines.base import ChunkPipeline

try:  # `datasets` is optional: a Dataset input streams like a generator.
    from torch.utils.data import Dataset
except ImportError:  # pragma: no cover - torch always ships it
    Dataset = None  # type: ignore[assignment,misc]

QAResult = dict[str, Any]


@dataclass(frozen=True)
class QuestionAnsweringExample:
    """One question asked about one context."""

    question: str
    context: str


def decode_spans(
    start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int, undesired_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``topk`` best (start, end) token spans of one window and their probabilities.

    ``start``/``end`` are per-token probabilities; a span's score is ``start[s] * end[e]``. Spans with
    ``e < s`` or longer than ``max_answer_len`` tokens are impossible; spans touching a token masked in
    ``undesired_tokens`` (0 = not part of the context) are dropped after the top-k selection, as in v4.
    """
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    # Upper triangle: end >= start; band of width max_answer_len: end - start < max_answer_len.
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    desired = np.isin(starts, undesired_tokens.nonzero()) & np.isin(ends, undesired_tokens.nonzero())
    starts = starts[desired]
    ends = ends[desired]
    return starts, ends, candidates[0, starts, ends]


def select_starts_ends(
    start: np.ndarray,
    end: np.ndarray,
    p_mask: np.ndarray,
    attention_mask: np.ndarray | None,
    min_null_score: float = 1000000,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    max_answer_len: int = 15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Softmax the start/end logits of one window over its context tokens and pick the best spans.

    Returns the spans' token starts, ends, probabilities and the updated null ("no answer") score, the
    probability of the span (CLS, CLS), which is kept over all windows as its minimum.
    """
    # 1 where a token may belong to an answer: context tokens (p_mask 0) that are not padding.
    undesired_tokens = np.abs(np.array(p_mask) - 1)
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    # Question, special and padding tokens must not take any probability mass in the softmax.
    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    # The CLS position is the "no answer" span, never a real one.
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


class QuestionAnsweringPipeline(ChunkPipeline):
    """Answer a question by extracting a span of a context (``pipeline("question-answering")``).

    Example::

        question_answerer = pipeline("question-answering", model=path)
        question_answerer(question="Where do I work?", context="My name is Sylvain and I work at Hugging Face")
        # distilbert-base-cased-distilled-squad: {'score': 0.6386, 'start': 33, 'end': 45, 'answer': 'Hugging Face'}

    Inputs: ``question=``/``context=`` keywords (strings, or lists: one context for many questions, or
    pairwise lists), a ``{"question", "context"}`` dict, a list of such dicts, or a generator/dataset of dicts.
    One question gives one result; a list gives a list of results. A result is a dict when ``top_k == 1`` and
    a list of dicts (best first) otherwise; each has ``score`` (a probability, plain float), ``start``/``end``
    (character offsets into the context) and ``answer`` (``context[start:end]``).

    Options (at construction or per call): ``top_k`` (1), ``doc_stride`` (min(max_seq_len // 2, 128)),
    ``max_answer_len`` (15 tokens), ``max_seq_len`` (min(model_max_length, 384) tokens per window),
    ``max_question_len`` (64 tokens; longer questions are cut), ``handle_impossible_answer`` (False: when
    True, the empty answer ``{"answer": "", "start": 0, "end": 0}`` competes with its own score),
    ``align_to_words`` (True: extend the span to whole words), ``padding`` ("do_not_pad").

    Needs a fast tokenizer (offsets). A tokenizer padding on the left gets the context first and the question
    second, as in transformers 4.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    default_input_names = "question,context"

    def __init__(self, model: Any, tokenizer: Any = None, task: str = "", **kwargs: Any) -> None:
        if tokenizer is None:
            raise ValueError(
                "question-answering needs the model's tokenizer: pass tokenizer=... or a model directory "
                "that contains one."
            )
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"question-answering needs a fast tokenizer (backed by the `tokenizers` library), but got "
                f"{type(tokenizer).__name__}, which cannot return character offsets: the pipeline maps answer "
                "tokens back to characters of the context with them. Use a model directory that has a "
                "tokenizer.json, or convert the tokenizer to a fast one and save it with save_pretrained()."
            )
        super().__init__(model=model, tokenizer=tokenizer, task=task, **kwargs)
        self.check_model_type(MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES)

    # --- inputs -----------------------------------------------------------------------------------------

    @staticmethod
    def create_sample(question: str | list[str], context: str | list[str]) -> Any:
        """One ``QuestionAnsweringExample``, or a list of them for lists of questions and contexts."""
        if isinstance(question, list):
            if isinstance(context, str):
                context = [context] * len(question)
            if len(question) != len(context):
                raise ValueError(
                    f"question-answering got {len(question)} questions and {len(context)} contexts: pass one "
                    "context for all questions, or exactly one context per question."
                )
            return [_example(q, c) for q, c in zip(question, context, strict=True)]
        return _example(question, context)

    def _sanitize_parameters(
        self,
        padding: Any = None,
        top_k: int | None = None,
        doc_stride: int | None = None,
        max_answer_len: int | None = None,
        max_seq_len: int | None = None,
        max_question_len: int | None = None,
        handle_impossible_answer: bool | None = None,
        align_to_words: bool | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise TypeError(
                f"question-answering got unexpected argument(s) {sorted(kwargs)}; it accepts question, context, "
                "top_k, doc_stride, max_answer_len, max_seq_len, max_question_len, handle_impossible_answer, "
                "align_to_words, padding, batch_size and num_workers."
            )
        preprocess_params: dict[str, Any] = {}
        if padding is not None:
            preprocess_params["padding"] = padding
        if doc_stride is not None:
            if doc_stride < 0:
                raise ValueError(f"doc_stride must be >= 0 (got {doc_stride})")
            preprocess_params["doc_stride"] = doc_stride
        if max_question_len is not None:
            if max_question_len < 1:
                raise ValueError(f"max_question_len must be >= 1 (got {max_question_len})")
            preprocess_params["max_question_len"] = max_question_len
        if max_seq_len is not None:
            if max_seq_len < 1:
                raise ValueError(f"max_seq_len must be >= 1 (got {max_seq_len})")
            preprocess_params["max_seq_len"] = max_seq_len

        postprocess_params: dict[str, Any] = {}
        if top_k is not None:
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1 (got {top_k})")
            postprocess_params["top_k"] = top_k
        if max_answer_len is not None:
            if max_answer_len < 1:
                raise ValueError(f"max_answer_len must be >= 1 (got {max_answer_len})")
            postprocess_params["max_answer_len"] = max_answer_len
        if handle_impossible_answer is not None:
            postprocess_params["handle_impossible_answer"] = handle_impossible_answer
        if align_to_words is not None:
            postprocess_params["align_to_words"] = align_to_words
        return preprocess_params, {}, postprocess_params

    def __call__(
        self, *args: Any, **kwargs: Any
    ) -> QAResult | list[QAResult] | list[QAResult | list[QAResult]] | Iterator[Any]:
        """Answer the question(s); see the class docstring for the accepted inputs and options."""
        inputs, single = _parse_inputs(args, kwargs)
        if single:
            return super().__call__(inputs[0], **kwargs)
        return super().__call__(inputs, **kwargs)

    # --- the four steps ---------------------------------------------------------------------------------

    def preprocess(
        self,
        example: QuestionAnsweringExample | dict[str, str],
        padding: Any = "do_not_pad",
        doc_stride: int | None = None,
        max_question_len: int = 64,
        max_seq_len: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Tokenize (question, context) into one or more overlapping windows, one model input each."""
        # Generators and datasets bypass __call__'s parsing: validate their items here.
        if not isinstance(example, QuestionAnsweringExample):
            example = _normalize(example)
        if max_seq_len is None:
            max_seq_len = min(self.tokenizer.model_max_length, 384)
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if doc_stride > max_seq_len:
            raise ValueError(
                f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len}): windows cannot overlap by "
                "more than their own length; lower doc_stride or raise max_seq_len."
            )

        question, question_tokens = self._cut_question(example.question, max_question_len)
        self._check_window_room(question_tokens, example.context, max_seq_len, doc_stride)
        # Right-padding tokenizers see "question, context"; left-padding ones "context, question", so that the
        # side that gets truncated into windows is always the context.
        question_first = self.tokenizer.padding_side == "right"
        encoded = self.tokenizer(
            text=question if question_first else example.context,
            text_pair=example.context if question_first else question,
            padding=padding,
            truncation="only_second" if question_first else "only_first",
            max_length=max_seq_len,
            stride=doc_stride,
            return_token_type_ids=True,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        num_spans = len(encoded["input_ids"])
        context_sequence = 1 if question_first else 0
        model_input_names = [*self.tokenizer.model_input_names, "p_mask", "token_type_ids"]
        for span_idx in range(num_spans):
            input_ids = encoded["input_ids"][span_idx]
            # p_mask: 1 for tokens that cannot be part of an answer (question, special tokens), 0 for context.
            p_mask = [int(seq_id != context_sequence) for seq_id in encoded.sequence_ids(span_idx)]
            # Keep CLS selectable: models trained on SQuAD 2.0 point at it for "no answer".
            if self.tokenizer.cls_token_id is not None:
                for cls_index in np.nonzero(np.array(input_ids) == self.tokenizer.cls_token_id)[0]:
                    p_mask[cls_index] = 0
            features: dict[str, Any] = {"input_ids": input_ids, "p_mask": p_mask}
            for key in ("attention_mask", "token_type_ids"):
                if key in encoded:
                    features[key] = encoded[key][span_idx]
            tensors = {
                key: torch.tensor(value, dtype=torch.long).unsqueeze(0)
                for key, value in features.items()
                if key in model_input_names
            }
            yield {
                "example": example,
                "is_last": span_idx == num_spans - 1,
                "encoding": encoded[span_idx],
                **tensors,
            }

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        model_inputs = {key: inputs[key] for key in self.tokenizer.model_input_names}
        # Some QA heads sit on models with a cache; a single forward pass has no use for it.
        if "use_cache" in inspect.signature(self.model.forward).parameters:
            model_inputs["use_cache"] = False
        output = self.model(**model_inputs)
        if isinstance(output, dict):
            start, end = output["start_logits"], output["end_logits"]
        else:
            start, end = output[:2]
        return {"start": start, "end": end, **inputs}

    def postprocess(
        self,
        model_outputs: list[dict[str, Any]],
        top_k: int = 1,
        handle_impossible_answer: bool = False,
        max_answer_len: int = 15,
        align_to_words: bool = True,
    ) -> QAResult | list[QAResult]:
        """Best spans over all windows of one example, as character offsets into its context."""
        min_null_score = 1000000.0  # large and positive: any real null score is smaller
        answers: list[QAResult] = []
        question_first = self.tokenizer.padding_side == "right"
        sequence_index = 1 if question_first else 0
        for output in model_outputs:
            start_logits = output["start"].to(torch.float32).numpy()
            end_logits = output["end"].to(torch.float32).numpy()
            example: QuestionAnsweringExample = output["example"]
            attention_mask = output["attention_mask"].numpy() if output.get("attention_mask") is not None else None
            # Aligning to words can merge candidates: decode extra ones so that top_k survive.
            pre_topk = top_k * 2 + 10 if align_to_words else top_k
            starts, ends, scores, min_null_score = select_starts_ends(
                start_logits,
                end_logits,
                output["p_mask"].numpy(),
                attention_mask,
                min_null_score,
                pre_topk,
                handle_impossible_answer,
                max_answer_len,
            )
            encoding = output["encoding"]
            # The encoding is unpadded; a batch padded on the left shifts every token index.
            if self.tokenizer.padding_side == "left":
                offset = int((output["input_ids"] == self.tokenizer.pad_token_id).numpy().sum())
            else:
                offset = 0
            for s, e, score in zip(starts, ends, scores, strict=True):
                start_index, end_index = self.get_indices(
                    encoding, int(s) - offset, int(e) - offset, sequence_index, align_to_words
                )
                text = example.context[start_index:end_index]
                # The same text found again (another window, another case) adds up, as in v4.
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": start_index, "end": end_index, "answer": text})

        if handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda answer: answer["score"], reverse=True)[:top_k]
        if top_k == 1 and answers:
            return answers[0]
        return answers

    # --- helpers ----------------------------------------------------------------------------------------

    def get_indices(self, encoding: Any, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
        """Character span of tokens ``s..e``; with ``align_to_words``, widened to the words containing them."""
        if align_to_words:
            try:
                start_word = encoding.token_to_word(s)
                end_word = encoding.token_to_word(e)
                start_index = encoding.word_to_chars(start_word, sequence_index=sequence_index)[0]
                end_index = encoding.word_to_chars(end_word, sequence_index=sequence_index)[1]
                return int(start_index), int(end_index)
            except Exception:
                # Some tokenizers have no notion of words (token_to_word gives None): fall back to offsets.
                pass
        return int(encoding.offsets[s][0]), int(encoding.offsets[e][1])

    def _cut_question(self, question: str, max_question_len: int) -> tuple[str, int]:
        """The question cut after its ``max_question_len``-th token (character-exact, via offsets), and its length."""
        offsets = self.tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) <= max_question_len:
            return question, len(offsets)
        return question[: offsets[max_question_len - 1][1]], max_question_len

    def _check_window_room(self, question_tokens: int, context: str, max_seq_len: int, doc_stride: int) -> None:
        """Explain, as a ValueError, the case where the tokenizer would panic while cutting windows.

        Windows overlap by ``doc_stride`` tokens, so each must hold more than ``doc_stride`` context tokens;
        the `tokenizers` library aborts with a PanicException (not even an Exception) otherwise.
        """
        room = max_seq_len - question_tokens - self.tokenizer.num_special_tokens_to_add(pair=True)
        if room > doc_stride:
            return
        context_tokens = len(self.tokenizer(context, add_special_tokens=False)["input_ids"])
        if room > 0 and context_tokens <= room:
            return  # fits in one window: nothing to cut
        raise ValueError(
            f"question-answering: with max_seq_len={max_seq_len}, the question ({question_tokens} tokens) and the "
            f"special tokens leave {max(room, 0)} tokens per context window, but a context of {context_tokens} "
            f"tokens must be cut into windows of more than doc_stride={doc_stride} tokens. Use a shorter "
            "question (or a smaller max_question_len), a smaller doc_stride, or a larger max_seq_len."
        )


def _example(question: Any, context: Any) -> QuestionAnsweringExample:
    """Validate one (question, context) pair."""
    for name, value in (("question", question), ("context", context)):
        if value is None:
            raise ValueError(f"question-answering: `{name}` is None; pass a non-empty string.")
        if not isinstance(value, str):
            raise ValueError(f"question-answering: `{name}` must be a string, got {type(value).__name__}.")
        if not value.strip():
            raise ValueError(
                f"question-answering: `{name}` is empty; pass a non-empty string, e.g. "
                "pipe(question='Where do I work?', context='My name is Sylvain and I work at Hugging Face').",
            )
    return QuestionAnsweringExample(question=question, context=context)


def _normalize(item: Any) -> QuestionAnsweringExample:
    """A dict with ``question`` and ``context`` keys (or an example) -> a validated example."""
    if isinstance(item, QuestionAnsweringExample):
        return _example(item.question, item.context)
    if isinstance(item, dict):
        missing = [key for key in ("question", "context") if key not in item]
        if missing:
            raise ValueError(
                f"question-answering: input dict lacks {missing}; pass {{'question': ..., 'context': ...}}."
            )
        return _example(item["question"], item["context"])
    raise ValueError(
        f"question-answering: cannot use an input of type {type(item).__name__}; pass question=... and "
        "context=... keywords, a {'question': ..., 'context': ...} dict, or a list of such dicts."
    )


def _parse_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, bool]:
    """Inputs of ``__call__`` -> (examples or a stream, whether one single result is expected).

    Pops ``question``/``context`` from ``kwargs`` so that only options remain there.
    """
    question = kwargs.pop("question", None)
    context = kwargs.pop("context", None)
    if args:
        if question is not None or context is not None:
            raise ValueError("question-answering: pass inputs either positionally or as question=/context=, not both.")
        if len(args) == 2 and all(isinstance(arg, str) for arg in args):
            return [_example(args[0], args[1])], True
        if len(args) > 1:
            return [_normalize(arg) for arg in args], False
        inputs = args[0]
        stream_types: tuple[type, ...] = (types.GeneratorType,) + ((Dataset,) if Dataset is not None else ())
        if isinstance(inputs, stream_types):
            return inputs, False  # validated item by item in preprocess
        if isinstance(inputs, (dict, QuestionAnsweringExample)):
            return [_normalize(inputs)], True
        if isinstance(inputs, Iterable) and not isinstance(inputs, str):
            return [_normalize(item) for item in inputs], False
        raise ValueError(
            f"question-answering: cannot use an input of type {type(inputs).__name__}; pass question=... and "
            "context=..., a dict, or a list of dicts."
        )
    if question is None or context is None:
        missing = "question" if question is None else "context"
        raise ValueError(f"question-answering: `{missing}` is missing; call pipe(question='...', context='...').")
    if isinstance(question, list):
        return QuestionAnsweringPipeline.create_sample(question, context), False
    if isinstance(context, list):
        raise ValueError(
            "question-answering: got one question and a list of contexts; pass a list of questions too "
            "(one per context)."
        )
    return [_example(question, context)], True
