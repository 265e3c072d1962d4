"""Typed settings: parsing, fail-fast validation and secret masking."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from movierec import settings


@dataclass(frozen=True)
class Example:
    url: str = settings.setting("EX_URL", "", secret=True)
    port: int = settings.setting("EX_PORT", 1234, minimum=0, maximum=65535)
    ratio: float = settings.setting("EX_RATIO", 0.5, minimum=0, maximum=1)
    debug: bool = settings.setting("EX_DEBUG", False)
    mode: str = settings.setting("EX_MODE", "a", choices=("a", "b"))


def test_defaults_and_parsing() -> None:
    assert settings.load(Example, {}) == Example()
    parsed = settings.load(Example, {"EX_PORT": " 80 ", "EX_RATIO": "0.25", "EX_DEBUG": "yes",
                                     "EX_MODE": "b", "EX_URL": "postgresql://u:pw@h/db"})
    assert (parsed.port, parsed.ratio, parsed.debug, parsed.mode) == (80, 0.25, True, "b")


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(settings.SettingsError) as info:
        settings.load(Example, {"EX_PORT": "http", "EX_RATIO": "2", "EX_DEBUG": "maybe",
                                "EX_MODE": "c"})
    text = str(info.value)
    for name in ("EX_PORT", "EX_RATIO", "EX_DEBUG", "EX_MODE"):
        assert name in text


def test_secrets_never_appear_in_errors_or_descriptions() -> None:
    described = settings.describe(settings.load(Example, {"EX_URL": "redis://u:hunter2@h:1/0"}))
    assert described["EX_URL"] == "redis://u:***@h:1/0"
    assert "hunter2" not in str(described)
    assert settings.mask("plain-token") == "***"


def test_server_settings_variables_are_documented() -> None:
    docs = settings.variables(settings.ServerSettings)
    assert "MOVIEREC_HOST" in docs and all(docs.values())
