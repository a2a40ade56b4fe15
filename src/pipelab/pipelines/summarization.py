"""Summarization (``pipeline("summarization")``), as transformers 4.57's ``SummarizationPipeline`` did it."""

from __future__ import annotations

import logging
from typing import Any

from pipelab.pipelines.text2text_generation import Text2TextGenerationPipeline

logger = logging.getLogger(__name__)


class SummarizationPipeline(Text2TextGenerationPipeline):
    """Summarize documents with an encoder-decoder model; outputs ``[{"summary_text": ...}]``.

    Example::

        summarizer = pipeline("summarization", model=path)
        summarizer(long_text, min_length=10, max_length=60)

    Inputs: a string or a list of strings (batched with ``batch_size=``). The model config's ``prefix`` (T5:
    ``summarize: ``, from ``task_specific_params["summarization"]``) is prepended. Options: ``min_length``,
    ``max_length``, ``max_new_tokens`` and any other ``generate()`` parameter, ``truncation`` (cut documents
    longer than the model's maximum), ``return_text`` / ``return_tensors`` (``summary_token_ids``),
    ``clean_up_tokenization_spaces``. Defaults unless the model's generation config says otherwise:
    ``max_new_tokens=256, num_beams=4``.

    Warns, as transformers 4 did, when ``max_length`` is not shorter than the input (a summary is meant to
    be shorter) or smaller than ``min_length``.
    """

    return_name = "summary"

    def check_inputs(self, input_length: int, min_length: int, max_length: int) -> None:
        """Warn when the length settings contradict each other or the idea of a summary."""
        if max_length < min_length:
            logger.warning(f"Your min_length={min_length} must be inferior than your max_length={max_length}.")
        if input_length < max_length:
            logger.warning(
                f"Your max_length is set to {max_length}, but your input_length is only {input_length}. Since this "
                "is a summarization task, where outputs shorter than the input are typically wanted, you might "
                f"consider decreasing max_length manually, e.g. summarizer('...', max_length={input_length // 2})"
            )

    def __call__(self, inputs: str | list[str], *args: Any, **kwargs: Any) -> list[dict[str, Any]] | Any:
        """Summarize one document or a list of documents."""
        return super().__call__(inputs, *args, **kwargs)
