"""The pipelines transformers 5 removed, back as ``transformers.Pipeline`` subclasses.

After ``register_pipelines()`` (which ``import pipelab`` calls), ``transformers.pipeline()`` builds them:
``"question-answering"``, ``"summarization"``, ``"translation"`` / ``"translation_xx_to_yy"`` and
``"text2text-generation"``. Importing this package is cheap: the classes (and torch) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipelab.pipelines.registration import RESTORED_TASKS, register_pipelines, registered_tasks

if TYPE_CHECKING:
    from pipelab.pipelines.question_answering import QuestionAnsweringPipeline
    from pipelab.pipelines.summarization import SummarizationPipeline
    from pipelab.pipelines.text2text_generation import Text2TextGenerationPipeline
    from pipelab.pipelines.translation import TranslationPipeline

__all__ = [
    "RESTORED_TASKS",
    "QuestionAnsweringPipeline",
    "SummarizationPipeline",
    "Text2TextGenerationPipeline",
    "TranslationPipeline",
    "register_pipelines",
    "registered_tasks",
]

_LAZY_CLASSES = {
    "QuestionAnsweringPipeline": "pipelab.pipelines.question_answering",
    "SummarizationPipeline": "pipelab.pipelines.summarization",
    "Text2TextGenerationPipeline": "pipelab.pipelines.text2text_generation",
    "TranslationPipeline": "pipelab.pipelines.translation",
}


def __getattr__(name: str) -> Any:
    # The classes import torch and transformers.pipelines (seconds): load them only when asked for.
    if name in _LAZY_CLASSES:
        value = getattr(importlib.import_module(_LAZY_CLASSES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
