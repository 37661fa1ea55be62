"""The shared Digest arithmetic against the RFCs' own worked examples (RFC 2617 section 3.5,
RFC 7616 section 3.9.1), and the header syntax both ways."""

from __future__ import annotations

import hashlib

import pytest

from streams import digest

RFC_7616 = {
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


def test_rfc_2617_example() -> None:
    key = digest.ha1("Mufasa", "Circle Of Life", "testrealm@host.com")
    answer = digest.response(
        key,
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert answer == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc_7616_examples(algorithm: str, expected: str) -> None:
    key = digest.ha1("Mufasa", "Circle of Life", RFC_7616["realm"], algorithm)
    answer = digest.response(
        key,
        method="GET",
        uri="/dir/index.html",
        nonce=RFC_7616["nonce"],
        qop="auth",
        nc="00000001",
        cnonce=RFC_7616["cnonce"],
        algorithm=algorithm,
    )
    assert answer == expected


def test_a_challenge_parses_quoted_plain_and_escaped_values() -> None:
    scheme, params = digest.parse_header(
        'Digest realm="a \\"quoted\\" realm", NONCE="n,1", qop="auth,auth-int", algorithm=SHA-256, stale=TRUE'
    )
    assert scheme == "digest"
    assert params == {
        "realm": 'a "quoted" realm',
        "nonce": "n,1",
        "qop": "auth,auth-int",
        "algorithm": "SHA-256",
        "stale": "TRUE",
    }


def test_an_answer_with_qop_parses_back_and_checks() -> None:
    challenge = {"realm": 'r"1', "nonce": "abc", "qop": "auth-int, auth", "opaque": "op"}
    value = digest.authorization(
        challenge, method="DESCRIBE", uri="rtsp://cam/1", username="u\\ser", password="pw", count=3
    )
    scheme, fields = digest.parse_header(value)
    assert scheme == "digest"
    assert fields["username"] == "u\\ser" and fields["realm"] == 'r"1' and fields["opaque"] == "op"
    assert (fields["qop"], fields["nc"]) == ("auth", "00000003") and "algorithm" not in fields
    expected = digest.response(
        digest.ha1("u\\ser", "pw", 'r"1'),
        method="DESCRIBE",
        uri="rtsp://cam/1",
        nonce="abc",
        qop="auth",
        nc="00000003",
        cnonce=fields["cnonce"],
    )
    assert fields["response"] == expected


def test_an_answer_without_qop_is_rfc_2069_and_names_the_challenges_algorithm() -> None:
    value = digest.authorization(
        {"realm": "r", "nonce": "n", "algorithm": "MD5"},
        method="REGISTER",
        uri="sip:a@b",
        username="u",
        password="p",
    )
    _, fields = digest.parse_header(value)
    assert set(fields) == {"username", "realm", "nonce", "uri", "response", "algorithm"}
    assert fields["algorithm"] == "MD5"
    assert fields["response"] == digest.response(
        digest.ha1("u", "p", "r"), method="REGISTER", uri="sip:a@b", nonce="n"
    )


def test_sess_algorithms_fold_the_nonces_into_ha1() -> None:
    challenge = {"realm": "r", "nonce": "n", "qop": "auth", "algorithm": "SHA-256-sess"}
    value = digest.authorization(challenge, method="PLAY", uri="/s", username="u", password="p")
    _, fields = digest.parse_header(value)
    key = hashlib.sha256(f"{digest.ha1('u', 'p', 'r', 'SHA-256')}:n:{fields['cnonce']}".encode()).hexdigest()
    assert fields["algorithm"] == "SHA-256-sess"
    assert fields["response"] == digest.response(
        key,
        method="PLAY",
        uri="/s",
        nonce="n",
        qop="auth",
        nc="00000001",
        cnonce=fields["cnonce"],
        algorithm="SHA-256",
    )
