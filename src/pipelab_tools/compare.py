"""A regression verdict between two sets of run records, A (before) and B (after).

Per task and configuration: the latency ratio B/A (median of B's raw samples over median of A's) with a seeded
bootstrap 95% confidence interval, a verdict at a threshold, the case outputs that changed and the validity changes.
Reads records only (``pipelab_tools.report.runs``), like the reports: the same two folders always give the same result.

Runs are paired by what identifies a configuration apart from the change under test: task, model, ablation and its
point, plus any setting that varies among one side's runs of a task (a temperature swept without an ablation
config). A setting that is constant within each side but differs between them is the change under test: it is
reported, not used for pairing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelab.records import HASH_EXCLUDED
from pipelab_tools.report.runs import Run, load_runs, point_label, tasks_in

CONFIDENCE = 0.95
# Settings that say which model or ablation a run is: represented by the model's and the ablation's names.
_NAMED_BY = ("model.", "ablation.")


class CompareError(ValueError):
    """The inputs cannot be compared (no records, nothing paired): a user error, exit code 2."""


# ----------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    """median(B) / median(A) and its bootstrap percentile interval."""

    ratio: float
    low: float
    high: float


def bootstrap_ratio(a: Iterable[float], b: Iterable[float], *, resamples: int = 2000, seed: int = 0) -> Ratio:
    """Ratio of medians B/A with a percentile bootstrap CI: A and B resampled independently, with replacement.

    Seeded by ``seed`` alone, so one pair's interval does not depend on which other pairs were compared.
    """
    xa, xb = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if xa.size == 0 or xb.size == 0:
        raise ValueError("both sides need at least one latency sample")
    if np.any(xa <= 0) or np.any(xb <= 0):
        raise ValueError("latency samples must be positive")
    rng = np.random.default_rng(seed)
    med_a = np.median(xa[rng.integers(0, xa.size, (resamples, xa.size))], axis=1)
    med_b = np.median(xb[rng.integers(0, xb.size, (resamples, xb.size))], axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(med_b / med_a, [tail, 100 - tail])
    return Ratio(float(np.median(xb) / np.median(xa)), float(low), float(high))


def verdict(ratio: Ratio, threshold: float) -> str:
    """`slower` only when the whole CI is above 1+threshold, `faster` only when it is below 1/(1+threshold).

    The two bounds are symmetric in log space, so swapping A and B swaps slower and faster; anything else is
    `no change`.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if ratio.low > 1 + threshold:
        return "slower"
    if ratio.high < 1 / (1 + threshold):
        return "faster"
    return "no change"


def ci_within_threshold(ratio: Ratio, threshold: float) -> bool:
    """Whether a `no change` is conclusive: the whole CI lies between the two bounds."""
    return ratio.low >= 1 / (1 + threshold) and ratio.high <= 1 + threshold


# ----------------------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------------------


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out |= _flat(inner, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value}


def _settings(run: Run) -> dict[str, Any]:
    """The run's config as dotted keys, without the keys that do not change what it computes (records.py)."""
    config = {k: v for k, v in run.record.get("config", {}).items() if k not in HASH_EXCLUDED}
    return {k: v for k, v in _flat(config).items() if not k.startswith(_NAMED_BY)}


def _varying(runs: list[Run]) -> set[str]:
    settings = [_settings(r) for r in runs]
    keys = {k for s in settings for k in s}
    return {k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in settings}) > 1}


@dataclass(frozen=True)
class Identity:
    task: str
    model: str
    ablation: str
    point: tuple[tuple[str, Any], ...]
    extra: tuple[tuple[str, Any], ...]  # settings that vary within a side

    @property
    def label(self) -> str:
        """The configuration as the tables name it, e.g. `gpt2`, `gpt2 batch_size: 4`, `gpt2 temperature=0.7`."""
        parts = [self.model]
        if self.ablation != "none":
            parts.append(f"{self.ablation}: {point_label(dict(self.point))}")
        parts += [f"{k}={v}" for k, v in self.extra]
        return " ".join(parts)

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


def _identity(run: Run, extra_keys: set[str]) -> Identity:
    settings = _settings(run)
    point = tuple(sorted((k, v) for k, v in run.point.items()))
    extra = tuple((k, settings.get(k)) for k in sorted(extra_keys - set(run.point)))
    return Identity(run.task, run.model, run.ablation, point, extra)


