"""Translation (``pipeline("translation")``, ``pipeline("translation_xx_to_yy")``), as transformers 4.57's
``TranslationPipeline`` did it."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from pipelab.pipelines.registration import parse_translation_task
from pipelab.pipelines.text2text_generation import Text2TextGenerationPipeline

logger = logging.getLogger(__name__)


class TranslationPipeline(Text2TextGenerationPipeline):
    """Translate text with an encoder-decoder model; outputs ``[{"translation_text": ...}]``.

    Example::

        translator = pipeline("translation", model=path)            # a single-pair model (Marian)
        translator("Ce cours est produit par Hugging Face.")
        translator = pipeline("translation", model=m2m100_path)     # a multilingual model
        translator("Hello", src_lang="en", tgt_lang="fr")
        translator = pipeline("translation_en_to_fr", model=path)   # the pair in the task name

    Languages: ``src_lang``/``tgt_lang`` (at construction or per call) or a ``translation_xx_to_yy`` task name.
    Multilingual tokenizers (M2M100, NLLB, mBART ...) then mark the source language and force the target
    language token as the first generated token (``forced_bos_token_id``); single-pair models ignore them.
    A T5-style model gets its prefix (``translate English to French: ``) from ``task_specific_params``; with
    the bare ``translation`` task, its first ``translation_*`` entry is used (with a warning, as in v4).

    Options: as the other text-to-text pipelines (``truncation``, ``return_tensors``, ``max_length``,
    ``max_new_tokens`` ...); inputs may be a string or a list of strings (batched with ``batch_size=``).
    """

    return_name = "translation"

    def __init__(self, model: Any, *args: Any, task: str = "", **kwargs: Any) -> None:
        # transformers 4's pipeline() did this before building the pipeline; transformers 5's no longer does.
        task_params = getattr(model.config, "task_specific_params", None) or {}
        if task == "translation":
            for key in task_params:
                if key.startswith("translation"):
                    warnings.warn(
                        f'"translation" task was used, instead of "translation_XX_to_YY", defaulting to "{key}"',
                        UserWarning,
                        stacklevel=2,
                    )
                    task = key
                    break
        super().__init__(model, *args, task=task, **kwargs)

    def _sanitize_parameters(
        self, src_lang: str | None = None, tgt_lang: str | None = None, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(**kwargs)
        if src_lang is not None:
            preprocess_params["src_lang"] = src_lang
        if tgt_lang is not None:
            preprocess_params["tgt_lang"] = tgt_lang
        if src_lang is None and tgt_lang is None:
            # The task name carries the pair when the caller does not.
            pair = parse_translation_task(self.task or "")
            if pair is not None:
                preprocess_params["src_lang"], preprocess_params["tgt_lang"] = pair
        return preprocess_params, forward_params, postprocess_params

    def check_inputs(self, input_length: int, min_length: int, max_length: int) -> None:
        """Warn when the input is nearly as long as the longest allowed translation."""
        if input_length > 0.9 * max_length:
            logger.warning(
                f"Your input_length: {input_length} is bigger than 0.9 * max_length: {max_length}. You might "
                "consider increasing your max_length manually, e.g. translator('...', max_length=400)"
            )

    def preprocess(
        self,
        inputs: str | list[str],
        truncation: Any = False,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Tokenize one input; multilingual tokenizers also set the languages (and the forced BOS token)."""
        build = getattr(self.tokenizer, "_build_translation_inputs", None)
        if build is None:
            return self._parse_and_tokenize(inputs, truncation=truncation)
        if src_lang is None or tgt_lang is None:
            raise ValueError(
                f"{type(self.tokenizer).__name__} is multilingual: pass src_lang=... and tgt_lang=... (language "
                "codes of this tokenizer, e.g. 'en'/'fr' for M2M100, 'eng_Latn'/'fra_Latn' for NLLB, "
                "'en_XX'/'fr_XX' for mBART), or use a task name like 'translation_en_to_fr'."
            )
        try:
            encoded = build(inputs, return_tensors="pt", truncation=truncation, src_lang=src_lang, tgt_lang=tgt_lang)
        except KeyError as err:
            raise ValueError(
                f"{type(self.tokenizer).__name__} does not know the language code {err} (src_lang={src_lang!r}, "
                f"tgt_lang={tgt_lang!r}): use this tokenizer's own codes, e.g. 'en'/'fr' for M2M100, "
                "'eng_Latn'/'fra_Latn' for NLLB, 'en_XX'/'fr_XX' for mBART."
            ) from err
        encoded.pop("token_type_ids", None)
        return encoded

    def __call__(self, inputs: str | list[str], *args: Any, **kwargs: Any) -> list[dict[str, Any]] | Any:
        """Translate one text or a list of texts."""
        return super().__call__(inputs, *args, **kwargs)
