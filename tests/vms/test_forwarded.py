"""Forwarding headers (``X-Forwarded-For``) are believed only from the proxies in
``server.trusted_proxies``: without it, a client on this machine cannot choose the
address that the audit trail and the login lockout record.

The real app under uvicorn on 127.0.0.1, as served in production (``server_config``)."""

from __future__ import annotations

import httpx

from tests.app_fixtures import ADMIN_PASSWORD, RunningApp, serve_app
from tests.vms.test_bad_input import SITE

CHOSEN = "203.0.113.9"
LOGIN = "/api/v1/auth/login"


async def _login_sources(app: RunningApp) -> list[str | None]:
    admin = await app.admin("xingning")
    res = await admin.get("/api/v1/audit", params={"action": "login_success"})
    assert res.status_code == 200, res.text
    return [record["source_addr"] for record in res.json()]


async def _login_as_admin(http: httpx.AsyncClient, forwarded_for: str) -> None:
    res = await http.post(
        LOGIN,
        json={"username": "admin-xingning", "password": ADMIN_PASSWORD},
        headers={"X-Forwarded-For": forwarded_for},
    )
    assert res.status_code == 200, res.text


async def test_a_client_cannot_choose_its_recorded_address() -> None:
    async with serve_app(SITE) as app:
        await _login_as_admin(app.http, CHOSEN)
        sources = await _login_sources(app)
        assert CHOSEN not in sources
        assert set(sources) == {"127.0.0.1"}


async def test_a_client_cannot_escape_the_lockout_by_naming_other_addresses() -> None:
    async with serve_app(SITE) as app:
        answers = []
        for n in range(8):
            res = await app.http.post(
                LOGIN,
                json={"username": f"nobody-{n}", "password": "wrong password"},
                headers={"X-Forwarded-For": f"198.51.100.{n + 1}"},
            )
            answers.append(res.status_code)
        # Five failures from one address (the default max_failed_logins) lock it out.
        assert answers[:5] == [401] * 5
        assert set(answers[5:]) == {429}


async def test_a_trusted_proxy_names_the_client() -> None:
    async with serve_app(SITE + "server:\n  trusted_proxies: [127.0.0.1]\n") as app:
        await _login_as_admin(app.http, CHOSEN)
        assert CHOSEN in await _login_sources(app)


async def test_a_proxy_network_is_accepted() -> None:
    async with serve_app(SITE + "server:\n  trusted_proxies: [127.0.0.0/8, '::1']\n") as app:
        await _login_as_admin(app.http, f"{CHOSEN}, 127.0.0.1")
        assert CHOSEN in await _login_sources(app)
