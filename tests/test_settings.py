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


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:hunter2-pw@h:6379/0", "redis://:***@h:6379/0"),
    ("rediss://:hunter2-pw@h:6380/0", "rediss://:***@h:6380/0"),
    ("redis://default:hunter2-pw@h/0", "redis://default:***@h/0"),
    ("postgresql://u:hunter2@pw@db:5432/x?sslmode=require",
     "postgresql://u:***@db:5432/x?sslmode=require"),
    ("postgresql://db/x?user=u&password=hunter2-pw&sslmode=require",
     "postgresql://db/x?user=u&password=***&sslmode=require"),
    ("redis://h:6379/0?password=hunter2-pw", "redis://h:6379/0?password=***"),
    ("host=db dbname=x user=u password=hunter2-pw sslmode=require",
     "host=db dbname=x user=u password=*** sslmode=require"),
    ("host=db password='hunter2 pw' user=u", "host=db password=*** user=u"),
    ("postgresql://u@db/x", "postgresql://u@db/x"),
    ("{\"keys\": [{\"kty\": \"oct\", \"k\": \"hunter2-pw\"}]}", "***"),
    ("hunter2-pw", "***"),
])
def test_every_url_and_dsn_form_is_masked(url: str, shown: str) -> None:
    assert settings.mask(url) == shown
    assert "hunter2" not in settings.mask(url)
    found = settings.secret_values(url)
    assert url == "postgresql://u@db/x" or any("hunter2" in s for s in found)


def test_secret_values_include_the_decoded_password() -> None:
    assert settings.secret_values("redis://:p%40ss-word@h/0") == ["p%40ss-word", "p@ss-word"]


def test_redactor_masks_messages_extras_and_tracebacks() -> None:
    import logging

    from movierec.security.redact import Redactor

    redactor = Redactor(["hunter2-pw"])
    record = logging.LogRecord("x", logging.ERROR, "f", 1, "connect %s failed", (
        "redis://:other-secret@h/0",), None)
    record.url = "postgresql://u:hunter2-pw@h/db"
    record.settings = {"KEY": ["token hunter2-pw"]}
    try:
        raise ValueError("key hunter2-pw refused")
    except ValueError:
        import sys
        record.exc_info = sys.exc_info()
    assert redactor.filter(record)
    text = record.getMessage() + str(vars(record))
    assert "hunter2" not in text and "other-secret" not in text
    assert record.getMessage() == "connect redis://:***@h/0 failed"
    assert "ValueError: key *** refused" in record.exc


def test_tls_certificate_and_key_go_together() -> None:
    with pytest.raises(settings.SettingsError, match="MOVIEREC_TLS_KEY"):
        settings.load(settings.ServerSettings, {"MOVIEREC_TLS_CERT": "/x.crt"})
    assert not settings.ServerSettings().tls
    assert settings.ServerSettings(tls_ca="/ca.crt").tls


def test_scale_out_settings_fail_fast_and_keep_their_secrets() -> None:
    """docs/scale-serving.md's settings: the catalog's read replica, the retriever's
    Milvus token and CA (a CA needs TLS), all masked in the start-up log."""
    import logging

    from movierec.security.redact import Redactor
    from movierec.services.catalog.server import CatalogSettings
    from movierec.services.retriever.milvus import MilvusAccess, MilvusVectors
    from movierec.services.retriever.server import RetrieverSettings

    catalog = settings.load(CatalogSettings, {
        "DATABASE_URL": "postgresql://u:primary-pw@db/x",
        "CATALOG_READ_DATABASE_URL": "postgresql://u:replica-pw@replica/x"})
    assert settings.describe(catalog)["CATALOG_READ_DATABASE_URL"] == \
        "postgresql://u:***@replica/x"
    assert {"primary-pw", "replica-pw"} <= set(settings.secrets(catalog))
    retriever = settings.load(RetrieverSettings, {
        "MILVUS_URI": "https://milvus.example:19530", "MILVUS_TOKEN": "movierec:tok3n-pw",
        "MILVUS_CA": "/etc/movierec/milvus-ca/ca.crt"})
    assert settings.describe(retriever)["MILVUS_TOKEN"] == "***"
    assert set(settings.variables(MilvusAccess)) == {"MILVUS_TOKEN", "MILVUS_CA"}
    store = MilvusVectors(retriever.milvus_uri, access=retriever.access())
    assert store.options == {"token": "movierec:tok3n-pw", "secure": True,
                             "server_pem_path": "/etc/movierec/milvus-ca/ca.crt"}
    assert MilvusVectors("http://milvus:19530", access=MilvusAccess()).options == {}
    with pytest.raises(settings.SettingsError, match="MILVUS_CA needs an https"):
        settings.load(RetrieverSettings, {"MILVUS_URI": "http://milvus:19530",
                                          "MILVUS_CA": "/ca.crt"})
    record = logging.LogRecord("x", logging.ERROR, "", 0, "auth failed for %s", (
        "movierec:tok3n-pw",), None)
    Redactor(settings.secrets(retriever)).filter(record)
    assert "tok3n" not in record.getMessage()
