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


def get_task(name: str, *, prompted: bool = False) -> Task:
    """The task module for a task name (config names, e.g. 'ner', 'zero-shot-classification').

    prompted=True: the task done by an instruct model through text-generation (pipelab.tasks.prompted).
    """
    if name not in TASK_TYPES:
        raise KeyError(f"unknown task '{name}'. Valid tasks: {', '.join(TASK_TYPES)}")
    if prompted:
        from pipelab.tasks.prompted import prompted_task

        return prompted_task(name)
    return TASK_TYPES[name]()


__all__ = ["Case", "CaseResult", "Task", "TaskContext", "get_task", "TASK_TYPES"]
