"""The fetch stage: every model and input file of the DAG into data/, a manifest, and the plan before it.

Weights go where the runner looks for them (``pipelab.weights``: data/hub as a Hugging Face cache, or
data/tiny/<model> built locally), input files of Hub dataset repos into the same cache (``pipelab.assets``).
Both keep what is already there, so a second fetch costs a few checks, not downloads or builds.

The manifest lists exactly what the DAG uses: each model with its pinned commit and the commit its weights came
from (a conversion pull request's head, with the PR number), or the hash of a tiny build's spec, and each input
with its commit and sha256. The run stages depend on the manifest rather than on the folders, so a model someone
downloads by hand for a run of their own does not make DVC re-run the whole grid. No timing goes into it: the
same inputs give the same bytes.

``plan_rows`` answers, before any download, what a fetch would bring: per model and input the repo, the pin,
where the safetensors come from, the bytes, what is cached; ``check_pins`` does the same for every model config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipelab import hub
from pipelab.assets import fetch_hub_file, resource_path, sha256_of
from pipelab.config import ProfileSchema, group_choices, load_model_config
from pipelab.dag import FetchPlan
from pipelab.weights import WeightsUnavailable, hub_plan, local_weights, resolve_weights


def load_profile(root: Path, name: str) -> Any:
    """The `profile` node of conf/profile/<name>.yaml, through the schema."""
    raw = OmegaConf.load(root / "conf" / "profile" / f"{name}.yaml")
    return OmegaConf.merge(OmegaConf.structured(ProfileSchema), raw.profile)


def _config_file(name: str) -> str:
    return f"conf/model/{name}.yaml"


def fetch_models(root: Path, plan: FetchPlan, data_dir: Path) -> list[dict[str, Any]]:
    """Resolve (download or build) every model of the plan; one manifest entry each."""
    profile = load_profile(root, plan.profile)
    entries = []
    for name in plan.models:
        weights = resolve_weights(load_model_config(root, name), profile, data_dir, config_file=_config_file(name))
        source = f" weights from PR #{weights.weights_pr}" if weights.weights_pr is not None else ""
        print(f"fetch: {name}: {weights.model_id} @ {weights.revision[:12]}{source} ({weights.weights})", flush=True)
        entry = {
            "name": name,
            "id": weights.model_id,
            "revision": weights.revision,
            "weights": weights.weights,
            "path": _relative(weights.path, data_dir),
        }
        if weights.weights == "pretrained":
            entry |= {
                "weights_revision": weights.weights_revision,
                "weights_pr": weights.weights_pr,
                "weights_format": weights.weights_format,
            }
        entries.append(entry)
    return entries


def fetch_assets(plan: FetchPlan, data_dir: Path, *, stand_ins: bool, local_only: bool) -> list[dict[str, Any]]:
    """Each input's Hub file at its pinned revision (checked against its sha256), or its bundled stand-in.

    The same rule as the runner's ``AssetStore``: the Hub file unless the profile uses stand-ins (tiny).
    """
    entries = []
    for key, spec in plan.assets.items():
        entry: dict[str, Any] = {"asset": key}
        if spec.get("hub") and not stand_ins:
            path, where = fetch_hub_file(spec, data_dir / "hub", local_only=local_only)
            entry |= where | {"path": _relative(path, data_dir)}
        elif spec.get("offline"):
            entry |= {"source": spec["offline"], "sha256": _stand_in_sha256(spec["offline"])}
        else:
            raise ValueError(f"asset {key} has neither a Hub file nor an offline stand-in")
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


# ----------------------------------------------------------------------------------------------------------
# The plan before the download, and the pin check
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    """One model or input file of a plan: what it is, where it comes from, how much is left to download."""

    name: str  # model config name, or <task>/<asset>
    repo: str
    pin: str
    source: str  # "pin", "PR #N", "pin (pickle, opt-in)", or why it is refused
    total_bytes: int
    missing_bytes: int
    refused: bool = False

    @property
    def cached(self) -> str:
        if self.refused:
            return "-"
        if self.missing_bytes == 0:
            return "yes"
        return "no" if self.missing_bytes == self.total_bytes else "partly"


def _model_row(root: Path, name: str, profile: Any, cache_dir: Path) -> PlanRow:
    model = load_model_config(root, name)
    if model.get("path"):  # local files: nothing to download, nothing to ask the Hub
        try:
            path, digest, fmt = local_weights(str(model.path), allow_pickle=bool(profile.get("allow_pickle")))
        except WeightsUnavailable as exc:
            return PlanRow(name, str(model.path), "-", f"REFUSED: {exc}", 0, 0, refused=True)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return PlanRow(name, str(model.path), digest[:12], f"local files ({fmt})", size, 0)
    try:
        plan, path = hub_plan(model, profile, cache_dir, _config_file(name))
    except WeightsUnavailable as exc:
        return PlanRow(name, str(model.hub_id), str(model.revision)[:12], f"REFUSED: {exc}", 0, 0, refused=True)
    source = plan.source + (" (pickle, opt-in)" if plan.format == "pickle" else "")
    missing = 0 if path is not None else hub.missing_bytes(plan, cache_dir)
    return PlanRow(name, plan.repo_id, plan.pin[:12], source, plan.total_bytes, missing)


def _asset_row(key: str, spec: dict[str, Any], cache_dir: Path, *, local_only: bool) -> PlanRow:
    where = spec["hub"]
    repo_type, revision = where.get("repo_type") or "dataset", where.get("revision") or "main"
    cached = hub.cached_file(where["repo_id"], repo_type, where["filename"], revision, cache_dir)
    if cached is not None:
        size = int(cached[1]["size"])
        return PlanRow(key, f"{where['repo_id']}/{where['filename']}", cached[1]["commit"][:12], "pin", size, 0)
    if local_only:
        return PlanRow(key, where["repo_id"], revision[:12], "REFUSED: not cached (profile.offline)", 0, 0, True)
    try:
        plan = hub.plan_file(where["repo_id"], repo_type, where["filename"], revision)
    except hub.HubRefusal as exc:
        return PlanRow(key, where["repo_id"], revision[:12], f"REFUSED: {exc}", 0, 0, refused=True)
    source = "pin" if hub.is_commit(revision) else f"{revision} (pinned by this fetch)"
    return PlanRow(key, f"{plan.repo_id}/{plan.filename}", plan.commit[:12], source, plan.size, plan.size)


def plan_rows(root: Path, plan: FetchPlan, data_dir: Path) -> list[PlanRow]:
    """What fetching this plan downloads, asked of the Hub (cached pins need no network); nothing is fetched."""
    profile = load_profile(root, plan.profile)
    cache_dir = data_dir / "hub"
    if not profile.offline:
        _reach_if_needed(root, plan.models, profile, cache_dir)
    rows = [_model_row(root, name, profile, cache_dir) for name in plan.models]
    rows += [
        _asset_row(key, spec, cache_dir, local_only=bool(profile.offline))
        for key, spec in plan.assets.items()
        if spec.get("hub")
    ]
    return rows


def check_pins(root: Path, data_dir: Path) -> list[PlanRow]:
    """Every model config's pin, asked of the Hub itself (never the cache): exists, safetensors reachable."""
    profile = OmegaConf.merge(load_profile(root, "hub"), {"offline": False})
    hub.check_reachable()
    empty = data_dir / "hub-pin-check-never-written"  # an empty cache: every answer comes from the Hub
    names = [n for n in group_choices(root, "model") if n != "auto" and not load_model_config(root, n).get("path")]
    return [_model_row(root, name, profile, empty) for name in names]


