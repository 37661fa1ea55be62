"""Users change their own password; any password change or reset ends the user's sessions,
and an administrator's reset or disable revokes the user's API tokens for good."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.vms.auth_fixtures import PASSWORD, AccessApp, login, serve_access
from vms.access import Principal
from vms.deps import CSRF_HEADER
from vms.storage import Database
from vms.users import list_users

PASSWORD_ROUTE = "/api/v1/auth/password"
ME = "/api/v1/auth/me"
NEW_PASSWORD = "another long passphrase"


@pytest.fixture
async def access(database: Database) -> AsyncIterator[AccessApp]:
    async with serve_access(database) as app:
        await app.add_user("boss", "admin")
        await app.add_user("olga", "operator")
        yield app


async def token_of(client: httpx.AsyncClient, csrf: str) -> dict[str, str]:
    made = await client.post("/api/v1/auth/tokens", json={"name": "cron"}, headers={CSRF_HEADER: csrf})
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['token']}"}


async def test_changing_ones_own_password(access: AccessApp) -> None:
    async with access.client() as here, access.client() as elsewhere:
        csrf = await login(here, "olga")
        await login(elsewhere, "olga")
        bearer = await token_of(here, csrf)
        old_cookie = here.cookies["hallwatch_session"]

        wrong = await here.post(
            PASSWORD_ROUTE,
            json={"current_password": "not my password!", "new_password": NEW_PASSWORD},
            headers={CSRF_HEADER: csrf},
        )
        assert wrong.status_code == 403
        short = await here.post(
            PASSWORD_ROUTE,
            json={"current_password": PASSWORD, "new_password": "short"},
            headers={CSRF_HEADER: csrf},
        )
        assert short.status_code == 422
        with_token = await here.post(
            PASSWORD_ROUTE, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=bearer
        )
        assert with_token.status_code == 403  # a leaked token cannot take the account over

        changed = await here.post(
            PASSWORD_ROUTE,
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers={CSRF_HEADER: csrf},
        )
        assert changed.status_code == 200, changed.text
        new_csrf = changed.json()["csrf_token"]
        assert new_csrf != csrf and here.cookies["hallwatch_session"] != old_cookie
        # This browser goes on with its new session; every other session ended.
        assert (await here.get(ME)).status_code == 200
        assert (await elsewhere.get(ME)).status_code == 401
        # The old cookie is dead too.
        async with access.client() as replay:
            replay.cookies.set("hallwatch_session", old_cookie)
            assert (await replay.get(ME)).status_code == 401
        # Her own change keeps her scripts' tokens.
        assert (await here.get(ME, headers=bearer)).status_code == 200

    async with access.client() as fresh:
        refused = await fresh.post("/api/v1/auth/login", json={"username": "olga", "password": PASSWORD})
        assert refused.status_code == 401
        await login(fresh, "olga", NEW_PASSWORD)

    changes = await access.events("password_changed")
    assert len(changes) == 1 and changes[0].username == "olga"
    assert "2 login session(s) ended" in (changes[0].detail or "")
    assert len(await access.events("password_change_refused")) == 1
    for event in await access.events():
        assert NEW_PASSWORD not in (event.detail or "") and PASSWORD not in (event.detail or "")


async def test_a_reset_ends_sessions_and_revokes_tokens(access: AccessApp) -> None:
    boss_csrf = await login(access.http, "boss")
    uid = next(user.id for user in await list_users(access.auth, "meizhou") if user.username == "olga")
    async with access.client() as olga:
        csrf = await login(olga, "olga")
        bearer = await token_of(olga, csrf)
        reset = await access.http.patch(
            f"/api/v1/users/{uid}", json={"password": NEW_PASSWORD}, headers={CSRF_HEADER: boss_csrf}
        )
        assert reset.status_code == 200
        assert (await olga.get(ME)).status_code == 401
        assert (await olga.get(ME, headers=bearer)).status_code == 401
        olga_now = Principal(uid, "olga", "meizhou", "operator", "session", None)
        tokens = await access.auth.list_tokens(olga_now)
        assert tokens and all(token.revoked_at is not None for token in tokens)
    details = [event.detail or "" for event in await access.events("admin_change")]
    assert any("password reset" in d and "1 API token(s) revoked" in d for d in details)
