"""pipelab's restored pipelines give what transformers 4.57.6's own pipelines gave, on the same weights.

The expected outputs in tests/fixtures/parity/*.json were produced once with transformers 4.57.6 (see the
README there). Each model is rebuilt here and its files' sha256 compared with the fixture first, so a failure
says whether the weights drifted or the pipeline did.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import pytest

import pipelab  # noqa: F401  (registers the pipelines)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "parity"
sys.path.insert(0, str(FIXTURES))
import parity_models  # noqa: E402

FIXTURE_FILES = ("question_answering.json", "summarization.json", "translation.json", "text2text_generation.json")
SCORE_REL_TOL = 1e-4


def _load(file_name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / file_name).read_text(encoding="utf-8"))


FIXTURE_DATA = {file_name: _load(file_name) for file_name in FIXTURE_FILES}
CASES = [
    pytest.param(file_name, case, id=case["id"]) for file_name, data in FIXTURE_DATA.items() for case in data["cases"]
]


@pytest.fixture(scope="module")
def model_dirs() -> dict[str, Path]:
    """name -> directory, filled lazily by `_model_dir` once the model's fingerprint is checked."""
    return {}


def _model_dir(name: str, file_name: str, cache: dict[str, Path], base: Path) -> Path:
    if name not in cache:
        model_dir = parity_models.ensure_model(name, base)
        expected = FIXTURE_DATA[file_name]["models"][name]["files_sha256"]
        problems = parity_models.drift(expected, parity_models.fingerprint(model_dir))
        if problems:
            pytest.fail(
                f"model {name!r} rebuilt here differs from the one the parity fixtures were made with, so "
                f"its outputs cannot be compared: {'; '.join(problems)}. The builder (pipelab.tiny or "
                "tests/fixtures/parity/parity_models.py) or a library version changed: remake the fixtures "
                "as tests/fixtures/parity/README.md says."
            )
        cache[name] = model_dir
    return cache[name]


@pytest.fixture(scope="module")
def pipelines() -> dict[tuple[str, str, str], Any]:
    """Loaded pipelines, shared by the cases that use the same task, model and construction kwargs."""
    return {}


def _to_json(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    return value


def assert_same(actual: Any, expected: Any, where: str = "output") -> None:
    """Equal structure, keys, strings and integers; floats within SCORE_REL_TOL (relative)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a dict, got {type(actual).__name__}: {actual!r}"
        assert sorted(actual) == sorted(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {type(actual).__name__}: {actual!r}"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items != {len(expected)}: {actual!r}"
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_same(got, want, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert isinstance(actual, float), f"{where}: expected a Python float, got {type(actual).__name__}"
        assert math.isclose(actual, expected, rel_tol=SCORE_REL_TOL, abs_tol=1e-9), (
            f"{where}: {actual!r} != {expected!r}"
        )
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize(("file_name", "case"), CASES)
def test_output_matches_transformers_4_57(
    file_name: str,
    case: dict[str, Any],
    model_dirs: dict[str, Path],
    pipelines: dict[tuple[str, str, str], Any],
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from transformers import pipeline

    model_dir = _model_dir(case["model"], file_name, model_dirs, tmp_path_factory.getbasetemp() / "parity-models")
    key = (case["task"], case["model"], json.dumps(case["init"], sort_keys=True))
    if key not in pipelines:
        pipelines[key] = pipeline(case["task"], model=str(model_dir), device="cpu", **case["init"])
    pipe = pipelines[key]
    assert type(pipe).__module__.startswith("pipelab.pipelines."), type(pipe)

    with caplog.at_level(logging.WARNING, logger="pipelab.pipelines"):
        result = pipe(*case["args"], **case["kwargs"])
    assert_same(_to_json(result), case["expected"])
    # transformers 4's length warnings (summarization / translation), word for word.
    logged = [record.getMessage() for record in caplog.records if record.name.startswith("pipelab.pipelines")]
    assert logged == case["warnings"]


def test_fingerprint_check_names_the_files_that_drifted(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text('{"a": 1, "transformers_version": "5.23.0"}')
    before = parity_models.fingerprint(tmp_path)
    # Another transformers version alone is no drift...
    (tmp_path / "config.json").write_text('{"a": 1, "transformers_version": "5.99.0"}')
    assert parity_models.drift(before, parity_models.fingerprint(tmp_path)) == []
    # ...other weights are.
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    problems = parity_models.drift(before, parity_models.fingerprint(tmp_path))
    assert len(problems) == 1 and problems[0].startswith("model.safetensors: sha256")