def _reach_if_needed(root: Path, names: tuple[str, ...], profile: Any, cache_dir: Path) -> None:
    """Fail in seconds when something must be asked of the Hub and its host does not answer."""
    for name in names:
        model = load_model_config(root, name)
        if model.get("path"):
            continue
        cached = hub.cached_plan(str(model.hub_id), str(model.revision or "main"), cache_dir)
        if cached is None or hub.local_snapshot(cached, cache_dir) is None:
            try:
                hub.check_reachable()
            except hub.HubUnreachable as exc:
                raise WeightsUnavailable(f"{exc}: the plan needs the Hub for {name} and others not cached") from exc
            return


def format_plan(rows: list[PlanRow]) -> str:
    """The plan as a fixed-width table with totals, refusals spelled out below it."""
    header = ("what", "repo", "pin", "safetensors from", "size", "cached")
    lines = [
        (r.name, r.repo, r.pin, "REFUSED" if r.refused else r.source, _size(r.total_bytes), r.cached) for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in [header, *lines]]
    total, missing = sum(r.total_bytes for r in rows), sum(r.missing_bytes for r in rows)
    out.append(f"total {_size(total)}; to download {_size(missing)}; {sum(r.refused for r in rows)} refused")
    out += [f"refused: {r.name}: {r.source.removeprefix('REFUSED: ')}" for r in rows if r.refused]
    return "\n".join(out)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
