"""Input images and audio: download once with a checksum, decode, resample.

Images are decoded with PIL and audio with soundfile, resampled with librosa to 16 kHz mono float32, so no
pipeline ever fetches a URL or needs ffmpeg. Offline (profile=tiny, or an asset with no URL) the stand-ins
ship with the installed packages: scikit-image's real cat photo and pipelab's bundled espeak-ng clip.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

TARGET_SAMPLING_RATE = 16_000


class AssetError(ValueError):
    """An input file is missing, not a file, not decodable, or failed its checksum."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_filename(url: str) -> str:
    """A file name for a URL that cannot escape the download folder (no separators, no dot-dot, no hidden)."""
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "download"


def download(url: str, dest_dir: Path, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Fetch an https URL once into dest_dir, verify sha256 when given; reuse a verified copy."""
    if urllib.parse.urlparse(url).scheme != "https":
        raise AssetError(f"refusing to download {url!r}: only https URLs are fetched")
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / safe_filename(url)
    if target.resolve().parent != dest_dir.resolve():
        raise AssetError(f"download target {target} would escape {dest_dir}")
    if target.is_file() and (sha256 is None or sha256_of(target) == sha256):
        return target
    tmp = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as fh:  # noqa: S310
            while block := response.read(1 << 20):
                fh.write(block)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AssetError(
            f"could not download {url} ({exc}). This machine may be offline: run with profile=tiny, which "
            f"uses bundled offline inputs, or put the file at {target} yourself"
        ) from exc
    try:
        verify_checksum(tmp, sha256, what=url)
    except AssetError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)
    return target


def verify_checksum(path: Path, sha256: str | None, what: str = "") -> str:
    """The file's sha256; AssetError when a pinned sha256 is given and differs."""
    got = sha256_of(path)
    if sha256 is not None and got != sha256.lower():
        raise AssetError(f"checksum mismatch for {what or path}: expected sha256 {sha256}, got {got}; nothing was kept")
    return got


def check_input_file(path: str | Path, what: str) -> Path:
    """A user-given input path must exist and be a regular file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AssetError(f"{what} file {str(path)!r} does not exist (resolved to {p.resolve()})")
    if not p.is_file():
        raise AssetError(f"{what} path {str(path)!r} is not a file (it is a directory or a special file)")
    return p


def decode_image(path: Path) -> Any:
    """Decode an image file fully (so a corrupt file fails here, not inside the pipeline)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise AssetError(f"{path} is not a decodable image ({exc}); use a PNG, JPEG, WebP, BMP or GIF file") from exc


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode with soundfile; mono float32 at 16 kHz (librosa resampling)."""
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AssetError(
            f"{path} is not a decodable audio file ({exc}); use WAV, FLAC or OGG (no ffmpeg on this machine)"
        ) from exc
    mono = data.mean(axis=1).astype(np.float32)
    return resample(mono, rate), TARGET_SAMPLING_RATE


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == TARGET_SAMPLING_RATE or audio.size == 0:
        return audio.astype(np.float32)
    import librosa

    return librosa.resample(audio, orig_sr=rate, target_sr=TARGET_SAMPLING_RATE).astype(np.float32)


def resource_path(name: str) -> Path:
    return Path(str(resources.files("pipelab") / "resources" / name))


@dataclass
class AssetStore:
    """Resolves the asset names of a task config to decoded inputs for one profile."""

    assets: dict[str, Any]
    data_dir: Path
    offline: bool

    def _file(self, name: str) -> Path | str:
        if name not in self.assets:
            raise AssetError(f"unknown asset '{name}'. Assets of this task: {', '.join(self.assets) or 'none'}")
        spec = self.assets[name]
        if spec.get("url") and not self.offline:
            return download(spec["url"], self.data_dir / "assets", spec.get("sha256"))
        if spec.get("offline"):
            return spec["offline"]
        raise AssetError(f"asset '{name}' has no offline stand-in; run with profile=hub on a machine online")

    def image(self, ref: str, convert: str | None = None) -> tuple[Any, dict[str, Any]]:
        """(PIL image, JSON description) for an asset name, `synthetic:WxH`, or a file path."""
        from PIL import Image

        digest = None
        if ref.startswith("synthetic:"):
            width, height = (int(v) for v in ref.split(":", 1)[1].split("x"))
            rng = np.random.default_rng(0)
            img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            source = f"synthetic {width}x{height} RGB noise"
        else:
            if ref in self.assets:
                src = self._file(ref)
            else:
                src = check_input_file(ref, "image")
            if isinstance(src, str) and src.startswith("skimage:"):
                from skimage import data as skdata

                img = Image.fromarray(getattr(skdata, src.split(":", 1)[1])())
                source = f"{src} (scikit-image {_version('scikit-image')})"
            else:
                img = decode_image(Path(src))
                source = str(src)
                digest = sha256_of(Path(src))
        img = img.convert(convert or "RGB")
        description = {"image": ref, "source": source, "size": list(img.size), "mode": img.mode}
        if digest:
            description["sha256"] = digest
        return img, description

    def audio(self, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """({"raw", "sampling_rate"} at 16 kHz mono, JSON description)."""
        digest = None
        if ref.startswith("synthetic:silence:"):
            seconds = float(ref.rsplit(":", 1)[1])
            raw = np.zeros(int(seconds * TARGET_SAMPLING_RATE), dtype=np.float32)
            source = f"{seconds} s of digital silence"
        else:
            src = self._file(ref) if ref in self.assets else check_input_file(ref, "audio")
            if isinstance(src, str) and src.startswith("resource:"):
                src = resource_path(src.split(":", 1)[1])
            raw, _ = decode_audio(Path(src))
            source = str(src)
            digest = sha256_of(Path(src))
        description = {"audio": ref, "source": source, "seconds": round(raw.size / TARGET_SAMPLING_RATE, 3)}
        if digest:
            description["sha256"] = digest
        if ref in self.assets and self.assets[ref].get("reference"):
            description["reference"] = self.assets[ref]["reference"]
        return {"raw": raw, "sampling_rate": TARGET_SAMPLING_RATE}, description


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)
