"""Sequence-to-sequence generation (``pipeline("text2text-generation")``), the base of summarization and
translation, as transformers 4.57's ``Text2TextGenerationPipeline`` was.

Generation parameters follow transformers 5's own rules (``Pipeline._prepare_generate_kwargs``): a call's
parameters beat those given at construction, which beat the model's generation config, which beats this
pipeline's defaults (``max_new_tokens=256, num_beams=4``, transformers 4's defaults for these tasks). A default
``max_new_tokens`` is dropped when a ``max_length`` is set, so ``max_length`` works as callers expect.
"""

from __future__ import annotations

import enum
import logging
import warnings
from typing import Any

from transformers import GenerationConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
from transformers.pipelines.base import Pipeline

logger = logging.getLogger(__name__)

# What generate() uses when nobody sets them (GenerationConfig() itself holds None in transformers 5).
_GENERATE_DEFAULTS = GenerationConfig._get_default_generation_params()
_GENERATE_DEFAULT_MAX_LENGTH: int = _GENERATE_DEFAULTS["max_length"]
_GENERATE_DEFAULT_MIN_LENGTH: int = _GENERATE_DEFAULTS["min_length"]


class ReturnType(enum.Enum):
    """What each record holds: token ids, text, or both."""

    TENSORS = 0
    TEXT = 1
    BOTH = 2