def _preferred(runs: list[Run]) -> Run:
    """One run per identity and side: a finished one over a failure kept beside it, then the latest."""
    return sorted(runs, key=lambda r: (r.finished, r.record.get("started_at", ""), r.path))[-1]


@dataclass
class Pairing:
    pairs: list[tuple[Identity, Run, Run]]
    only_a: list[tuple[Identity, Run]]
    only_b: list[tuple[Identity, Run]]
    extra_keys: dict[str, list[str]]  # task -> settings used for pairing beyond model and ablation point
    differs: dict[str, list[Any]]  # setting -> [A's values, B's values]: the change under test


def pair_runs(a_runs: list[Run], b_runs: list[Run]) -> Pairing:
    pairing = Pairing([], [], [], {}, {})
    differs: dict[str, tuple[set[str], set[str]]] = {}
    for task in tasks_in([*a_runs, *b_runs]):
        ta = [r for r in a_runs if r.task == task]
        tb = [r for r in b_runs if r.task == task]
        extra = _varying(ta) | _varying(tb)
        if extra:
            pairing.extra_keys[task] = sorted(extra)
        by_id: dict[str, list[list[Run]]] = {}
        ids: dict[str, Identity] = {}
        for side, runs in ((0, ta), (1, tb)):
            for run in runs:
                ident = _identity(run, extra)
                ids[ident.key()] = ident
                by_id.setdefault(ident.key(), [[], []])[side].append(run)
        for key, (in_a, in_b) in by_id.items():
            if in_a and in_b:
                pairing.pairs.append((ids[key], _preferred(in_a), _preferred(in_b)))
            elif in_a:
                pairing.only_a.append((ids[key], _preferred(in_a)))
            else:
                pairing.only_b.append((ids[key], _preferred(in_b)))
        # Constant within each side, different between them: what A -> B changed for this task.
        if ta and tb:
            sa, sb = [_settings(r) for r in ta], [_settings(r) for r in tb]
            # a setting one side does not record at all (MLflow params count the cases) is not compared
            for k in ({k for s in sa for k in s} & {k for s in sb for k in s}) - extra:
                va = {json.dumps(s.get(k), default=str) for s in sa}
                vb = {json.dumps(s.get(k), default=str) for s in sb}
                if va != vb:
                    seen = differs.setdefault(k, (set(), set()))
                    seen[0].update(va)
                    seen[1].update(vb)
    pairing.differs = {k: [sorted(va), sorted(vb)] for k, (va, vb) in sorted(differs.items())}
    return pairing


def environment_differences(a_runs: list[Run], b_runs: list[Run]) -> dict[str, list[Any]]:
    """Environment fields (library versions, threads, git commit) whose values differ between the sides."""

    def values(runs: list[Run], key: str) -> list[str]:
        found = (r.record.get("environment", {}).get(key) for r in runs if r.finished)
        return sorted({str(v) for v in found if v is not None})

    keys = sorted({k for r in [*a_runs, *b_runs] for k in r.record.get("environment", {})})
    # a side that does not record a field (runs read back from MLflow have no environment) is not compared
    return {k: [va, vb] for k in keys if (va := values(a_runs, k)) and (vb := values(b_runs, k)) and va != vb}


# ----------------------------------------------------------------------------------------------------------------
# Outputs and validity
# ----------------------------------------------------------------------------------------------------------------


def output_differences(a: Any, b: Any, tolerance: float, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where two case outputs differ: strings, ints and structure exactly, floats beyond ``tolerance``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return [] if a == b else [(path or ".", a, b)]
    if isinstance(a, int | float) and isinstance(b, int | float):
        if isinstance(a, int) and isinstance(b, int):
            return [] if a == b else [(path or ".", a, b)]
        same = math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance) or (math.isnan(a) and math.isnan(b))
        return [] if same else [(path or ".", a, b)]
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(dict.fromkeys([*a, *b])):
            if key not in a or key not in b:
                out.append((f"{path}.{key}", a.get(key, "<absent>"), b.get(key, "<absent>")))
            else:
                out += output_differences(a[key], b[key], tolerance, f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(f"{path}[len]", len(a), len(b))]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in output_differences(x, y, tolerance, f"{path}[{i}]")]
    return [] if a == b else [(path or ".", a, b)]


