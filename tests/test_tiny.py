"""Tests for pipelab.tiny: every tiny family builds offline and runs through real transformers components."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from pipelab.tiny import FAMILIES, MARKER_FILE, build_tiny_model, tiny_spec_hash

transformers.utils.logging.disable_progress_bar()

COURSE_SENTENCE = "I've been waiting for a HuggingFace course my whole life."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """Build each family (default arguments) once per module, on first use."""
    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(family, root / family)
        return built[family]

    return get


def _assert_scores(items: list[dict], labels: set[str]) -> None:
    assert items
    for item in items:
        assert item["label"] in labels
        assert 0.0 <= float(item["score"]) <= 1.0


# ---------------------------------------------------------------------------------------------------------
# Pipelines, family by family
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["distilbert-seq-cls", "bert-seq-cls", "roberta-seq-cls"])
def test_text_classification(tiny, family: str) -> None:
    assert FAMILIES[family].task == "text-classification"
    classifier = transformers.pipeline("text-classification", model=str(tiny(family)))
    labels = set(FAMILIES[family].default_labels)
    out = classifier([COURSE_SENTENCE, "I hate this so much!"])
    assert len(out) == 2
    _assert_scores(out, labels)
    everything = classifier(COURSE_SENTENCE, top_k=None)
    assert {item["label"] for item in everything} == labels
    assert sum(item["score"] for item in everything) == pytest.approx(1.0, abs=1e-4)


def test_zero_shot_classification(tiny) -> None:
    directory = tiny("bart-seq-cls")
    config = transformers.AutoConfig.from_pretrained(directory)
    assert config.label2id == {"contradiction": 0, "neutral": 1, "entailment": 2}
    classifier = transformers.pipeline("zero-shot-classification", model=str(directory))
    candidates = ["education", "politics", "business"]
    out = classifier("This is a course about the Transformers library", candidate_labels=candidates)
    assert out["sequence"] == "This is a course about the Transformers library"
    assert sorted(out["labels"]) == sorted(candidates)
    assert sum(out["scores"]) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("family", ["gpt2-causal-lm", "llama-causal-lm"])
def test_text_generation(tiny, family: str) -> None:
    generator = transformers.pipeline("text-generation", model=str(tiny(family)))
    prompt = "In this course, we will teach you how to"
    out = generator(prompt, max_new_tokens=5, do_sample=False)
    assert len(out) == 1
    assert out[0]["generated_text"].startswith(prompt)
    new_ids = generator.tokenizer(out[0]["generated_text"][len(prompt) :], add_special_tokens=False)["input_ids"]
    assert len(new_ids) <= 10  # 5 new tokens; re-tokenising the decoded text may split a little differently


def test_gpt2_tokenizer_is_byte_level_bpe(tiny) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny("gpt2-causal-lm"))
    assert type(tokenizer).__name__ == "GPT2Tokenizer"
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == len(tokenizer) - 1  # last id, as 50256 in the real vocabulary
    assert 1000 <= len(tokenizer) <= 4100
    text = "Ünïcödé, emoji 🤗 and HuggingFace all encode without <unk>."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.model_max_length == 1024


def test_chat_template_generation(tiny, tmp_path: Path) -> None:
    directory = build_tiny_model("llama-causal-lm", tmp_path / "instruct", options={"chat_template": True})
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert tokenizer.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<|im_start|>system\n")
    assert rendered.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    generator = transformers.pipeline("text-generation", model=str(directory))
    out = generator(messages, max_new_tokens=5, do_sample=False)
    conversation = out[0]["generated_text"]
    assert conversation[: len(messages)] == messages
    assert conversation[-1]["role"] == "assistant"
    assert isinstance(conversation[-1]["content"], str)
    # The base model has no template: the chat option is what makes the -Instruct stand-in.
    assert transformers.AutoTokenizer.from_pretrained(tiny("llama-causal-lm")).chat_template is None


@pytest.mark.parametrize(("family", "mask"), [("roberta-masked-lm", "<mask>"), ("bert-masked-lm", "[MASK]")])
def test_fill_mask(tiny, family: str, mask: str) -> None:
    unmasker = transformers.pipeline("fill-mask", model=str(tiny(family)))
    assert unmasker.tokenizer.mask_token == mask
    out = unmasker(f"This course will teach you all about {unmasker.tokenizer.mask_token} models.", top_k=2)
    assert len(out) == 2
    for item in out:
        assert set(item) >= {"score", "token", "token_str", "sequence"}
        assert isinstance(item["token"], int)


def test_ner_simple_aggregation(tiny) -> None:
    ner = transformers.pipeline("ner", model=str(tiny("bert-token-cls")), aggregation_strategy="simple")
    sentence = "My name is Sylvain and I work at Hugging Face in Brooklyn."
    entities = ner(sentence)
    assert isinstance(entities, list)  # random weights: often empty, or a few junk entities
    for entity in entities:
        assert set(entity) == {"entity_group", "word", "score", "start", "end"}
        assert entity["entity_group"] in {"MISC", "PER", "ORG", "LOC"}
        assert 0 <= entity["start"] < entity["end"] <= len(sentence)
    # Without aggregation every token gets a CoNLL tag, which proves the label set and the offsets.
    tokens = ner(sentence, aggregation_strategy="none", ignore_labels=[])
    assert {token["entity"] for token in tokens} <= set(FAMILIES["bert-token-cls"].default_labels)
    assert all(sentence[token["start"] : token["end"]] for token in tokens)


def test_multilingual_ner_on_thai_and_arabic(tiny) -> None:
    ner = transformers.pipeline("ner", model=str(tiny("mbert-token-cls")), aggregation_strategy="simple")
    for sentence in ("ผมชื่อสมชาย ทำงานที่กรุงเทพ", "يعمل أحمد في شركة هاجينج فيس في باريس."):
        tokens = ner(sentence, aggregation_strategy="none", ignore_labels=[])
        assert {token["entity"] for token in tokens} <= set(FAMILIES["mbert-token-cls"].default_labels)
        assert all(sentence[token["start"] : token["end"]] for token in tokens)  # offsets into the text


def test_xlm_roberta_qa_maps_thai_offsets(tiny) -> None:
    directory = tiny("xlm-roberta-qa")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert type(tokenizer).__name__ == "XLMRobertaTokenizer"
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]  # fairseq layout
    assert tokenizer.convert_ids_to_tokens(len(tokenizer) - 1) == "<mask>"
    context = "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"
    inputs = tokenizer("เมืองหลวงของประเทศไทยคืออะไร", context, return_offsets_mapping=True, return_tensors="pt")
    offsets = inputs.pop("offset_mapping")
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(directory)
    with torch.no_grad():
        out = model(**inputs)
    assert out.start_logits.shape == (1, inputs["input_ids"].shape[1])
    spans = [offsets[0, i].tolist() for i, sid in enumerate(inputs.sequence_ids(0)) if sid == 1]
    # The pieces' offsets cover the Thai context, so an answer span maps back to its characters (a lone "▁"
    # piece shares the offsets of the character after it, as in the real XLM-RoBERTa tokenizer).
    covered = {i for a, b in spans for i in range(a, b)}
    assert covered == set(range(len(context))) and all(0 <= a <= b <= len(context) for a, b in spans)


def test_led_summarization_model_takes_inputs_beyond_bart_window(tiny) -> None:
    directory = tiny("led-seq2seq")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(directory)
    assert type(model).__name__ == "LEDForConditionalGeneration" and tokenizer.model_max_length == 16384
    inputs = tokenizer(" ".join(["The engineering course covered bridges and roads."] * 150), return_tensors="pt")
    assert inputs["input_ids"].shape[1] > 1024  # BART's window
    generated = model.generate(**inputs, max_new_tokens=5, min_length=0, num_beams=1)
    assert isinstance(tokenizer.decode(generated[0], skip_special_tokens=True), str)


def test_question_answering_model(tiny) -> None:
    directory = tiny("distilbert-qa")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(directory)
    context = "My name is Sylvain and I work at Hugging Face in Brooklyn"
    inputs = tokenizer("Where do I work?", context, return_offsets_mapping=True, return_tensors="pt")
    offsets = inputs.pop("offset_mapping")
    with torch.no_grad():
        out = model(**inputs)
    length = inputs["input_ids"].shape[1]
    assert out.start_logits.shape == (1, length)
    assert out.end_logits.shape == (1, length)
    # Offsets let a caller map the best span back to the context, as the v4 QA pipeline did.
    context_positions = [i for i, sid in enumerate(inputs.sequence_ids(0)) if sid == 1]
    start, end = offsets[0, context_positions[0]].tolist()
    assert context[start:end] == "my" or context[start:end] == "My"


def test_bart_summarization_model(tiny) -> None:
    directory = tiny("bart-seq2seq")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(directory)
    assert type(model).__name__ == "BartForConditionalGeneration"
    inputs = tokenizer("America has changed dramatically during recent years.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs, decoder_input_ids=inputs["input_ids"]).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.vocab_size)
    generated = model.generate(**inputs, max_new_tokens=5, min_length=0, num_beams=1)
    assert generated.shape[1] <= 1 + 5
    assert isinstance(tokenizer.decode(generated[0], skip_special_tokens=True), str)


def test_marian_translation_model(tiny) -> None:
    directory = tiny("marian-seq2seq")
    assert {"source.spm", "target.spm", "vocab.json"} <= {p.name for p in directory.iterdir()}
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert type(tokenizer).__name__ == "MarianTokenizer"
    text = "Ce cours est produit par Hugging Face."
    ids = tokenizer(text)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.unk_token_id not in ids
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(directory)
    assert type(model).__name__ == "MarianMTModel"
    generated = model.generate(**tokenizer([text], return_tensors="pt"), max_new_tokens=5)
    assert generated[0, 0].item() == model.config.decoder_start_token_id == tokenizer.pad_token_id
    assert isinstance(tokenizer.decode(generated[0], skip_special_tokens=True), str)


def test_marian_language_options(tmp_path: Path) -> None:
    directory = build_tiny_model("marian-seq2seq", tmp_path / "en-de", options={"src_lang": "en", "tgt_lang": "de"})
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert tokenizer.decode(tokenizer("Thank you very much.")["input_ids"], skip_special_tokens=True) == (
        "Thank you very much."
    )
    with pytest.raises(ValueError, match="src_lang"):
        build_tiny_model("marian-seq2seq", tmp_path / "bad", options={"src_lang": "xx"})
    with pytest.raises(ValueError, match="must differ"):
        tiny_spec_hash("marian-seq2seq", options={"src_lang": "en"})
    with pytest.raises(ValueError, match="M2M100 languages"):
        build_tiny_model("m2m100-seq2seq", tmp_path / "bad", options={"tgt_lang": "xx"})
    assert not (tmp_path / "bad").exists()


def test_m2m100_translation_model(tiny) -> None:
    directory = tiny("m2m100-seq2seq")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert type(tokenizer).__name__ == "M2M100Tokenizer"
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(directory)
    de = tokenizer.get_lang_id("de")
    assert tokenizer.convert_ids_to_tokens(de) == "__de__"
    assert de < model.config.vocab_size
    tokenizer.src_lang = "fr"
    inputs = tokenizer("Ce cours est produit par Hugging Face.", return_tensors="pt")
    assert inputs["input_ids"][0, 0].item() == tokenizer.get_lang_id("fr")
    generated = model.generate(**inputs, forced_bos_token_id=de, max_new_tokens=5)
    assert generated[0, 1].item() == de  # decoder start </s>, then the forced target language
    assert isinstance(tokenizer.decode(generated[0], skip_special_tokens=True), str)


def test_image_classification(tiny) -> None:
    from skimage import data

    classifier = transformers.pipeline("image-classification", model=str(tiny("vit-image-cls")))
    out = classifier(Image.fromarray(data.chelsea()), top_k=3)
    assert len(out) == 3
    _assert_scores(out, set(FAMILIES["vit-image-cls"].default_labels))
    assert {"tabby, tabby cat", "tiger cat", "Egyptian cat", "lynx, catamount"} <= set(classifier.model.config.label2id)


def test_image_classification_small_images(tmp_path: Path) -> None:
    from skimage import data

    directory = build_tiny_model("vit-image-cls", tmp_path / "vit32", options={"image_size": 32, "patch_size": 8})
    processor = transformers.AutoImageProcessor.from_pretrained(directory)
    pixels = processor(Image.fromarray(data.chelsea()), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    classifier = transformers.pipeline("image-classification", model=str(directory))
    assert len(classifier(Image.fromarray(data.chelsea()))) == 5


def _one_second_of_audio() -> np.ndarray:
    t = np.arange(16000, dtype=np.float32) / 16000
    return (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_speech_recognition(tiny) -> None:
    asr = transformers.pipeline("automatic-speech-recognition", model=str(tiny("whisper-seq2seq")))
    out = asr(_one_second_of_audio(), generate_kwargs={"max_new_tokens": 5})
    assert set(out) == {"text"}
    assert isinstance(out["text"], str)
    # Forced language and task go through lang_to_id / task_to_id of the generation config.
    out = asr(
        _one_second_of_audio(),
        generate_kwargs={"max_new_tokens": 5, "num_beams": 1, "language": "fr", "task": "translate"},
    )
    assert isinstance(out["text"], str)
    # Timestamps need the timestamp tokens right after <|notimestamps|>.
    out = asr(_one_second_of_audio(), return_timestamps=True, generate_kwargs={"max_new_tokens": 5, "num_beams": 1})
    assert isinstance(out["chunks"], list)


def test_whisper_components(tiny) -> None:
    directory = tiny("whisper-seq2seq")
    processor = transformers.AutoProcessor.from_pretrained(directory)
    assert type(processor).__name__ == "WhisperProcessor"
    tokenizer = processor.tokenizer
    model = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(directory)
    config, generation = model.config, model.generation_config
    features = processor.feature_extractor(_one_second_of_audio(), sampling_rate=16000, return_tensors="pt")
    assert features["input_features"].shape == (1, 80, 3000)
    assert config.max_source_positions * 2 == features["input_features"].shape[-1]
    for token in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>", "<|notimestamps|>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    assert generation.lang_to_id["<|de|>"] == tokenizer.convert_tokens_to_ids("<|de|>")
    assert generation.task_to_id["transcribe"] == tokenizer.convert_tokens_to_ids("<|transcribe|>")
    assert generation.no_timestamps_token_id == tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    assert generation.decoder_start_token_id == tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    assert tokenizer.pad_token == "<|endoftext|>"
    # Non-speech symbols are suppressed, but never the bare space token (begin_suppress_tokens' job).
    space = tokenizer.convert_tokens_to_ids("Ġ")
    assert generation.begin_suppress_tokens == [space, tokenizer.eos_token_id]
    assert space not in generation.suppress_tokens
    assert tokenizer.convert_tokens_to_ids("#") in generation.suppress_tokens
    # Timestamps <|0.00|> .. <|30.00|> follow <|notimestamps|>, which the decoder relies on.
    first, last = tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"])
    assert first == generation.no_timestamps_token_id + 1
    assert last == first + 1500 == len(tokenizer) - 1 == config.vocab_size - 1
    # The language token ids follow the tokenizer's own LANGUAGES order.
    prompt = tokenizer.get_decoder_prompt_ids(language="german", task="transcribe")
    assert [token for _, token in prompt] == tokenizer.convert_tokens_to_ids(
        ["<|de|>", "<|transcribe|>", "<|notimestamps|>"]
    )
    ids = tokenizer("I have a dream").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "I have a dream"


def test_whisper_large_v3_mel_bins(tmp_path: Path) -> None:
    directory = build_tiny_model("whisper-seq2seq", tmp_path / "v3", options={"num_mel_bins": 128})
    extractor = transformers.AutoFeatureExtractor.from_pretrained(directory)
    assert extractor.feature_size == 128
    assert transformers.AutoConfig.from_pretrained(directory).num_mel_bins == 128
    assert "<|yue|>" in transformers.AutoTokenizer.from_pretrained(directory).get_vocab()
    asr = transformers.pipeline("automatic-speech-recognition", model=str(directory))
    assert isinstance(asr(_one_second_of_audio(), generate_kwargs={"max_new_tokens": 3})["text"], str)


# ---------------------------------------------------------------------------------------------------------
# Loading through the Auto classes, tokenizer facts
# ---------------------------------------------------------------------------------------------------------

_AUTO_MODEL = {
    "distilbert-seq-cls": "AutoModelForSequenceClassification",
    "bert-seq-cls": "AutoModelForSequenceClassification",
    "roberta-seq-cls": "AutoModelForSequenceClassification",
    "bart-seq-cls": "AutoModelForSequenceClassification",
    "gpt2-causal-lm": "AutoModelForCausalLM",
    "llama-causal-lm": "AutoModelForCausalLM",
    "roberta-masked-lm": "AutoModelForMaskedLM",
    "bert-masked-lm": "AutoModelForMaskedLM",
    "bert-token-cls": "AutoModelForTokenClassification",
    "mbert-token-cls": "AutoModelForTokenClassification",
    "distilbert-qa": "AutoModelForQuestionAnswering",
    "xlm-roberta-qa": "AutoModelForQuestionAnswering",
    "bart-seq2seq": "AutoModelForSeq2SeqLM",
    "led-seq2seq": "AutoModelForSeq2SeqLM",
    "marian-seq2seq": "AutoModelForSeq2SeqLM",
    "m2m100-seq2seq": "AutoModelForSeq2SeqLM",
    "vit-image-cls": "AutoModelForImageClassification",
    "whisper-seq2seq": "AutoModelForSpeechSeq2Seq",
}


def test_every_family_is_covered() -> None:
    assert set(_AUTO_MODEL) == set(FAMILIES)
    for family in FAMILIES.values():
        assert family.description and str(family) == family.description


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_auto_classes_load(tiny, family: str) -> None:
    directory = tiny(family)
    assert (directory / "model.safetensors").is_file()
    model = getattr(transformers, _AUTO_MODEL[family]).from_pretrained(directory)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000  # tiny indeed
    if family == "vit-image-cls":
        processor = transformers.AutoImageProcessor.from_pretrained(directory)
        assert processor.size == {"height": 224, "width": 224}
        return
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    # Tokenizers built from scratch default to model_max_length ~1e30: every family sets a real one.
    assert 512 <= tokenizer.model_max_length <= 16384  # LED: 16,384 positions
    assert len(tokenizer) <= model.config.vocab_size
    if family == "whisper-seq2seq":
        assert transformers.AutoFeatureExtractor.from_pretrained(directory).sampling_rate == 16000


def test_bert_families_use_the_real_uncased_vocabulary(tiny) -> None:
    for family in ("distilbert-seq-cls", "bert-seq-cls", "bert-masked-lm", "bert-token-cls", "distilbert-qa"):
        tokenizer = transformers.AutoTokenizer.from_pretrained(tiny(family))
        vocab = tokenizer.get_vocab()
        assert len(vocab) == 30522
        assert "hugging" in vocab
        assert vocab["[PAD]"] == 0 and vocab["[MASK]"] == 103
        assert tokenizer.model_max_length == 512
    lowercasing = transformers.AutoTokenizer.from_pretrained(tiny("distilbert-seq-cls"))
    assert lowercasing.tokenize("Hugging Face") == ["hugging", "face"]
    # bert-masked-lm stands in for bert-base-cased: no lowercasing (capitalised words fall back to [UNK]).
    cased = transformers.AutoTokenizer.from_pretrained(tiny("bert-masked-lm"))
    assert cased.tokenize("hugging Face")[0] == "hugging"
    assert cased.tokenize("hugging Face")[1] != "face"


def test_roberta_and_bart_special_token_layout(tiny) -> None:
    for family in ("roberta-masked-lm", "bart-seq-cls"):
        tokenizer = transformers.AutoTokenizer.from_pretrained(tiny(family))
        ids = tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"])
        assert ids == [0, 1, 2, 3]
        assert tokenizer.mask_token_id == len(tokenizer) - 1


# ---------------------------------------------------------------------------------------------------------
# Determinism, marker, spec hash, errors
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_build_is_deterministic(tiny, tmp_path: Path, family: str) -> None:
    first = tiny(family)
    second = build_tiny_model(family, tmp_path / "again")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_seed_changes_weights(tiny, tmp_path: Path) -> None:
    other = build_tiny_model("gpt2-causal-lm", tmp_path / "seed1", seed=1)
    assert (other / "model.safetensors").read_bytes() != (tiny("gpt2-causal-lm") / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny("gpt2-causal-lm") / "tokenizer.json").read_bytes()


def test_build_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model("llama-causal-lm", tmp_path / "llama", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_marker_file(tiny) -> None:
    directory = tiny("bert-seq-cls")
    marker = json.loads((directory / MARKER_FILE).read_text())
    assert marker["family"] == "bert-seq-cls"
    assert marker["weights"] == "tiny-random"
    assert marker["labels"] == ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    assert marker["options"] == {"do_lower_case": True}
    assert marker["seed"] == 0
    assert marker["task"] == "text-classification"
    assert marker["spec_hash"] == tiny_spec_hash("bert-seq-cls")


def test_spec_hash() -> None:
    base = tiny_spec_hash("marian-seq2seq")
    assert base == tiny_spec_hash("marian-seq2seq", None, 0, {"src_lang": "fr", "tgt_lang": "en"})
    assert base != tiny_spec_hash("marian-seq2seq", seed=1)
    assert base != tiny_spec_hash("marian-seq2seq", options={"src_lang": "de"})
    assert tiny_spec_hash("bert-seq-cls") != tiny_spec_hash("bert-seq-cls", labels=["bad", "good"])
    assert len(base) == 64


def test_custom_labels(tmp_path: Path) -> None:
    directory = build_tiny_model("distilbert-seq-cls", tmp_path / "custom", labels=["bad", "ok", "good"])
    config = transformers.AutoConfig.from_pretrained(directory)
    assert config.id2label == {0: "bad", 1: "ok", 2: "good"}
    classifier = transformers.pipeline("text-classification", model=str(directory))
    _assert_scores(classifier("fine"), {"bad", "ok", "good"})


def test_unknown_family_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny family 'gpt5'") as excinfo:
        build_tiny_model("gpt5", tmp_path / "x")
    for family in FAMILIES:
        assert family in str(excinfo.value)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="valid families"):
        tiny_spec_hash("gpt5")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels are not accepted"):
        build_tiny_model("gpt2-causal-lm", tmp_path / "x", labels=["a"])
    with pytest.raises(ValueError, match="unknown option"):
        build_tiny_model("gpt2-causal-lm", tmp_path / "x", options={"hidden_size": 64})
    with pytest.raises(ValueError, match="num_mel_bins"):
        build_tiny_model("whisper-seq2seq", tmp_path / "x", options={"num_mel_bins": 64})
    with pytest.raises(ValueError, match="unique"):
        build_tiny_model("bert-seq-cls", tmp_path / "x", labels=["a", "a"])
    assert not (tmp_path / "x").exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory left behind


def test_rebuild_replaces_a_tiny_build_but_not_other_directories(tmp_path: Path) -> None:
    target = tmp_path / "model"
    build_tiny_model("gpt2-causal-lm", target, seed=1)
    (target / "stale.txt").write_text("left over")
    build_tiny_model("gpt2-causal-lm", target, seed=2)
    assert not (target / "stale.txt").exists()
    assert json.loads((target / MARKER_FILE).read_text())["seed"] == 2
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_tiny_model("gpt2-causal-lm", precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "precious"]
