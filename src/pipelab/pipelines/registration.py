"""Put the pipelines transformers 5 removed back into ``transformers.pipelines.PIPELINE_REGISTRY``.

transformers 5 refuses ``question-answering``, ``summarization``, ``translation`` (and ``translation_xx_to_yy``)
and ``text2text-generation`` in two places: ``_resolve_deprecated_task`` raises a KeyError for every name listed
in ``REMOVED_TASKS`` before the registry is even consulted, and ``PipelineRegistry.check_task`` no longer parses
``translation_xx_to_yy``. Registering a task therefore takes three steps, each applied only for tasks the
installed transformers lacks:

1. add the task to the registry, in the same shape as transformers' own ``SUPPORTED_TASKS`` entries;
2. drop it from ``REMOVED_TASKS``, so ``pipeline()`` stops raising the migration-guide KeyError;
3. for translation, let the registry's ``check_task`` map ``translation_xx_to_yy`` to ``translation`` with the
   language pair as task options (as transformers 4 did), which ``pipeline()`` then uses to pick a default model.

``import transformers.pipelines`` costs seconds (it imports torch and the auto classes), so registration does
not force it: if the module is already imported it is patched at once, otherwise a post-import hook patches it
the moment something imports it (``from transformers import pipeline`` included). ``import pipelab`` stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

_TARGET_MODULE = "transformers.pipelines"
_lock = threading.Lock()
_hook_installed = False

# Task name -> (pipeline class as a dotted path, auto model class name, default model, revision).
# Dotted paths are what transformers 5's own SUPPORTED_TASKS use: the class module is imported only when the
# task is actually built. Defaults are transformers 4.57's, so `pipeline("question-answering")` resolves the same
# checkpoint as the course (it still needs the hub or a filled cache to download it).
_TASKS: dict[str, tuple[str, str, Any]] = {
    "question-answering": (
        "pipelab.pipelines.question_answering.QuestionAnsweringPipeline",
        "AutoModelForQuestionAnswering",
        {"model": ("distilbert/distilbert-base-cased-distilled-squad", "564e9b5")},
    ),
    "summarization": (
        "pipelab.pipelines.summarization.SummarizationPipeline",
        "AutoModelForSeq2SeqLM",
        {"model": ("sshleifer/distilbart-cnn-12-6", "a4f8f3e")},
    ),
    # Parametrised by (source, target) language: `translation_en_to_fr` looks up ("en", "fr").
    "translation": (
        "pipelab.pipelines.translation.TranslationPipeline",
        "AutoModelForSeq2SeqLM",
        {
            ("en", "fr"): {"model": ("google-t5/t5-base", "a9723ea")},
            ("en", "de"): {"model": ("google-t5/t5-base", "a9723ea")},
            ("en", "ro"): {"model": ("google-t5/t5-base", "a9723ea")},
        },
    ),
    "text2text-generation": (
        "pipelab.pipelines.text2text_generation.Text2TextGenerationPipeline",
        "AutoModelForSeq2SeqLM",
        {"model": ("google-t5/t5-base", "a9723ea")},
    ),
}

RESTORED_TASKS: tuple[str, ...] = tuple(_TASKS)
"""The task names pipelab can restore (``translation`` also covers every ``translation_xx_to_yy``)."""


def parse_translation_task(task: str) -> tuple[str, str] | None:
    """``"translation_en_to_fr"`` -> ``("en", "fr")``; None for any other name (``"translation"`` included)."""
    parts = task.split("_")
    if len(parts) == 4 and parts[0] == "translation" and parts[2] == "to" and parts[1] and parts[3]:
        return parts[1], parts[3]
    return None


def register_pipelines() -> None:
    """Make ``transformers.pipeline()`` build pipelab's pipelines for the tasks transformers 5 removed.

    Idempotent and cheap: patches ``transformers.pipelines`` now if it is imported, else as soon as it is.
    Tasks the installed transformers still provides are left alone.
    """
    global _hook_installed
    with _lock:
        module = sys.modules.get(_TARGET_MODULE)
        if module is not None and hasattr(module, "PIPELINE_REGISTRY"):
            _patch(module)
            return
        if not _hook_installed:
            sys.meta_path.insert(0, _PostImportHook(_TARGET_MODULE, _patch))
            _hook_installed = True


def registered_tasks() -> list[str]:
    """The tasks pipelab has put into transformers' registry in this process (imports transformers.pipelines)."""
    register_pipelines()
    module = importlib.import_module(_TARGET_MODULE)
    restored = getattr(module.PIPELINE_REGISTRY, "_pipelab_restored", None) or {}
    return [task for task in RESTORED_TASKS if restored.get(task)]


def _patch(module: ModuleType) -> None:
    """Register the missing tasks into an imported ``transformers.pipelines`` module (once per registry)."""
    registry = module.PIPELINE_REGISTRY
    # Marked on the registry, not the module: a reloaded module keeps its attributes but gets a new registry.
    if getattr(registry, "_pipelab_restored", None) is not None:
        return
    removed: dict[str, str] = getattr(module, "REMOVED_TASKS", {})
    restored: dict[str, bool] = {}
    for task, (impl, auto_class, default) in _TASKS.items():
        if task in registry.supported_tasks or task in registry.task_aliases:
            restored[task] = False  # the installed transformers has its own: keep it
            continue
        # Written as a plain entry rather than via `register_pipeline`: that method also tags the class as a
        # *custom* pipeline (`_registered_impl`), which makes `save_pretrained` write `custom_pipelines` into
        # config.json, and loading such a checkpoint would then demand trust_remote_code.
        # The auto classes are in the module's namespace (it imports them); the package has them lazily too.
        model_class = getattr(module, auto_class, None) or getattr(importlib.import_module("transformers"), auto_class)
        registry.supported_tasks[task] = {
            "impl": impl,
            "pt": (model_class,),
            "default": default,
            "type": "text",
        }
        removed.pop(task, None)
        restored[task] = True
    if restored.get("translation"):
        _teach_translation_pairs(registry)
    registry._pipelab_restored = restored
    module._pipelab_restored = restored


def _teach_translation_pairs(registry: Any) -> None:
    """Make ``registry.check_task`` accept ``translation_xx_to_yy`` as transformers 4's registry did."""
    original: Callable[[str], tuple[str, dict, Any]] = registry.check_task

    def check_task(task: str) -> tuple[str, dict, Any]:
        pair = parse_translation_task(task)
        if pair is not None:
            return "translation", registry.supported_tasks["translation"], pair
        if task.startswith("translation_"):
            raise KeyError(f"Invalid translation task {task!r}: use 'translation' or 'translation_XX_to_YY'")
        return original(task)

    # An instance attribute shadows the method for this registry only; other registries keep the class's.
    registry.check_task = check_task


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Runs ``callback(module)`` right after ``module_name`` has been executed by its normal loader."""

    def __init__(self, module_name: str, callback: Callable[[ModuleType], None]) -> None:
        self.module_name = module_name
        self.callback = callback

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname != self.module_name:
            return None
        # Let the other finders locate the real module, then wrap its loader.
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _CallbackLoader(spec.loader, self.callback)
        return spec


class _CallbackLoader(importlib.abc.Loader):
    """Delegates to the real loader and calls back once the module body has run."""

    def __init__(self, loader: Any, callback: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._callback(module)

    def __getattr__(self, name: str) -> Any:
        # get_resource_reader, get_filename, is_package ...: whatever else importlib asks of the real loader.
        return getattr(self._loader, name)