def case_state(case: dict[str, Any]) -> str:
    """valid | invalid (the schema check failed) | raised (the call raised)."""
    if case.get("error"):
        return "raised"
    return "valid" if case.get("valid") else "invalid"


# ----------------------------------------------------------------------------------------------------------------
# The comparison
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PairResult:
    task: str
    configuration: str
    a_record: str
    b_record: str
    a_status: str
    b_status: str
    a_batch_size: int | None = None
    b_batch_size: int | None = None
    a_n: int = 0
    b_n: int = 0
    a_median_ms: float | None = None
    b_median_ms: float | None = None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: str = "not compared"
    conclusive: bool = False
    output_changes: list[dict[str, Any]] = field(default_factory=list)
    validity_changes: list[dict[str, Any]] = field(default_factory=list)
    cases_only_in: dict[str, list[str]] = field(default_factory=dict)

    @property
    def regressions(self) -> list[str]:
        """What in this pair fails a gate: slower latency, a run or case that worked in A and not in B."""
        found = []
        if self.verdict == "slower":
            found.append("slower")
        if self.a_status == "FINISHED" and self.b_status != "FINISHED":
            found.append(f"run {self.b_status}")
        found += [f"case {c['case']} {c['a']} -> {c['b']}" for c in self.validity_changes if c["a"] == "valid"]
        return found


@dataclass
class Comparison:
    a: str
    b: str
    settings: dict[str, Any]
    differs: dict[str, list[Any]]
    environment: dict[str, list[Any]]
    extra_keys: dict[str, list[str]]
    pairs: list[PairResult]
    only_a: list[dict[str, str]]
    only_b: list[dict[str, str]]

    def counts(self) -> dict[str, int]:
        verdicts = [p.verdict for p in self.pairs]
        return {
            "pairs": len(self.pairs),
            "slower": verdicts.count("slower"),
            "faster": verdicts.count("faster"),
            "no change": verdicts.count("no change"),
            "not compared": verdicts.count("not compared"),
            "outputs changed": sum(1 for p in self.pairs if p.output_changes),
            "validity changed": sum(1 for p in self.pairs if p.validity_changes),
            "unpaired A": len(self.only_a),
            "unpaired B": len(self.only_b),
        }

    def regressions(self, fail_on_output_change: bool = False) -> list[str]:
        found = [f"{p.task} {p.configuration}: {r}" for p in self.pairs for r in p.regressions]
        if fail_on_output_change:
            found += [f"{p.task} {p.configuration}: outputs changed" for p in self.pairs if p.output_changes]
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "settings": self.settings,
            "differs": self.differs,
            "environment_differs": self.environment,
            "paired_by": {"always": ["task", "model", "ablation", "ablation point"], "per_task": self.extra_keys},
            "counts": self.counts(),
            "regressions": self.regressions(self.settings["fail_on_output_change"]),
            "pairs": [asdict(p) for p in self.pairs],
            "unpaired": {"a": self.only_a, "b": self.only_b},
        }


def _samples(run: Run, per_item: bool) -> tuple[list[float], int]:
    bench = run.record.get("benchmark", {})
    batch = int(bench.get("settings", {}).get("batch_size", 1) or 1)
    samples = [float(s) for s in bench.get("samples_ms", [])]
    return ([s / batch for s in samples] if per_item else samples), batch


def _compare_cases(result: PairResult, a: Run, b: Run, tolerance: float) -> None:
    cases_a = {c["id"]: c for c in a.record.get("cases", [])}
    cases_b = {c["id"]: c for c in b.record.get("cases", [])}
    for cid in [c for c in cases_a if c in cases_b]:
        ca, cb = cases_a[cid], cases_b[cid]
        sa, sb = case_state(ca), case_state(cb)
        if sa != sb:
            detail = "; ".join(cb.get("problems") or []) or cb.get("error") or ""
            result.validity_changes.append({"case": cid, "a": sa, "b": sb, "detail": detail[:300]})
        diffs = output_differences(ca.get("output"), cb.get("output"), tolerance)
        if diffs:
            result.output_changes.append(
                {"case": cid, "differences": [{"at": p, "a": x, "b": y} for p, x, y in diffs], "count": len(diffs)}
            )
    only = {"a": [c for c in cases_a if c not in cases_b], "b": [c for c in cases_b if c not in cases_a]}
    result.cases_only_in = {k: v for k, v in only.items() if v}


