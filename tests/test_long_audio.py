"""Speech recognition beyond Whisper's 30 s window: the bundled 44 s clip, through the real CLI on the tiny Whisper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile
from conftest import ROOT, run_cli
from omegaconf import OmegaConf

from pipelab.assets import decode_audio, resource_path
from pipelab.config import ConfigError, LongAudioSchema
from pipelab.tasks.speech_recognition import long_audio_kwargs, word_error_rate

FAST = ["profile=tiny", "bench.warmup=0", "bench.min_iterations=1", "bench.min_duration_s=0", "tracking.enabled=false"]
LONG_CLIP = resource_path("speech_en_long.flac")


def _isolated(tmp_path: Path, data_dir: Path) -> list[str]:
    return [
        f"results_dir={tmp_path / 'results'}",
        f"data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'outputs'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]


def _record(tmp_path: Path) -> dict:
    (path,) = sorted((tmp_path / "results" / "runs" / "automatic-speech-recognition").glob("*.json"))
    return json.loads(path.read_text())


def test_bundled_long_clip_is_real_speech_beyond_the_30_s_window():
    info = soundfile.info(str(LONG_CLIP))
    assert info.format == "FLAC" and info.samplerate == 16_000 and info.channels == 1
    assert 40 < info.duration < 50 and LONG_CLIP.stat().st_size < 1_500_000
    audio, rate = decode_audio(LONG_CLIP)
    # Speech, not silence: most 1 s windows carry energy (espeak-ng pauses only between sentences).
    seconds = [audio[i : i + rate] for i in range(0, audio.size - rate, rate)]
    voiced = sum(float((w**2).mean()) ** 0.5 > 0.01 for w in seconds)
    assert voiced >= 0.8 * len(seconds)


def test_the_long_clip_reference_is_the_text_it_was_spoken_from():
    task = OmegaConf.load(ROOT / "conf" / "task" / "automatic-speech-recognition.yaml")
    reference = task.assets["speech-en-long"].reference
    assert len(reference.split()) == 113 and reference.startswith("Speech recognition models listen")
    assert word_error_rate(reference, reference) == 0.0
    assert any(case.input.audio == "speech-en-long" for case in task.cases)


def test_long_audio_settings_become_the_pipeline_call():
    call = {"generate_kwargs": {"num_beams": 1, "max_new_tokens": 96}}
    chunked = long_audio_kwargs({"mode": "chunked", "chunk_length_s": 30.0, "stride_length_s": 4.0}, call)
    assert chunked == {
        "chunk_length_s": 30.0,
        "ignore_warning": True,
        "stride_length_s": 4.0,
    }
    long_form = long_audio_kwargs({"mode": "long_form", "chunk_length_s": 30.0, "max_new_tokens": 160}, call)
    assert long_form == {"return_timestamps": True, "generate_kwargs": {"num_beams": 1, "max_new_tokens": 160}}
    with pytest.raises(ConfigError, match="mode must be one of chunked, long_form"):
        LongAudioSchema(mode="streaming")
    with pytest.raises(ConfigError, match="less than half of chunk_length_s"):
        LongAudioSchema(chunk_length_s=10.0, stride_length_s=5.0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["chunked", "long_form"])
def test_a_45_s_clip_given_with_input_runs_through_the_cli(tmp_path, shared_data_dir, mode):
    """Before task.long_audio this failed: "more than 3000 mel input features ... long-form generation"."""
    result = run_cli(
        [
            "task=automatic-speech-recognition",
            f"input={LONG_CLIP}",
            f"task.long_audio.mode={mode}",
            *FAST,
            *_isolated(tmp_path, shared_data_dir),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = _record(tmp_path)
    cases = {c["id"]: c for c in record["cases"]}
    for case_id in ("user-input", "custom-long-espeak"):
        case = cases[case_id]
        assert case["error"] is None and case["valid"], case
        assert case["input"]["seconds"] > 44 and isinstance(case["output"]["text"], str)
        assert any("beyond the model's 30 s window" in note for note in case["notes"]), case["notes"]
        expected = {"chunked": "chunk_length_s", "long_form": "return_timestamps"}[mode]
        assert expected in case["kwargs"]
    # Short clips keep their plain call.
    assert "chunk_length_s" not in cases["custom-espeak"]["kwargs"]
    assert "return_timestamps" not in cases["custom-espeak"]["kwargs"]
    # WER against the transcript, over every case with a reference and over the long clip alone.
    assert record["metrics"]["wer_long_audio"] >= 0.0 and record["metrics"]["wer_mean"] >= 0.0
