"""How pipelab puts the removed tasks back into transformers' pipeline registry."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import pipelab  # noqa: F401  (registers the pipelines)
from pipelab.pipelines import RESTORED_TASKS, register_pipelines, registered_tasks
from pipelab.pipelines.registration import _patch, _PostImportHook, parse_translation_task


def test_import_pipelab_restores_every_removed_task() -> None:
    import transformers.pipelines as tp

    assert registered_tasks() == list(RESTORED_TASKS)
    for task in RESTORED_TASKS:
        assert task not in tp.REMOVED_TASKS
        assert task in tp.get_supported_tasks()
        normalized, entry, options = tp.check_task(task)
        assert (normalized, options) == (task, None)
        assert entry["impl"].startswith("pipelab.pipelines.")
    # Tasks pipelab does not restore are still refused with transformers' own message.
    with pytest.raises(KeyError, match="migration"):
        tp.check_task("visual-question-answering")


@pytest.mark.parametrize(
    ("task", "pair"),
    [("translation_en_to_fr", ("en", "fr")), ("translation_de_to_en", ("de", "en")), ("translation", None)],
)
def test_translation_task_names_carry_the_language_pair(task: str, pair: tuple[str, str] | None) -> None:
    import transformers.pipelines as tp

    assert parse_translation_task(task) == pair
    normalized, entry, options = tp.check_task(task)
    assert normalized == "translation" and options == pair
    assert entry["impl"] == "pipelab.pipelines.translation.TranslationPipeline"
    if pair == ("en", "fr"):
        # The pair picks transformers 4's default model for it.
        assert entry["default"][pair]["model"][0] == "google-t5/t5-base"


@pytest.mark.parametrize("task", ["translation_en_fr", "translation_en_to_", "translation_x_to_y_z"])
def test_malformed_translation_names_are_refused(task: str) -> None:
    import transformers.pipelines as tp

    with pytest.raises(KeyError, match="translation_XX_to_YY"):
        tp.check_task(task)


def test_registering_twice_changes_nothing() -> None:
    import transformers.pipelines as tp

    before = {task: tp.PIPELINE_REGISTRY.supported_tasks[task] for task in RESTORED_TASKS}
    check_task = tp.PIPELINE_REGISTRY.check_task
    hooks = len(sys.meta_path)
    register_pipelines()
    register_pipelines()
    assert {task: tp.PIPELINE_REGISTRY.supported_tasks[task] for task in RESTORED_TASKS} == before
    assert tp.PIPELINE_REGISTRY.check_task is check_task
    assert len(sys.meta_path) == hooks


def test_tasks_the_installed_transformers_still_has_are_left_alone() -> None:
    from transformers.models.auto.modeling_auto import AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM
    from transformers.pipelines.base import PipelineRegistry

    # A transformers that still ships question-answering and translation (as 4.x did).
    own_qa = {"impl": "their.QuestionAnsweringPipeline", "pt": (AutoModelForQuestionAnswering,)}
    own_translation = {"impl": "their.TranslationPipeline", "pt": (AutoModelForSeq2SeqLM,)}
    registry = PipelineRegistry({"question-answering": own_qa, "translation": own_translation}, {})
    own_check_task = registry.check_task
    module = types.ModuleType("fake_transformers_pipelines")
    module.PIPELINE_REGISTRY = registry
    module.REMOVED_TASKS = {"summarization": "gone"}
    module.AutoModelForQuestionAnswering = AutoModelForQuestionAnswering
    module.AutoModelForSeq2SeqLM = AutoModelForSeq2SeqLM

    _patch(module)

    assert registry.supported_tasks["question-answering"] is own_qa
    assert registry.supported_tasks["translation"] is own_translation
    assert registry.supported_tasks["summarization"]["impl"] == "pipelab.pipelines.summarization.SummarizationPipeline"
    assert module.REMOVED_TASKS == {}
    # Its own translation handles its own task names: no patched check_task.
    assert registry.check_task == own_check_task
    assert module._pipelab_restored == {
        "question-answering": False,
        "summarization": True,
        "translation": False,
        "text2text-generation": True,
    }


def test_import_pipelab_stays_cheap() -> None:
    script = (
        "import sys, pipelab\n"
        "heavy = [m for m in ('torch', 'transformers.pipelines') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_post_import_hook_patches_a_module_when_it_is_first_imported(tmp_path: Path) -> None:
    # The mechanism that registers into transformers.pipelines when it is imported after pipelab,
    # shown on a throwaway module so that the test process's transformers stays untouched.
    (tmp_path / "pipelab_hook_probe.py").write_text("VALUE = 1\n")
    seen: list[types.ModuleType] = []
    hook = _PostImportHook("pipelab_hook_probe", seen.append)
    sys.path.insert(0, str(tmp_path))
    sys.meta_path.insert(0, hook)
    try:
        import pipelab_hook_probe

        assert seen == [pipelab_hook_probe] and pipelab_hook_probe.VALUE == 1
        assert importlib.reload(pipelab_hook_probe).VALUE == 1  # the wrapped loader still reloads
    finally:
        sys.meta_path.remove(hook)
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pipelab_hook_probe", None)