def compare_runs(
    a_runs: list[Run],
    b_runs: list[Run],
    *,
    a_label: str = "A",
    b_label: str = "B",
    threshold: float = 0.05,
    resamples: int = 2000,
    seed: int = 0,
    per_item: bool = False,
    tolerance: float = 1e-4,
    fail_on_output_change: bool = False,
) -> Comparison:
    """Pair A's and B's runs and compare each pair. Raises CompareError when a side is empty or nothing pairs."""
    for label, runs in ((a_label, a_runs), (b_label, b_runs)):
        if not runs:
            raise CompareError(f"{label}: no run records (expected <folder>/runs/<task>/*.json): run a sweep first")
    pairing = pair_runs(a_runs, b_runs)
    if not pairing.pairs:
        tasks_a, tasks_b = tasks_in(a_runs), tasks_in(b_runs)
        raise CompareError(
            f"no run of {a_label} pairs with a run of {b_label} (paired by task, model, ablation and point): "
            f"A has tasks {tasks_a}, B has {tasks_b}; compare sweeps of the same tasks and models"
        )
    pairs = []
    for ident, a, b in pairing.pairs:
        result = PairResult(ident.task, ident.label, a.path, b.path, a.status, b.status)
        sa, result.a_batch_size = _samples(a, per_item)
        sb, result.b_batch_size = _samples(b, per_item)
        result.a_n, result.b_n = len(sa), len(sb)
        if sa and sb:
            ratio = bootstrap_ratio(sa, sb, resamples=resamples, seed=seed)
            result.a_median_ms, result.b_median_ms = float(np.median(sa)), float(np.median(sb))
            result.ratio, result.ci_low, result.ci_high = ratio.ratio, ratio.low, ratio.high
            result.verdict = verdict(ratio, threshold)
            result.conclusive = result.verdict != "no change" or ci_within_threshold(ratio, threshold)
        _compare_cases(result, a, b, tolerance)
        pairs.append(result)

    def unpaired(items: list[tuple[Identity, Run]]) -> list[dict[str, str]]:
        return [{"task": i.task, "configuration": i.label, "record": r.path, "status": r.status} for i, r in items]

    return Comparison(
        a=a_label,
        b=b_label,
        settings={
            "statistic": "median latency per item (ms)" if per_item else "median latency per call (ms)",
            "confidence": CONFIDENCE,
            "threshold": threshold,
            "resamples": resamples,
            "seed": seed,
            "per_item": per_item,
            "tolerance": tolerance,
            "fail_on_output_change": fail_on_output_change,
        },
        differs=pairing.differs,
        environment=environment_differences(a_runs, b_runs),
        extra_keys=pairing.extra_keys,
        pairs=pairs,
        only_a=unpaired(pairing.only_a),
        only_b=unpaired(pairing.only_b),
    )


def load_folder(folder: Path) -> list[Run]:
    """The runs of a results folder (records under `<folder>/runs/<task>/*.json`)."""
    if not folder.is_dir():
        raise CompareError(f"{folder}: not a folder; give the results_dir of a sweep (it holds runs/<task>/)")
    return load_runs(folder)


def compare_folders(a: Path, b: Path, **options: Any) -> Comparison:
    """compare_runs on the records under two results folders."""
    return compare_runs(load_folder(a), load_folder(b), a_label=str(a), b_label=str(b), **options)


# ----------------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _values(values: list[str]) -> str:
    return ", ".join(v.strip('"') for v in values)


