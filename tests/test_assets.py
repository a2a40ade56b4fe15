"""Real image and audio decoding, resampling and checksums (Hub downloads: tests/test_hub.py)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from PIL import Image

from pipelab.assets import (
    TARGET_SAMPLING_RATE,
    AssetError,
    AssetStore,
    decode_audio,
    resource_path,
    verify_checksum,
)


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_stereo_44k_flac_becomes_mono_16k_float32(tmp_path):
    path = tmp_path / "tone.flac"
    soundfile.write(path, tone(1.5, 44_100, channels=2), 44_100)
    audio, rate = decode_audio(path)
    assert rate == TARGET_SAMPLING_RATE and audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 1.5 * TARGET_SAMPLING_RATE) <= 2
    assert 0.15 < float(np.abs(audio).max()) < 0.35  # the tone survived resampling


def test_bundled_espeak_clip_is_real_16k_speech():
    audio, rate = decode_audio(resource_path("speech_en.wav"))
    assert rate == 16_000 and 3.0 < audio.size / rate < 3.6
    assert float(np.sqrt(np.mean(audio**2))) > 0.01  # not silence


def test_undecodable_audio_and_image_say_so(tmp_path):
    bad = tmp_path / "fake.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(AssetError, match="not a decodable audio file"):
        decode_audio(bad)
    store = AssetStore({}, tmp_path, stand_ins=True)
    picture = tmp_path / "fake.png"
    picture.write_text("not a png")
    with pytest.raises(AssetError, match="not a decodable image"):
        store.image(str(picture))
    with pytest.raises(AssetError, match="does not exist"):
        store.audio(str(tmp_path / "missing.flac"))
    with pytest.raises(AssetError, match="is not a file"):
        store.image(str(tmp_path))


def test_offline_assets_are_the_real_cat_photo_and_the_bundled_clip(tmp_path):
    store = AssetStore(
        {
            "cat": {"hub": {"repo_id": "x/images", "filename": "cat.jpeg"}, "offline": "skimage:chelsea"},
            "mlk": {
                "hub": {"repo_id": "x/audio", "filename": "mlk.flac"},
                "offline": "resource:speech_en.wav",
                "reference": "x",
            },
        },
        tmp_path,
        stand_ins=True,
    )
    img, info = store.image("cat")
    assert img.size == (451, 300) and img.mode == "RGB" and "chelsea" in info["source"]
    grey, info = store.image("cat", "L")
    assert grey.mode == "L"
    audio, info = store.audio("mlk")
    assert audio["sampling_rate"] == 16_000 and info["reference"] == "x" and len(info["sha256"]) == 64
    one, _ = store.image("synthetic:1x1")
    assert one.size == (1, 1)
    silence, info = store.audio("synthetic:silence:0.0")
    assert silence["raw"].size == 0 and info["seconds"] == 0


def test_user_image_file_is_decoded_with_its_checksum(tmp_path):
    path = tmp_path / "dog.jpg"
    Image.new("RGB", (64, 48), (10, 120, 30)).save(path)
    img, info = AssetStore({}, tmp_path, stand_ins=True).image(str(path))
    assert img.size == (64, 48) and info["sha256"] == verify_checksum(path, None)


def test_checksums_are_enforced(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert verify_checksum(path, good) == good
    with pytest.raises(AssetError, match="checksum mismatch"):
        verify_checksum(path, "0" * 64)
