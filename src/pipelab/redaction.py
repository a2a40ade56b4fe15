"""Nothing that looks like a secret reaches params, tags, artifacts or records."""

from __future__ import annotations

import re
from typing import Any

# A key is secret-looking when its last word names a credential: hf_token, api_key, password, secret...
# ("max_new_tokens" or "tokens_generated" are not: they are counts).
SECRET_KEY = re.compile(
    r"((^|[_-])(token|auth|apikey|credentials?)$)|secret|passw(or)?d|api[_-]?key|private[_-]?key", re.IGNORECASE
)
SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9]{20,})\b")
REDACTED = "***redacted***"


def redact(value: Any, key: str = "") -> Any:
    """Drop anything that looks like a secret: by key name (token, password, api_key...) or by value shape."""
    if key and SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and SECRET_VALUE.search(value):
        return SECRET_VALUE.sub(REDACTED, value)
    return value


def redact_values(value: Any) -> Any:
    """Redact secret-shaped strings only, whatever their key: for pipeline inputs and outputs, whose keys are
    the task's schema (fill-mask's `token` is a token id, not a credential)."""
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_values(v) for v in value]
    if isinstance(value, str) and SECRET_VALUE.search(value):
        return SECRET_VALUE.sub(REDACTED, value)
    return value
