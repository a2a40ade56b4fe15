"""pipelab's summarization, translation and text2text-generation pipelines: options, prefixes, languages."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import pipelab  # noqa: F401  (registers the pipelines)

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "parity"))
import parity_models  # noqa: E402

LONG_TEXT = (
    "America has changed dramatically during recent years. Not only has the number of graduates in traditional "
    "engineering disciplines such as mechanical, civil, electrical, chemical, and aeronautical engineering "
    "declined, but in most of the premier American universities engineering curricula now concentrate on and "
    "encourage largely the study of engineering science."
)
GREEDY = {"num_beams": 1, "do_sample": False}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.getbasetemp() / "parity-models"
    return lambda name: parity_models.ensure_model(name, base)


def _pipeline(task: str, model: Any, **kwargs: Any) -> Any:
    from transformers import pipeline

    return pipeline(task, model=str(model) if isinstance(model, Path) else model, device="cpu", **kwargs)


def _with_short_generation(source: Path, out: Path) -> Path:
    """A copy whose generation config stops at 20 tokens, so that calls with no options stay fast."""
    shutil.copytree(source, out)
    config_path = out / "generation_config.json"
    config = json.loads(config_path.read_text())
    config.update(max_length=20, min_length=0)
    config_path.write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def summarizer(models: Any) -> Any:
    return _pipeline("summarization", models("bart-seq2seq"))


@pytest.fixture(scope="module")
def t5_summarizer(models: Any) -> Any:
    return _pipeline("summarization", models("t5"))


@pytest.fixture(scope="module")
def m2m100(models: Any) -> Any:
    return _pipeline("translation", models("m2m100"))


def _ids(record: dict[str, Any], name: str) -> list[int]:
    return record[f"{name}_token_ids"].tolist()


# --- the course's snippets ----------------------------------------------------------------------------------


def test_course_summarization_snippet_runs_unchanged(models: Any, tmp_path: Path) -> None:
    from transformers import pipeline

    p = str(_with_short_generation(models("bart-seq2seq"), tmp_path / "bart"))
    long_text = LONG_TEXT
    summarizer = pipeline("summarization", model=p)
    result = summarizer(long_text)
    assert type(summarizer).__name__ == "SummarizationPipeline"
    assert isinstance(result, list) and len(result) == 1
    assert list(result[0]) == ["summary_text"] and isinstance(result[0]["summary_text"], str)
    json.dumps(result)


def test_course_translation_snippet_runs_unchanged(models: Any, tmp_path: Path) -> None:
    from transformers import pipeline

    p = str(_with_short_generation(models("marian-fr-en"), tmp_path / "marian"))
    translator = pipeline("translation", model=p)
    result = translator("Ce cours est produit par Hugging Face.")
    assert type(translator).__name__ == "TranslationPipeline"
    assert list(result[0]) == ["translation_text"] and isinstance(result[0]["translation_text"], str)


# --- generation lengths -------------------------------------------------------------------------------------


def test_min_length_and_max_length_bound_the_summary(summarizer: Any) -> None:
    # The model's own settings (min_length=56, max_length=142) give way to the caller's.
    record = summarizer(LONG_TEXT, min_length=12, max_length=14, return_tensors=True, **GREEDY)[0]
    assert 12 <= len(_ids(record, "summary")) <= 14


def test_max_new_tokens_beats_the_models_max_length(summarizer: Any) -> None:
    # The model's generation config says max_length=142, min_length=56.
    record = summarizer(LONG_TEXT, max_new_tokens=5, min_length=0, return_tensors=True, **GREEDY)[0]
    assert len(_ids(record, "summary")) <= 1 + 5  # decoder start token + 5 new ones


def test_max_length_is_honoured_when_the_model_sets_no_length(t5_summarizer: Any) -> None:
    # transformers 4 kept its own max_new_tokens=256 default here and ignored the caller's max_length.
    record = t5_summarizer(LONG_TEXT, max_length=9, min_length=0, return_tensors=True, **GREEDY)[0]
    assert len(_ids(record, "summary")) <= 9


def test_pipeline_defaults_fill_only_what_the_model_leaves_unset(
    models: Any, summarizer: Any, t5_summarizer: Any
) -> None:
    def in_force(pipe: Any) -> dict[str, Any]:
        return pipe._get_set_generation_params(pipe._prepare_generate_kwargs({}))

    # T5's config has no generation lengths and no text2text task parameters: transformers 4's defaults.
    t2t = in_force(_pipeline("text2text-generation", models("t5")))
    assert t2t["num_beams"] == 4 and t2t["max_new_tokens"] == 256
    # T5's task_specific_params["summarization"] set num_beams and max_length: no default max_new_tokens.
    t5 = in_force(t5_summarizer)
    assert t5["num_beams"] == 4 and t5["max_length"] == 200 and t5["min_length"] == 30
    assert "max_new_tokens" not in t5
    # The model's generation config (distilbart-cnn's settings) wins over the pipeline's defaults.
    bart = in_force(summarizer)
    assert bart["num_beams"] == 4 and bart["max_length"] == 142 and "max_new_tokens" not in bart
    # A caller's value wins over both.
    assert summarizer._prepare_generate_kwargs({"num_beams": 2})["num_beams"] == 2


def test_max_length_above_the_input_length_warns_like_v4(summarizer: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipelab.pipelines"):
        summarizer("Hugging Face is in Brooklyn.", max_length=12, min_length=0, **GREEDY)
    assert any("Your max_length is set to 12, but your input_length is only" in m for m in caplog.messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelab.pipelines"):
        summarizer(LONG_TEXT, max_length=12, min_length=0, **GREEDY)
    assert not [m for m in caplog.messages if "max_length" in m]


# --- inputs and outputs -------------------------------------------------------------------------------------


def test_truncation_cuts_inputs_to_the_model_maximum(models: Any) -> None:
    pipe = _pipeline("summarization", models("bart-seq2seq"))
    pipe.tokenizer.model_max_length = 16
    assert pipe.preprocess(LONG_TEXT)["input_ids"].shape[1] > 16
    assert pipe.preprocess(LONG_TEXT, truncation=True)["input_ids"].shape[1] == 16
    assert "summary_text" in pipe(LONG_TEXT, truncation=True, max_new_tokens=3, min_length=0, **GREEDY)[0]


def test_return_tensors_and_return_text_choose_the_keys(summarizer: Any) -> None:
    options = {"max_new_tokens": 4, "min_length": 0, **GREEDY}
    text = summarizer(LONG_TEXT, **options)[0]
    ids = summarizer(LONG_TEXT, return_tensors=True, **options)[0]
    both = summarizer(LONG_TEXT, return_tensors=True, return_text=True, **options)[0]
    assert list(text) == ["summary_text"]
    assert list(ids) == ["summary_token_ids"]
    assert sorted(both) == ["summary_text", "summary_token_ids"]
    assert both["summary_text"] == text["summary_text"]
    assert summarizer.tokenizer.decode(ids["summary_token_ids"], skip_special_tokens=True) == text["summary_text"]
    with pytest.raises(ValueError, match="nothing to return"):
        summarizer(LONG_TEXT, return_text=False, return_tensors=False)


def test_batched_list_gives_the_same_as_one_by_one(summarizer: Any) -> None:
    texts = [LONG_TEXT, "Hugging Face is creating a tool that the community uses to solve NLP tasks."]
    options = {"max_new_tokens": 6, "min_length": 0, **GREEDY}
    one_by_one = [summarizer(text, **options)[0] for text in texts]
    assert summarizer(texts, batch_size=2, **options) == one_by_one
    assert summarizer(texts, **options) == one_by_one


def test_t5_prefix_from_task_specific_params_is_prepended(t5_summarizer: Any) -> None:
    expected = t5_summarizer.tokenizer("summarize: " + LONG_TEXT)["input_ids"]
    assert t5_summarizer.preprocess(LONG_TEXT)["input_ids"][0].tolist() == expected
    # The model's config is not modified (transformers 4 popped the prefix out of it).
    assert t5_summarizer.model.config.task_specific_params["summarization"]["prefix"] == "summarize: "


def test_config_prefix_is_prepended_and_bart_has_none(models: Any, summarizer: Any) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    assert summarizer.preprocess("Hello.")["input_ids"][0].tolist() == summarizer.tokenizer("Hello.")["input_ids"]
    model = AutoModelForSeq2SeqLM.from_pretrained(models("bart-seq2seq"))
    model.config.prefix = "Summary: "
    tokenizer = AutoTokenizer.from_pretrained(models("bart-seq2seq"))
    pipe = _pipeline("summarization", model, tokenizer=tokenizer)
    assert pipe.preprocess("Hello.")["input_ids"][0].tolist() == tokenizer("Summary: Hello.")["input_ids"]


# --- translation ----------------------------------------------------------------------------------------------


def test_src_and_tgt_lang_set_the_source_token_and_force_the_target_token(m2m100: Any) -> None:
    tokenizer = m2m100.tokenizer
    inputs = m2m100.preprocess("Hello world.", src_lang="en", tgt_lang="fr")
    assert inputs["input_ids"][0, 0].item() == tokenizer.get_lang_id("en")
    for tgt in ("fr", "de"):
        record = m2m100("Hello world.", src_lang="en", tgt_lang=tgt, max_new_tokens=4, return_tensors=True, **GREEDY)
        ids = _ids(record[0], "translation")
        assert ids[:2] == [m2m100.model.generation_config.decoder_start_token_id, tokenizer.get_lang_id(tgt)]


def test_translation_xx_to_yy_task_name_sets_the_languages(models: Any) -> None:
    pipe = _pipeline("translation_en_to_de", models("m2m100"))
    assert pipe.task == "translation_en_to_de"
    ids = _ids(pipe("Hello world.", max_new_tokens=3, return_tensors=True, **GREEDY)[0], "translation")
    assert ids[1] == pipe.tokenizer.get_lang_id("de")
    # Languages given to the call win over the task name.
    ids = _ids(
        pipe("Hello world.", src_lang="en", tgt_lang="fr", max_new_tokens=3, return_tensors=True)[0], "translation"
    )
    assert ids[1] == pipe.tokenizer.get_lang_id("fr")


def test_mbart_forces_the_target_language_code(models: Any) -> None:
    pipe = _pipeline("translation", models("mbart"), src_lang="en_XX", tgt_lang="ro_RO")
    ids = _ids(pipe("Hello world.", max_new_tokens=3, return_tensors=True, **GREEDY)[0], "translation")
    assert ids[1] == pipe.tokenizer.convert_tokens_to_ids("ro_RO")
    assert pipe.preprocess("Hello world.", src_lang="en_XX", tgt_lang="ro_RO")["input_ids"][0, -1].item() == (
        pipe.tokenizer.convert_tokens_to_ids("en_XX")
    )


def test_batched_translation_with_forced_bos(m2m100: Any) -> None:
    texts = ["Hello world.", "The sea is calm tonight, and we are going to the beach."]
    options = {"src_lang": "en", "tgt_lang": "de", "max_new_tokens": 5, **GREEDY}
    one_by_one = [m2m100(text, **options)[0] for text in texts]
    assert m2m100(texts, batch_size=2, **options) == one_by_one


def test_multilingual_model_without_languages_says_what_to_pass(m2m100: Any) -> None:
    with pytest.raises(ValueError, match="pass src_lang=... and tgt_lang=..."):
        m2m100("Hello world.")
    with pytest.raises(ValueError, match="does not know the language code"):
        m2m100("Hello world.", src_lang="en", tgt_lang="klingon")


def test_invalid_translation_task_name_is_rejected(models: Any) -> None:
    with pytest.raises(KeyError, match="translation_XX_to_YY"):
        _pipeline("translation_en_fr", models("m2m100"))


def test_t5_translation_prefixes(models: Any) -> None:
    pipe = _pipeline("translation_en_to_fr", models("t5"))
    expected = pipe.tokenizer("translate English to French: Hello world.")["input_ids"]
    assert pipe.preprocess("Hello world.")["input_ids"][0].tolist() == expected
    with pytest.warns(UserWarning, match='defaulting to "translation_en_to_de"'):
        bare = _pipeline("translation", models("t5"))
    assert bare.task == "translation_en_to_de"
    assert bare.prefix == "translate English to German: "


def test_single_pair_model_accepts_an_xx_to_yy_task_name(models: Any) -> None:
    pipe = _pipeline("translation_fr_to_en", models("marian-fr-en"))
    assert "translation_text" in pipe("Nous allons à la plage.", max_new_tokens=4, **GREEDY)[0]


def test_text2text_generation_is_restored_too(models: Any) -> None:
    pipe = _pipeline("text2text-generation", models("t5"))
    result = pipe(["question: What is 42? context: 42 is the answer.", "Hello"], max_new_tokens=3, **GREEDY)
    assert [list(record) for record in result] == [["generated_text"], ["generated_text"]]
