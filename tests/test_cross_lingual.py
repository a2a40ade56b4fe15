"""Cross-lingual NER and QA: Thai and Arabic cases with gold data, SQuAD-style scores, and the two ablations
run through the real CLI on tiny weights (multilingual stand-ins with tokenizers trained on Thai and Arabic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from omegaconf import OmegaConf

from pipelab import metrics
from pipelab.tiny import build_tiny_model

FAST = ["profile=tiny", "bench.warmup=0", "bench.min_iterations=1", "bench.min_duration_s=0", "tracking.enabled=false"]


def test_thai_answers_are_scored_by_character_and_latin_ones_by_word():
    # SQuAD normalisation: case, punctuation and English articles do not count.
    assert metrics.exact_match("The Hugging Face.", ["hugging face"]) == 1.0
    assert metrics.token_f1("Hugging Face in Brooklyn", ["Hugging Face"]) == pytest.approx(2 * (2 / 4) / (2 / 4 + 1))
    # Thai has no spaces between words: a whitespace token would make F1 all-or-nothing. Characters keep their
    # combining vowel and tone marks (ี, ่) with the character they sit on.
    assert metrics.answer_tokens("เชียงใหม่") == ["เ", "ชี", "ย", "ง", "ใ", "ห", "ม่"]
    assert len(metrics.answer_tokens("จังหวัดเชียงใหม่")) == 12
    assert metrics.exact_match("เชียงใหม่", ["จังหวัดเชียงใหม่"]) == 0.0
    partial = metrics.token_f1("เชียงใหม่", ["จังหวัดเชียงใหม่"])
    assert partial == pytest.approx(2 * 7 / (7 + 12))  # 7 shared characters; a whitespace F1 would give 0
    assert metrics.token_f1("จังหวัดเชียงใหม่", ["จังหวัดเชียงใหม่", "เชียงใหม่"]) == 1.0
    # Arabic is written with spaces: words, as in English.
    assert metrics.token_f1("شركة هاجينج فيس", ["هاجينج فيس"]) == pytest.approx(0.8)
    assert metrics.token_f1("", ["القاهرة"]) == 0.0


def test_every_cross_lingual_case_has_gold_and_the_gold_answer_is_in_its_context():
    qa = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "question-answering.yaml"))
    ner = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "ner.yaml"))
    thai_qa = [c for c in qa["cases"] if c.get("language") == "th"]
    assert len(thai_qa) >= 5 and any(c.get("language") == "ar" for c in qa["cases"])
    for case in qa["cases"]:
        for answer in case.get("gold") or []:
            assert answer in case["input"]["context"], (case["id"], answer)  # extractive: a span of the context
    for case in ner["cases"]:
        for entity in case.get("gold") or []:
            assert entity["word"] in case["input"], (case["id"], entity)
    assert {c.get("language") for c in ner["cases"]} >= {"th", "ar"}


def test_multilingual_stand_ins_encode_thai_and_arabic_without_unknown_tokens(tmp_path):
    from transformers import AutoTokenizer

    for family in ("xlm-roberta-qa", "mbert-token-cls"):
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(family, tmp_path / family))
        for text in ("สมชายทำงานที่บริษัทฮักกิ้งเฟซในกรุงเทพ", "يعمل أحمد في شركة هاجينج فيس في باريس."):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if family == "xlm-roberta-qa":  # sentencepiece unigram with full character coverage
                assert tokenizer.unk_token_id not in ids, (family, text)
            else:  # WordPiece, as mBERT: an unspaced Thai clause longer than 100 characters would be [UNK]
                assert ids.count(tokenizer.unk_token_id) < len(ids), (family, text)


def _records(tmp_path: Path, task: str) -> dict[str, dict]:
    out = {}
    for path in sorted((tmp_path / "results" / "runs" / task).glob("*.json")):
        record = json.loads(path.read_text())
        out[record["model"]["name"]] = record
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "ablation", "models", "metric"),
    [
        ("question-answering", "cross_lingual_qa", ("distilbert-squad", "xlm-roberta-large-squad2"), "f1"),
        ("ner", "cross_lingual_ner", ("bert-large-conll03", "wikineural-multilingual-ner"), "entity_f1"),
    ],
)
def test_cross_lingual_ablation_runs_its_points_as_child_runs_with_per_language_scores(
    tmp_path, shared_data_dir, task, ablation, models, metric
):
    result = run_cli(
        [
            "-m",
            f"ablation={ablation}",
            *FAST,
            f"results_dir={tmp_path / 'results'}",
            f"data_dir={shared_data_dir}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(tmp_path, task)
    assert set(records) == set(models)
    for record in records.values():
        assert record["status"] == "FINISHED" and record["ablation"]["name"] == ablation
        numbers = record["metrics"]
        for language in ("en", "th", "ar"):
            assert 0.0 <= numbers[f"{metric}_{language}"] <= 100.0, (record["model"]["name"], language)
        cases = {c["id"]: c for c in record["cases"]}
        thai = [c for c in cases.values() if c.get("language") == "th"]
        assert thai and all(c["error"] is None and c["valid"] for c in thai), thai
        assert all(c["gold"] for c in thai)
