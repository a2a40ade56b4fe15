"""One small module per course task, all behind the protocol of `pipelab.tasks.base.Task`."""

from __future__ import annotations

from pipelab.tasks.base import Case, CaseResult, Task, TaskContext
from pipelab.tasks.fill_mask import FillMask
from pipelab.tasks.image_classification import ImageClassification
from pipelab.tasks.ner import Ner
from pipelab.tasks.question_answering import QuestionAnswering
from pipelab.tasks.speech_recognition import SpeechRecognition
from pipelab.tasks.summarization import Summarization
from pipelab.tasks.text_classification import TextClassification
from pipelab.tasks.text_generation import TextGeneration
from pipelab.tasks.translation import Translation
from pipelab.tasks.zero_shot import ZeroShot

TASK_TYPES: dict[str, type[Task]] = {
    t.name: t
    for t in (
        TextClassification,
        ZeroShot,
        TextGeneration,
        FillMask,
        Ner,
        QuestionAnswering,
        Summarization,
        Translation,
        ImageClassification,
        SpeechRecognition,
    )
}


def get_task(name: str) -> Task:
    """The task module for a task name (config names, e.g. 'ner', 'zero-shot-classification')."""
    if name not in TASK_TYPES:
        raise KeyError(f"unknown task '{name}'. Valid tasks: {', '.join(TASK_TYPES)}")
    return TASK_TYPES[name]()


__all__ = ["Case", "CaseResult", "Task", "TaskContext", "get_task", "TASK_TYPES"]