class Text2TextGenerationPipeline(Pipeline):
    """Generate text from text with an encoder-decoder model; outputs ``[{"generated_text": ...}]``.

    Inputs: a string, or a list of strings (one result list each; a flat list of records when every input
    gives exactly one). The model config's ``prefix`` (and ``task_specific_params[task]``, as used by T5's
    checkpoints: ``prefix`` plus generation parameters) is applied to every input.

    Options: ``truncation`` (False: cut inputs longer than the model's maximum when True),
    ``return_text`` / ``return_tensors`` (text by default; ``return_tensors=True`` gives the token ids under
    ``<name>_token_ids`` instead, both with ``return_text=True``), ``clean_up_tokenization_spaces`` (False),
    ``stop_sequence`` (stop on the first token of this string), and any ``generate()`` parameter
    (``max_length``, ``max_new_tokens``, ``min_length``, ``num_beams``, ``do_sample`` ...).
    """

    _pipeline_calls_generate = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True
    _default_generation_config = GenerationConfig(max_new_tokens=256, num_beams=4)

    # Key prefix of the records: "generated_text", "summary_text", "translation_text".
    return_name = "generated"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError(f"{self.task or 'text2text-generation'} needs the model's tokenizer: pass tokenizer=...")
        self.check_model_type(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)
        self._apply_task_specific_params()

    def _apply_task_specific_params(self) -> None:
        """Use ``config.task_specific_params[task]``: its ``prefix`` and its generation parameters.

        transformers 5 no longer reads this legacy field, but T5 checkpoints rely on it for their
        ``summarize: `` and ``translate English to French: `` prefixes. The config's dict is copied, not
        popped from as transformers 4 did, so the model's config stays intact.
        """
        params = dict((getattr(self.model.config, "task_specific_params", None) or {}).get(self.task) or {})
        if "prefix" in params:
            self.prefix = params.pop("prefix")
        # Below what the caller passed at construction, above the model's generation config.
        self._generate_kwargs = {**params, **self._generate_kwargs}

    def _sanitize_parameters(
        self,
        return_tensors: bool | None = None,
        return_text: bool | None = None,
        return_type: ReturnType | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        truncation: Any = None,
        stop_sequence: str | None = None,
        **generate_kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess_params: dict[str, Any] = {}
        if truncation is not None:
            preprocess_params["truncation"] = truncation

        postprocess_params: dict[str, Any] = {}
        if return_type is None and (return_tensors is not None or return_text is not None):
            want_tensors = bool(return_tensors)
            want_text = return_text if return_text is not None else not want_tensors
            if not (want_tensors or want_text):
                raise ValueError("return_text=False and return_tensors=False leave nothing to return: enable one.")
            if want_tensors and want_text:
                return_type = ReturnType.BOTH
            else:
                return_type = ReturnType.TENSORS if want_tensors else ReturnType.TEXT
        if return_type is not None:
            postprocess_params["return_type"] = return_type
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces

        if stop_sequence is not None:
            stop_sequence_ids = self.tokenizer.encode(stop_sequence, add_special_tokens=False)
            if len(stop_sequence_ids) > 1:
                warnings.warn(
                    "Stopping on a multiple token sequence is not supported: the first token of the stop sequence "
                    "is used as the stop token.",
                    UserWarning,
                    stacklevel=3,
                )
            generate_kwargs["eos_token_id"] = stop_sequence_ids[0]

        forward_params = generate_kwargs
        if self.assistant_model is not None:
            forward_params["assistant_model"] = self.assistant_model
        if self.assistant_tokenizer is not None:
            forward_params["tokenizer"] = self.tokenizer
            forward_params["assistant_tokenizer"] = self.assistant_tokenizer
        return preprocess_params, forward_params, postprocess_params

    def __call__(self, inputs: str | list[str], *args: Any, **kwargs: Any) -> list[dict[str, Any]] | Any:
        """Generate for one text or a list of texts; see the class docstring for the options."""
        result = super().__call__(inputs, *args, **kwargs)
        # A list of texts that each gave one record comes back flat, as in transformers 4.
        if (
            isinstance(inputs, list)
            and all(isinstance(item, str) for item in inputs)
            and all(len(res) == 1 for res in result)
        ):
            return [res[0] for res in result]
        return result

    def check_inputs(self, input_length: int, min_length: int, max_length: int) -> None:
        """Warn about generation lengths that make little sense for this task (nothing to check here)."""

    def _parse_and_tokenize(self, inputs: str | list[str], truncation: Any) -> dict[str, Any]:
        prefix = self.prefix if self.prefix is not None else ""
        if isinstance(inputs, list):
            if self.tokenizer.pad_token_id is None:
                raise ValueError("Batching several texts in one input needs a tokenizer with a pad token.")
            texts: str | list[str] = [prefix + text for text in inputs]
            padding = True
        elif isinstance(inputs, str):
            texts = prefix + inputs
            padding = False
        else:
            raise TypeError(f"Expected a string or a list of strings, got {type(inputs).__name__}: {inputs!r}")
        encoded = self.tokenizer(texts, padding=padding, truncation=truncation, return_tensors="pt")
        # Tokenizers that produce token_type_ids produce something generate() does not take.
        encoded.pop("token_type_ids", None)
        return encoded

    def preprocess(self, inputs: str | list[str], truncation: Any = False) -> dict[str, Any]:
        """Prefix and tokenize one input."""
        return self._parse_and_tokenize(inputs, truncation=truncation)

    def _generation_lengths(self, generate_kwargs: dict[str, Any]) -> tuple[int, int]:
        """(min_length, max_length) in force for a call, as generate() will see them."""
        params = self._get_set_generation_params(generate_kwargs)
        # A config may hold an explicit None, which generate() also reads as "the default".
        min_length = params.get("min_length")
        max_length = params.get("max_length")
        return (
            _GENERATE_DEFAULT_MIN_LENGTH if min_length is None else min_length,
            _GENERATE_DEFAULT_MAX_LENGTH if max_length is None else max_length,
        )

    def _forward(self, model_inputs: dict[str, Any], **generate_kwargs: Any) -> dict[str, Any]:
        input_batch, input_length = model_inputs["input_ids"].shape
        overrides = {}
        forced_bos = model_inputs.pop("forced_bos_token_id", None)
        if forced_bos is not None:
            # Set by multilingual tokenizers for the target language; a padded batch collates it into a list.
            overrides["forced_bos_token_id"] = forced_bos[0] if isinstance(forced_bos, list) else forced_bos
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs, **overrides)
        self.check_inputs(input_length, *self._generation_lengths(generate_kwargs))
        output_ids = self.model.generate(**model_inputs, **generate_kwargs)
        output_batch = output_ids.shape[0]
        # (input batch, sequences per input, length): num_return_sequences > 1 gives several per input.
        output_ids = output_ids.reshape(input_batch, output_batch // input_batch, *output_ids.shape[1:])
        return {"output_ids": output_ids}

    def postprocess(
        self,
        model_outputs: dict[str, Any],
        return_type: ReturnType = ReturnType.TEXT,
        clean_up_tokenization_spaces: bool = False,
    ) -> list[dict[str, Any]]:
        """One record per generated sequence: its text and/or its token ids."""
        records = []
        for output_ids in model_outputs["output_ids"][0]:
            record: dict[str, Any] = {}
            if return_type in (ReturnType.TENSORS, ReturnType.BOTH):
                record[f"{self.return_name}_token_ids"] = output_ids
            if return_type in (ReturnType.TEXT, ReturnType.BOTH):
                record[f"{self.return_name}_text"] = self.tokenizer.decode(
                    output_ids,
                    skip_special_tokens=True,
                    clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                )
            records.append(record)
        return records
