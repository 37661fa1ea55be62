"""Logins, sessions, lockout, API tokens and CSRF, end to end over a real socket and a
real database (SQLite and PostgreSQL), plus the role matrix and the lockout counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from tests.vms.auth_fixtures import PASSWORD, AccessApp, login, make_config, serve_access
from vms.access import PERMISSIONS, Principal
from vms.auth_types import LoginLocked, LoginRefused
from vms.deps import CSRF_HEADER, SESSION_COOKIE
from vms.login_limiter import LoginLimiter
from vms.storage import Database
from vms.storage.tables import WebSession

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
TOKENS = "/api/v1/auth/tokens"
ECHO = "/api/v1/test/echo"


@pytest.fixture
async def running(database: Database) -> AsyncIterator[AccessApp]:
    async with serve_access(database) as app:
        await app.add_user("alice", "operator")
        yield app


# -- roles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "granted"),
    [
        ("viewer", {"watch"}),
        ("operator", {"watch", "snapshot", "playback", "acknowledge", "audit"}),
        ("admin", set(PERMISSIONS)),
    ],
)
def test_role_permission_matrix(role: str, granted: set[str]) -> None:
    principal = Principal(1, "u", "meizhou", role, "session", "x")  # type: ignore[arg-type]
    assert {p for p in PERMISSIONS if principal.can(p)} == granted
    assert principal.permissions() == [p for p in PERMISSIONS if p in granted]


def test_visible_halls_follow_the_centre() -> None:
    config = make_config()
    meizhou = Principal(1, "a", "meizhou", "viewer", "session", None)
    xingning = Principal(2, "b", "xingning", "admin", "token", None)
    gone = Principal(3, "c", "closed-centre", "admin", "token", None)
    assert meizhou.visible_hall_ids(config) == {"tax", "police"}
    assert xingning.visible_hall_ids(config) == {"tax"}
    assert gone.visible_hall_ids(config) == set()
    assert xingning.may_see_camera(config, "tax-1")
    assert not xingning.may_see_camera(config, "police-1")
    assert not meizhou.may_see_camera(config, "no-such-camera")


# -- login, cookie, logout ----------------------------------------------------------


async def test_login_sets_a_strict_cookie_and_me_answers(running: AccessApp) -> None:
    answer = await running.http.post(LOGIN, json={"username": "Alice", "password": PASSWORD})
    assert answer.status_code == 200
    body = answer.json()
    assert body["username"] == "alice"
    assert (body["centre"], body["centre_name"], body["role"]) == (
        "meizhou",
        "梅州市政务服务中心",
        "operator",
    )
    assert len(body["csrf_token"]) >= 32
    cookie = answer.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert {"httponly", "path", "samesite"} <= attributes.keys()
    assert attributes["samesite"].strip().lower() == "samesite=strict"
    assert attributes["path"].strip() == "Path=/"
    assert "secure" not in attributes
    me = await running.http.get(ME)
    assert me.status_code == 200
    assert me.json() == {**body, "via": "session"}
    # Only the token's hash is stored.
    token = running.http.cookies[SESSION_COOKIE]
    async with running.auth.db.session() as s:
        ids = list(await s.scalars(select(WebSession.id)))
    assert len(ids) == 1 and token not in ids[0] and len(ids[0]) == 64
    [event] = await running.events("login_success")
    assert (event.username, event.centre_id, event.source_addr) == ("alice", "meizhou", "127.0.0.1")


async def test_secure_cookie_when_configured(database: Database) -> None:
    async with serve_access(database, make_config(secure_cookies=True)) as app:
        await app.add_user("alice")
        answer = await app.http.post(LOGIN, json={"username": "alice", "password": PASSWORD})
        assert answer.status_code == 200
        assert "secure" in [p.strip().lower() for p in answer.headers["set-cookie"].split(";")]


async def test_wrong_password_and_unknown_user_answer_alike(running: AccessApp) -> None:
    wrong = await running.http.post(LOGIN, json={"username": "alice", "password": "not the password"})
    unknown = await running.http.post(LOGIN, json={"username": "mallory", "password": "not the password"})
    long_name = "x" * 100
    too_long = await running.http.post(LOGIN, json={"username": long_name, "password": "whatever"})
    for answer in (wrong, unknown, too_long):
        assert answer.status_code == 401
        assert answer.json()["detail"] == "wrong username or password"
        assert "set-cookie" not in answer.headers
    events = await running.events("login_failure")
    by_name = {e.username: e for e in events}
    assert by_name["alice"].source_addr == "127.0.0.1"
    assert by_name["alice"].centre_id == "meizhou"
    assert by_name["mallory"].centre_id is None
    assert by_name[long_name[:64]].source_addr == "127.0.0.1"
    assert all(PASSWORD not in (e.detail or "") for e in events)


async def test_no_credentials_is_401(running: AccessApp) -> None:
    assert (await running.http.get(ME)).status_code == 401
    running.http.cookies.set(SESSION_COOKIE, "forged")
    assert (await running.http.get(ME)).status_code == 401


async def test_logout_ends_the_session(running: AccessApp) -> None:
    csrf = await login(running.http, "alice")
    stolen = running.http.cookies[SESSION_COOKIE]
    answer = await running.http.post("/api/v1/auth/logout", headers={CSRF_HEADER: csrf})
    assert answer.status_code == 204
    assert (
        f'{SESSION_COOKIE}=""' in answer.headers["set-cookie"] or "Max-Age=0" in answer.headers["set-cookie"]
    )
    async with running.auth.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(WebSession)) == 0
    async with running.client() as other:
        other.cookies.set(SESSION_COOKIE, stolen)
        assert (await other.get(ME)).status_code == 401
    [event] = await running.events("logout")
    assert event.username == "alice"


async def test_session_expires_after_its_lifetime_and_when_idle(database: Database) -> None:
    config = make_config(session_ttl=3600, session_idle_timeout=600)
    async with serve_access(database, config) as app:
        await app.add_user("alice")
        await login(app.http, "alice")
        for _ in range(12):  # active every 5 minutes: alive until the 1-hour lifetime
            assert (await app.http.get(ME)).status_code == 200
            app.clock.advance(300)
        assert (await app.http.get(ME)).status_code == 401  # 60 minutes: past the lifetime

        await login(app.http, "alice")
        app.clock.advance(590)
        assert (await app.http.get(ME)).status_code == 200
        app.clock.advance(590)  # touched 590 s ago: still inside the idle timeout
        assert (await app.http.get(ME)).status_code == 200
        app.clock.advance(601)
        assert (await app.http.get(ME)).status_code == 401
        async with database.session() as s:
            assert await s.scalar(select(func.count()).select_from(WebSession)) == 0


async def test_last_seen_is_written_at_most_once_a_minute(running: AccessApp) -> None:
    await login(running.http, "alice")

    async def last_seen() -> object:
        async with running.auth.db.session() as s:
            return await s.scalar(select(WebSession.last_seen_at))

    first = await last_seen()
    running.clock.advance(30)
    assert (await running.http.get(ME)).status_code == 200
    assert await last_seen() == first
    running.clock.advance(31)
    assert (await running.http.get(ME)).status_code == 200
    assert await last_seen() != first


# -- lockout ----------------------------------------------------------------------


async def _fail(http: object, username: str) -> int:
    answer = await http.post(LOGIN, json={"username": username, "password": "wrong password!"})  # type: ignore[attr-defined]
    return int(answer.status_code)


async def test_lockout_per_user(database: Database) -> None:
    config = make_config(max_failed_logins=3, lockout_seconds=1.0, failure_window=60)
    async with serve_access(database, config) as app:
        await app.add_user("alice")
        await app.add_user("bob")
        # Failures from three addresses: no address reaches the limit, the user does.
        for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            async with app.client(address) as http:
                assert await _fail(http, "alice") == 401
        async with app.client("127.0.0.5") as http:
            started = time.monotonic()
            locked = await http.post(LOGIN, json={"username": "alice", "password": PASSWORD})
            assert locked.status_code == 429
            assert 1 <= int(locked.headers["retry-after"]) <= 2
            assert (await http.post(LOGIN, json={"username": "bob", "password": PASSWORD})).status_code == 200
            [event] = await app.events("login_locked")
            assert (event.username, event.source_addr) == ("alice", "127.0.0.5")
            # After the lockout the right password works again.
            deadline = started + 5
            while (
                await http.post(LOGIN, json={"username": "alice", "password": PASSWORD})
            ).status_code == 429:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            assert time.monotonic() - started >= 0.9


async def test_lockout_per_address(database: Database) -> None:
    config = make_config(max_failed_logins=3, lockout_seconds=30, failure_window=60)
    async with serve_access(database, config) as app:
        await app.add_user("alice")
        async with app.client("127.0.0.7") as attacker, app.client("127.0.0.8") as neighbour:
            for name in ("u1", "u2", "u3"):
                assert await _fail(attacker, name) == 401
            refused = await attacker.post(LOGIN, json={"username": "alice", "password": PASSWORD})
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 29
            assert (
                await neighbour.post(LOGIN, json={"username": "alice", "password": PASSWORD})
            ).status_code == 200
        assert [e.source_addr for e in await app.events("login_locked")] == ["127.0.0.7"]


def test_limiter_window_slides_and_memory_stays_bounded() -> None:
    now = [0.0]
    limiter = LoginLimiter(max_failures=3, window=10, lockout_seconds=5, max_keys=100, clock=lambda: now[0])
    limiter.record_failure("alice", "10.0.0.1")
    now[0] = 6
    limiter.record_failure("alice", "10.0.0.2")
    now[0] = 11  # the first failure left the window
    limiter.record_failure("alice", "10.0.0.3")
    assert limiter.retry_after("alice", None) == 0
    limiter.record_failure("ALICE ", "10.0.0.4")  # the username is counted case-insensitively
    assert limiter.retry_after("alice", None) == 5
    assert limiter.retry_after("bob", "10.0.0.9") == 0
    now[0] = 16
    assert limiter.retry_after("alice", None) == 0
    limiter.record_success("alice")
    for i in range(1000):
        limiter.record_failure(f"user{i}", f"10.1.{i // 250}.{i % 250}")
    assert len(limiter) <= 100
    now[0] = 1000  # everything is stale: pruned on the next failure
    limiter.record_failure("late", None)
    assert len(limiter) == 1


# -- API tokens --------------------------------------------------------------------


async def test_token_create_use_list_revoke(running: AccessApp) -> None:
    csrf = await login(running.http, "alice")
    created = await running.http.post(
        TOKENS, json={"name": "export", "expires_days": 7}, headers={CSRF_HEADER: csrf}
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith("hw_") and len(token) > 40
    assert token.startswith(created.json()["prefix"])
    async with running.client() as script:
        bearer = {"Authorization": f"Bearer {token}"}
        me = await script.get(ME, headers=bearer)
        assert me.status_code == 200
        assert (me.json()["via"], me.json()["csrf_token"]) == ("token", None)
        # Bearer requests need no CSRF header, and cannot mint tokens.
        assert (await script.post(ECHO, headers=bearer)).status_code == 200
        assert (await script.post(TOKENS, json={"name": "x"}, headers=bearer)).status_code == 403
        listed = (await running.http.get(TOKENS)).json()
        assert [(t["name"], t["revoked_at"]) for t in listed] == [("export", None)]
        assert "token" not in listed[0] and listed[0]["last_used_at"] is not None
        token_id = created.json()["id"]
        revoked = await running.http.delete(f"{TOKENS}/{token_id}", headers={CSRF_HEADER: csrf})
        assert revoked.status_code == 204
        refused = await script.get(ME, headers=bearer)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert (await running.http.get(TOKENS)).json()[0]["revoked_at"] is not None
        assert (await running.http.delete(f"{TOKENS}/999", headers={CSRF_HEADER: csrf})).status_code == 404
    actions = [e.action for e in await running.events() if e.action.startswith("token")]
    assert sorted(actions) == ["token_created", "token_revoked"]
    assert all(token not in (e.detail or "") for e in await running.events())


async def test_expired_token_is_refused(running: AccessApp) -> None:
    csrf = await login(running.http, "alice")
    created = await running.http.post(
        TOKENS, json={"name": "short", "expires_days": 1}, headers={CSRF_HEADER: csrf}
    )
    bearer = {"Authorization": f"Bearer {created.json()['token']}"}
    async with running.client() as script:
        assert (await script.get(ME, headers=bearer)).status_code == 200
        running.clock.advance(86400 + 1)
        assert (await script.get(ME, headers=bearer)).status_code == 401
        assert (await script.get(ME, headers={"Authorization": "Bearer hw_nonsense"})).status_code == 401
        assert (await script.get(ME, headers={"Authorization": "Basic YTpi"})).status_code == 401


async def test_token_lifetime_is_capped(database: Database) -> None:
    async with serve_access(database, make_config(token_max_days=30)) as app:
        await app.add_user("alice")
        csrf = await login(app.http, "alice")
        answer = await app.http.post(
            TOKENS, json={"name": "long", "expires_days": 31}, headers={CSRF_HEADER: csrf}
        )
        assert answer.status_code == 422
        assert "30" in answer.json()["detail"]


# -- CSRF and permissions ----------------------------------------------------------


async def test_csrf_is_required_for_cookie_writes_only(running: AccessApp) -> None:
    csrf = await login(running.http, "alice")
    assert (await running.http.post(ECHO)).status_code == 403
    assert (await running.http.post(ECHO, headers={CSRF_HEADER: "wrong"})).status_code == 403
    assert (await running.http.post(ECHO, headers={CSRF_HEADER: csrf})).status_code == 200
    assert (await running.http.get(ME)).status_code == 200  # reads need no header
    assert (await running.http.post("/api/v1/auth/logout")).status_code == 403


async def test_permission_is_checked(running: AccessApp) -> None:
    await running.add_user("victor", "viewer")
    async with running.client() as viewer:
        await login(viewer, "victor")
        denied = await viewer.get("/api/v1/test/snapshot")
        assert denied.status_code == 403
        assert denied.headers["content-type"] == "application/problem+json"
    await login(running.http, "alice")
    assert (await running.http.get("/api/v1/test/snapshot")).status_code == 200


async def test_a_parallel_burst_gets_no_more_guesses(database: Database) -> None:
    config = make_config(max_failed_logins=3, lockout_seconds=60, failure_window=60)
    async with serve_access(database, config) as app:
        await app.add_user("alice")
        attempts = [app.auth.login("alice", f"guess number {i}", "10.9.8.7") for i in range(12)]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        # Answers that tell a guess was wrong: the limit, plus at most the checks already
        # running in the argon2 slots (2) when the lockout began.
        refused = [r for r in results if isinstance(r, LoginRefused)]
        assert 3 <= len(refused) <= 4
        assert all(isinstance(r, LoginRefused | LoginLocked) for r in results)
        with pytest.raises(LoginLocked):
            await app.auth.login("alice", PASSWORD, "10.9.8.7")
