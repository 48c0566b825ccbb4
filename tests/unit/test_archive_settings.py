"""The archive's settings: production by default, refusing placeholder secrets with every reason named (and
none of the secrets); development relaxes that; TLS needs a certificate and its key."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sgs_archive.settings import ArchiveSettings

STRONG = secrets.token_urlsafe(32)


def refusal(**settings: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        ArchiveSettings(**settings)
    return str(raised.value)


def test_production_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SGS_ARCHIVE_ENVIRONMENT", raising=False)
    assert ArchiveSettings(admin_token=STRONG).environment == "production"
    assert "admin_token: required" in refusal()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "changethis",  # the FastAPI template's
        "changeme",
        "Change-Me",
        "CHANGE_THIS",
        "secret",
        "password",
        "admin",
        "x" * 40,
        "changeme-changeme-changeme-changeme",
        "abcabcabcabcabcabcabcabcabcabcabcabc",
        "0123456701234567012345670123456701234567",
    ],
)
def test_placeholder_admin_tokens_are_refused(token: str) -> None:
    message = refusal(admin_token=token)
    assert "refusing to start in production: admin_token: a placeholder value" in message
    assert "input_value" not in message, "the refusal printed what it was given"


@pytest.mark.parametrize(
    ("token", "reason"),
    [("Zq8r-Lk2v", "shorter than 32"), ("aaaaaaaaaaaabbbbbbbbbbbbcccccccccddddd", "fewer than 8 different characters")],
)
def test_short_or_monotonous_admin_tokens_are_refused(token: str, reason: str) -> None:
    assert reason in refusal(admin_token=token)


def test_placeholder_passwords_in_urls_are_refused_and_never_printed() -> None:
    message = refusal(
        admin_token="changethis",
        dsn="postgresql://archive:postgres@db.example.org/archive",
        nats_url="nats://sgs:password@nats.example.org:4222",
        relay_crash_after_publish=True,
    )
    assert "admin_token: a placeholder value" in message
    assert "dsn: its password is a placeholder value" in message
    assert "nats_url: its password is a placeholder value" in message
    assert "relay_crash_after_publish: a crash-test hook" in message
    for secret in ("changethis", "archive:postgres", "sgs:password"):
        assert secret not in message, f"the refusal printed {secret!r}"


def test_strong_secrets_and_passwordless_dsns_start() -> None:
    ArchiveSettings(admin_token=STRONG, dsn="postgresql://archive@db/archive")
    ArchiveSettings(admin_token=STRONG, dsn=f"host=db user=archive password={secrets.token_hex(16)}")
    ArchiveSettings(admin_token=STRONG, nats_url="nats://nats.example.org:4222")


def test_development_relaxes_the_refusals() -> None:
    relaxed = ArchiveSettings(environment="development", admin_token="changeme", relay_crash_after_publish=True)
    assert relaxed.admin_token is not None
    assert ArchiveSettings(environment="development").admin_token is None


def test_tls_needs_both_files_and_real_ones(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("cert"), key.write_text("key")
    assert "give both" in refusal(admin_token=STRONG, tls_cert_file=cert)
    assert "not a readable file" in refusal(admin_token=STRONG, tls_cert_file=cert, tls_key_file=tmp_path / "nope")
    assert ArchiveSettings(admin_token=STRONG, tls_cert_file=cert, tls_key_file=key).tls
