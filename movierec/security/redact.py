"""A last line of defence for secrets in logs: a filter on the process' log handlers.

Settings are logged masked (:func:`movierec.settings.describe`), but a library may
still print a URL or a value in an error. :func:`install` puts a :class:`Redactor` on
every handler of the root logger: each record's message, string extras and traceback
have every URL password and ``password=`` value masked (:func:`movierec.settings.
mask_text`) and every configured secret value (:func:`movierec.settings.secrets`)
replaced by ``***`` before it is written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from movierec.settings import mask_text

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class Redactor(logging.Filter):
    """Masks secrets in every record it sees (never drops one)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            text = mask_text(value)
            for secret in self.secrets:
                text = text.replace(secret, "***")
            return text
        if isinstance(value, dict):
            return {key: self.redact(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact(item) for item in value)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in list(vars(record).items()):
            if key not in _RESERVED and isinstance(value, str | dict | list | tuple):
                setattr(record, key, self.redact(value))
        if record.exc_info:
            trace = logging.Formatter().formatException(record.exc_info)
            clean = self.redact(trace)
            if clean != trace:   # written as the "exc" field, like the JSON formatter does
                record.exc_info, record.exc_text = None, None
                record.exc = clean
        return True


def install(secrets: Iterable[str]) -> Redactor:
    """Put one :class:`Redactor` for ``secrets`` on every handler of the root logger."""
    redactor = Redactor(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    return redactor
