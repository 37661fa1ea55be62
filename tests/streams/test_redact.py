"""Credentials never survive redaction, in URLs or in a camera's free text."""

from __future__ import annotations

import base64

import pytest

from streams.redact import credential_forms, redact_text, redact_url

TOKEN = base64.b64encode(b"admin:hunter2").decode()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s?ch=1", "rtsp://10.0.0.5:554/s?ch=1"),
        ("rtsp://[fe80::1]:554/s", "rtsp://[fe80::1]:554/s"),
        ("rtsp://u:p@[fe80::1]/s", "rtsp://[fe80::1]/s"),
        (
            "rtsp://10.0.0.5/s?user=admin&password=hunter2&ch=1",
            "rtsp://10.0.0.5/s?user=admin&password=***&ch=1",
        ),
        ("http://cam/snap?PWD=hunter2", "http://cam/snap?PWD=***"),
        ("demo://tax-1?size=320x180", "demo://tax-1?size=320x180"),
    ],
)
def test_urls(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "text",
    [
        f"RTSP/1.0 500 Basic {TOKEN}",
        f"Authorization: Basic {TOKEN}",
        f"proxy-authorization={TOKEN}",
        f'WWW-Authenticate: Basic realm="{TOKEN}"',
        'Digest username="admin", realm="x", response="hunter2"',
        "rtsp://admin:hunter2@10.0.0.1/stream",
        "tried admin:hunter2@10.0.0.1 again",
        "login failed: password=hunter2; retry",
        "pwd: 'hunter2'",
        '{"passwd": "hunter2"}',
    ],
)
def test_text_loses_every_shape_of_a_credential(text: str) -> None:
    out = redact_text(text, [])
    assert "hunter2" not in out and TOKEN not in out, out


def test_given_secrets_and_their_wire_forms_are_masked() -> None:
    forms = credential_forms("admin", "hunter2")
    assert TOKEN in forms and "hunter2" in forms
    out = redact_text(f"echo {TOKEN.rstrip('=')} and {TOKEN}", forms)
    assert TOKEN.rstrip("=") not in out and out.startswith("echo ***")
    assert credential_forms("admin", None) == []
    assert redact_text("DESCRIBE answered 404 Not Found", []) == "DESCRIBE answered 404 Not Found"
