"""The fetch stage: every model and input file of the DAG into data/, and a manifest that fingerprints them.

Weights go where the runner looks for them (``pipelab.weights``: data/hub as a Hugging Face cache, or
data/tiny/<model> built locally), downloaded inputs where ``pipelab.assets`` looks (data/assets). Both folders
keep what is already there, so a second fetch costs a few checks, not downloads or builds.

The manifest lists exactly what the DAG uses: each model with its resolved revision (a hub commit, or the
hash of a tiny build's spec) and each input with its sha256. The run stages depend on the manifest rather
than on the folders, so a model someone builds or downloads by hand for a run of their own does not make
DVC re-run the whole grid. No timing goes into it: the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipelab.assets import download, resource_path, sha256_of
from pipelab.config import ProfileSchema, load_model_config
from pipelab.dag import FetchPlan
from pipelab.weights import resolve_weights


def load_profile(root: Path, name: str) -> Any:
    """The `profile` node of conf/profile/<name>.yaml, through the schema."""
    raw = OmegaConf.load(root / "conf" / "profile" / f"{name}.yaml")
    return OmegaConf.merge(OmegaConf.structured(ProfileSchema), raw.profile)


def fetch_models(root: Path, plan: FetchPlan, data_dir: Path) -> list[dict[str, Any]]:
    """Resolve (download or build) every model of the plan; one manifest entry each."""
    profile = load_profile(root, plan.profile)
    entries = []
    for name in plan.models:
        weights = resolve_weights(load_model_config(root, name), profile, data_dir)
        print(f"fetch: {name}: {weights.model_id} @ {weights.revision[:12]} ({weights.weights})", flush=True)
        entries.append(
            {
                "name": name,
                "id": weights.model_id,
                "revision": weights.revision,
                "weights": weights.weights,
                "path": _relative(weights.path, data_dir),
            }
        )
    return entries


def fetch_assets(plan: FetchPlan, data_dir: Path, *, offline: bool) -> list[dict[str, Any]]:
    """Download each input with a URL (online profiles), else checksum its bundled offline stand-in.

    The same rule as the runner's ``AssetStore``: a URL is used unless the profile is offline.
    """
    entries = []
    for key, spec in plan.assets.items():
        entry: dict[str, Any] = {"asset": key}
        if spec.get("url") and not offline:
            path = download(spec["url"], data_dir / "assets", spec.get("sha256"))
            entry |= {"source": spec["url"], "path": _relative(path, data_dir), "sha256": sha256_of(path)}
        elif spec.get("offline"):
            entry |= {"source": spec["offline"], "sha256": _stand_in_sha256(spec["offline"])}
        else:
            raise ValueError(f"asset {key} has neither a URL to download nor an offline stand-in")
        print(f"fetch: {key}: {entry['source']} sha256 {entry['sha256'][:12]}", flush=True)
        entries.append(entry)
    return entries


def _stand_in_sha256(ref: str) -> str:
    """sha256 of an offline stand-in: a bundled resource file, or a scikit-image sample's pixels."""
    kind, _, name = ref.partition(":")
    if kind == "resource":
        return sha256_of(resource_path(name))
    if kind == "skimage":
        import numpy as np
        from skimage import data as skdata

        return hashlib.sha256(np.ascontiguousarray(getattr(skdata, name)()).tobytes()).hexdigest()
    raise ValueError(f"unknown offline stand-in {ref!r} (expected resource:<file> or skimage:<name>)")


def _relative(path: Path, base: Path) -> str:
    # Paths relative to data/: the manifest must not change when the repo is cloned elsewhere.
    resolved, anchor = path.resolve(), base.resolve()
    return str(resolved.relative_to(anchor)) if resolved.is_relative_to(anchor) else str(path)


def write_manifest(path: Path, plan: FetchPlan, models: list[dict[str, Any]], assets: list[dict[str, Any]]) -> None:
    """The fingerprint the run stages depend on (sorted keys, no timings: byte-identical when nothing changed)."""
    manifest = {"profile": plan.profile, "models": models, "assets": assets}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