def markdown(c: Comparison) -> str:
    s = c.settings
    t = s["threshold"]
    lines = [
        "# Regression check: A -> B",
        "",
        f"- A: `{c.a}`",
        f"- B: `{c.b}`",
    ]
    changed = [f"`{k}` {_values(va)} -> {_values(vb)}" for k, (va, vb) in c.differs.items()]
    changed += [f"environment `{k}` {_values(va)} -> {_values(vb)}" for k, (va, vb) in c.environment.items()]
    lines.append("- what differs: " + ("; ".join(changed) if changed else "no setting (same configurations)"))
    extra = "; ".join(f"{task}: {', '.join(keys)}" for task, keys in c.extra_keys.items())
    lines += [
        "- paired by: task, model, ablation and its point"
        + (f", and the settings that vary within a side ({extra})" if extra else ""),
        f"- latency: {s['statistic']}, ratio B/A with a {s['confidence']:.0%} bootstrap CI "
        f"({s['resamples']} resamples, seed {s['seed']}); threshold {t:.1%}: slower when the whole CI is above "
        f"{1 + t:.3f}, faster when it is below {1 / (1 + t):.3f}, else no change (*: the CI crosses a bound, more "
        "samples would tell)",
        "",
        "| task | configuration | A median (ms) | B median (ms) | B/A | 95% CI | samples A/B | verdict |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for p in c.pairs:
        ci = "-" if p.ci_low is None else f"{p.ci_low:.3f} - {p.ci_high:.3f}"
        status = "" if p.a_status == p.b_status == "FINISHED" else f" (A {p.a_status}, B {p.b_status})"
        mark = "" if p.conclusive or p.verdict != "no change" else " *"
        lines.append(
            f"| {p.task} | {_short(p.configuration)} | {_num(p.a_median_ms)} | {_num(p.b_median_ms)} | "
            f"{_num(p.ratio, 3)} | {ci} | {p.a_n}/{p.b_n} | {p.verdict}{mark}{status} |"
        )
    lines += ["", "## Outputs that changed", ""]
    changed_pairs = [p for p in c.pairs if p.output_changes]
    if not changed_pairs:
        lines.append(f"None: every case output of every pair is the same (floats within {s['tolerance']:g}).")
    for p in changed_pairs:
        lines.append(f"- {p.task} {p.configuration}: {len(p.output_changes)} case(s)")
        for change in p.output_changes:
            shown = change["differences"][:3]
            more = f" (+{change['count'] - len(shown)} more)" if change["count"] > len(shown) else ""
            diffs = "; ".join(f"`{d['at']}` {_short(d['a'], 40)} -> {_short(d['b'], 40)}" for d in shown)
            lines.append(f"  - {change['case']}: {diffs}{more}")
    lines += ["", "## Validity changes", ""]
    validity = [(p, v) for p in c.pairs for v in p.validity_changes]
    if not validity:
        lines.append("None: every case is valid, invalid or raised in B as it was in A.")
    for p, v in validity:
        lines.append(f"- {p.task} {p.configuration} / {v['case']}: {v['a']} -> {v['b']} {_short(v['detail'], 120)}")
    run_changes = [p for p in c.pairs if p.a_status != p.b_status]
    for p in run_changes:
        lines.append(f"- {p.task} {p.configuration}: run {p.a_status} -> {p.b_status}")
    case_gaps = [(p, side, ids) for p in c.pairs for side, ids in p.cases_only_in.items()]
    for p, side, ids in case_gaps:
        lines.append(f"- {p.task} {p.configuration}: cases only in {side.upper()}: {', '.join(ids)}")
    if c.only_a or c.only_b:
        lines += ["", "## Unpaired runs", ""]
        for side, items in (("A", c.only_a), ("B", c.only_b)):
            lines += [
                f"- only in {side}: {u['task']} {u['configuration']} (`{u['record']}`, {u['status']})" for u in items
            ]
    counts = c.counts()
    regressions = c.regressions(s["fail_on_output_change"])
    lines += [
        "",
        "## Verdict",
        "",
        f"{counts['pairs']} pairs: {counts['slower']} slower, {counts['faster']} faster, "
        f"{counts['no change']} no change"
        + (f", {counts['not compared']} not compared (no samples)" if counts["not compared"] else "")
        + f"; outputs changed in {counts['outputs changed']}, validity in {counts['validity changed']}; "
        f"unpaired: {counts['unpaired A']} in A, {counts['unpaired B']} in B.",
        "",
        ("REGRESSION: " + "; ".join(regressions)) if regressions else "No regression beyond the threshold.",
    ]
    return "\n".join(lines) + "\n"


def write(c: Comparison, out: Path) -> tuple[Path, Path]:
    """compare.md and compare.json in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "compare.md", out / "compare.json"
    md.write_text(markdown(c), encoding="utf-8")
    js.write_text(json.dumps(c.as_json(), indent=2, default=str) + "\n", encoding="utf-8")
    return md, js
