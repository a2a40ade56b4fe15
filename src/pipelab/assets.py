"""Input images and audio: fetch once with a checksum, decode, resample.

The course's inputs come from their Hub dataset repos at a pinned revision (``pipelab.hub``), checked against a
sha256. Images are decoded with PIL and audio with soundfile, resampled with librosa to 16 kHz mono float32, so
no pipeline ever fetches a URL or needs ffmpeg. On profile=tiny (or an asset with no Hub file) the stand-ins
ship with the installed packages: scikit-image's real cat photo and pipelab's bundled espeak-ng clip.
"""

from __future__ import annotations

import hashlib
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


def fetch_hub_file(spec: dict[str, Any], cache_dir: Path, *, local_only: bool) -> tuple[Path, dict[str, Any]]:
    """An input file from a Hub repo at its pinned revision: (local path, where it came from).

    Checked against a sha256: the task config's when it sets one, else the Hub's own LFS sha256 of the file, else
    (a file the Hub stores outside LFS, with no sha256 in the config) the one recorded by the first download.
    A file fetched before resolves from the cache with no network call and is verified again.
    """
    from pipelab import hub

    where = spec["hub"]
    repo_id, repo_type, filename = where["repo_id"], where.get("repo_type") or "dataset", where["filename"]
    revision = where.get("revision") or "main"
    label = f"{repo_type} {repo_id}/{filename} @ {revision}"
    cached = hub.cached_file(repo_id, repo_type, filename, revision, cache_dir)
    if cached is not None:
        path, record = cached
        expected = spec.get("sha256") or record["sha256"]
        return path, {"source": label, "commit": record["commit"], "sha256": verify_checksum(path, expected, label)}
    if local_only:
        raise AssetError(
            f"{label} is not in the local cache {cache_dir}: run `python stages/fetch.py` on a machine online, "
            "or use profile=tiny (bundled stand-ins)"
        )
    try:
        hub.check_reachable()
        plan = hub.plan_file(repo_id, repo_type, filename, revision)
        path = hub.download_file(plan, cache_dir)
    except (hub.HubUnreachable, hub.HubRefusal) as exc:
        raise AssetError(f"{exc}. Offline? Run with profile=tiny, which uses bundled stand-ins") from exc
    try:
        got = verify_checksum(path, spec.get("sha256") or plan.sha256, label)
    except AssetError:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise
    hub.record_file(plan, cache_dir, got)
    return path, {"source": label, "commit": plan.commit, "sha256": got}


def verify_checksum(path: Path, sha256: str | None, what: str = "") -> str:
    """The file's sha256; AssetError when a pinned sha256 is given and differs."""
    got = sha256_of(path)
    if sha256 is not None and got != sha256.lower():
        raise AssetError(
            f"checksum mismatch for {what or path}: expected sha256 {sha256}, got {got}; the file was not kept"
        )
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
    """Resolves the asset names of a task config to decoded inputs for one profile.

    stand_ins: use each asset's bundled offline stand-in (profile=tiny); otherwise its Hub file (downloaded once
    into data/hub; with local_only, from that cache alone).
    """

    assets: dict[str, Any]
    data_dir: Path
    stand_ins: bool
    local_only: bool = False

    def _file(self, name: str) -> Path | str:
        if name not in self.assets:
            raise AssetError(f"unknown asset '{name}'. Assets of this task: {', '.join(self.assets) or 'none'}")
        spec = self.assets[name]
        if spec.get("hub") and not self.stand_ins:
            return fetch_hub_file(spec, self.data_dir / "hub", local_only=self.local_only)[0]
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
