"""Bad input answers 4xx, never 500, against the real app on a real socket: integers
beyond the database's range, non-finite numbers in JSON, and a keep-alive
connection that stays usable (or is closed with ``Connection: close``) after any
answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.app_fixtures import RunningApp, serve_app
from tests.vms.test_middleware import (
    closed_by_server,
    connection,
    probe_app,
    read_answer,
    request_head,
    serve,
    write,
)

SITE = """
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 兴宁市税务局办税服务厅
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=160x90&gop=25
"""

TOO_BIG = "1180591620717411303424"


@pytest.fixture
async def app() -> AsyncIterator[RunningApp]:
    async with serve_app(SITE) as running:
        yield running


async def _same_connection(client: httpx.AsyncClient, response: httpx.Response) -> None:
    """The connection that carried ``response`` still answers, or said it would close."""
    if response.headers.get("connection", "").lower() == "close":
        return
    again = await client.get("/healthz")
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/audit?offset=9223372036854775808"),
        ("GET", "/api/v1/audit?offset=-1"),
        ("GET", f"/api/v1/users/{TOO_BIG}"),
        ("GET", "/api/v1/users/9223372036854775808"),
        ("PATCH", f"/api/v1/users/{TOO_BIG}"),
        ("DELETE", f"/api/v1/auth/tokens/{TOO_BIG}"),
        ("POST", f"/api/v1/alarms/{TOO_BIG}/ack"),
    ],
)
async def test_integers_out_of_range_are_refused_with_422(app: RunningApp, method: str, path: str) -> None:
    admin = await app.admin("xingning")
    body = {"disabled": True} if method == "PATCH" else None
    res = await admin.request(method, path, json=body)
    assert res.status_code == 422, res.text
    await _same_connection(admin, res)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
async def test_non_finite_numbers_are_refused_with_422(app: RunningApp, value: str) -> None:
    admin = await app.admin("xingning")
    res = await admin.put(
        "/api/v1/layouts/current",
        content=f'{{"layout": {value}, "tiles": []}}',
        headers={"Content-Type": "application/json"},
    )
    assert res.status_code == 422, res.text
    await _same_connection(admin, res)


async def test_bad_numbers_anywhere_in_a_body_are_refused(app: RunningApp) -> None:
    admin = await app.admin("xingning")
    for path, body in [
        ("/api/v1/users", '{"username": "x", "role": "viewer", "password": NaN}'),
        ("/api/v1/auth/tokens", '{"name": "n", "expires_days": 1e400}'),
        ("/api/v1/auth/tokens", f'{{"name": "n", "expires_days": {TOO_BIG}}}'),
    ]:
        res = await admin.post(path, content=body, headers={"Content-Type": "application/json"})
        assert res.status_code == 422, (path, res.text)
        await _same_connection(admin, res)


async def test_a_crash_says_the_connection_closes() -> None:
    """uvicorn closes the connection after an exception; the 500 says so beforehand."""
    async with serve(probe_app()) as port, connection(port) as (reader, writer):
        await write(writer, request_head("GET /v1/boom HTTP/1.1\nHost: x\n"))
        answer = await read_answer(reader)
        assert answer.status == 500
        assert answer.headers["connection"] == "close"
        assert await closed_by_server(reader)
