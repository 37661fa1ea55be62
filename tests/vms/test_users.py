"""User management by a centre's administrators, and the first administrators at start-up."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.vms.auth_fixtures import PASSWORD, AccessApp, light_passwords, login, make_config, serve_access
from vms.audit import AuditLog, AuditQuery
from vms.auth import AuthService
from vms.bootstrap import BootstrapError, bootstrap_admins, env_variable
from vms.deps import CSRF_HEADER
from vms.storage import Database
from vms.storage.tables import User

USERS = "/api/v1/users"
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
async def admin(database: Database) -> AsyncIterator[tuple[AccessApp, dict[str, str]]]:
    """The app with a logged-in meizhou admin; yields it and the CSRF header."""
    async with serve_access(database) as app:
        await app.add_user("boss", "admin")
        csrf = await login(app.http, "boss")
        yield app, {CSRF_HEADER: csrf}


async def test_admin_creates_and_lists_users_of_own_centre(admin: tuple[AccessApp, dict[str, str]]) -> None:
    app, csrf = admin
    await app.add_user("stranger", "admin", centre="xingning")
    created = await app.http.post(
        USERS, json={"username": "Olive", "role": "operator", "password": PASSWORD}, headers=csrf
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["username"], body["centre"], body["role"], body["disabled"]) == (
        "olive",
        "meizhou",
        "operator",
        False,
    )
    assert "password" not in body and "password_hash" not in body
    listed = await app.http.get(USERS)
    assert [u["username"] for u in listed.json()] == ["boss", "olive"]
    async with app.client() as olive:
        assert (
            await olive.post("/api/v1/auth/login", json={"username": "olive", "password": PASSWORD})
        ).status_code == 200
    [event] = [e for e in await app.events("admin_change") if e.username == "boss"]
    assert event.centre_id == "meizhou"
    assert "olive" in (event.detail or "") and "operator" in (event.detail or "")
    assert PASSWORD not in (event.detail or "")


async def test_user_input_is_checked(admin: tuple[AccessApp, dict[str, str]]) -> None:
    app, csrf = admin
    short = await app.http.post(
        USERS, json={"username": "tim", "role": "viewer", "password": "short"}, headers=csrf
    )
    assert short.status_code == 422
    assert "12 characters" in short.json()["detail"]
    taken = await app.http.post(
        USERS, json={"username": "BOSS", "role": "viewer", "password": PASSWORD}, headers=csrf
    )
    assert taken.status_code == 409
    bad_name = await app.http.post(
        USERS, json={"username": "a b", "role": "viewer", "password": PASSWORD}, headers=csrf
    )
    assert bad_name.status_code == 422
    bad_role = await app.http.post(
        USERS, json={"username": "tim", "role": "root", "password": PASSWORD}, headers=csrf
    )
    assert bad_role.status_code == 422
    assert PASSWORD not in bad_role.text
    assert (await app.http.patch(f"{USERS}/1", json={}, headers=csrf)).status_code == 422


async def test_role_change_disable_and_reset(admin: tuple[AccessApp, dict[str, str]]) -> None:
    app, csrf = admin
    uid = await app.add_user("victor", "viewer")
    async with app.client() as victor:
        await login(victor, "victor")
        assert (await victor.get(USERS)).status_code == 403  # viewers manage nobody

        changed = await app.http.patch(f"{USERS}/{uid}", json={"role": "operator"}, headers=csrf)
        assert changed.json()["role"] == "operator"
        me = await victor.get("/api/v1/auth/me")
        assert me.json()["role"] == "operator"  # takes effect on the next request

        reset = await app.http.patch(f"{USERS}/{uid}", json={"password": NEW_PASSWORD}, headers=csrf)
        assert reset.status_code == 200
        assert (await victor.get("/api/v1/auth/me")).status_code == 401  # the session ended
        old = await victor.post("/api/v1/auth/login", json={"username": "victor", "password": PASSWORD})
        assert old.status_code == 401
        await login(victor, "victor", NEW_PASSWORD)

        disabled = await app.http.patch(f"{USERS}/{uid}", json={"disabled": True}, headers=csrf)
        assert disabled.json()["disabled"] is True
        assert (await victor.get("/api/v1/auth/me")).status_code == 401
        refused = await victor.post(
            "/api/v1/auth/login", json={"username": "victor", "password": NEW_PASSWORD}
        )
        assert refused.status_code == 401
        assert refused.json()["detail"] == "wrong username or password"

    details = [e.detail or "" for e in await app.events("admin_change") if e.username == "boss"]
    assert any("role viewer → operator" in d for d in details)
    assert any("password reset" in d and "1 login session(s) ended" in d for d in details)
    assert any("disabled" in d for d in details)
    assert all(NEW_PASSWORD not in d and PASSWORD not in d for d in details)


async def test_disabling_revokes_tokens_for_good(admin: tuple[AccessApp, dict[str, str]]) -> None:
    app, csrf = admin
    uid = await app.add_user("script-owner", "operator")
    async with app.client() as owner:
        owner_csrf = await login(owner, "script-owner")
        token = (
            await owner.post("/api/v1/auth/tokens", json={"name": "cron"}, headers={CSRF_HEADER: owner_csrf})
        ).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    async with app.client() as script:
        assert (await script.get("/api/v1/auth/me", headers=bearer)).status_code == 200
        await app.http.patch(f"{USERS}/{uid}", json={"disabled": True}, headers=csrf)
        assert (await script.get("/api/v1/auth/me", headers=bearer)).status_code == 401
        await app.http.patch(f"{USERS}/{uid}", json={"disabled": False}, headers=csrf)
        # Enabled again, the user logs in, but the token revoked by the disable stays dead.
        assert (await script.get("/api/v1/auth/me", headers=bearer)).status_code == 401


async def test_other_centres_users_are_out_of_reach(admin: tuple[AccessApp, dict[str, str]]) -> None:
    app, csrf = admin
    foreign = await app.add_user("xn-viewer", "viewer", centre="xingning")
    assert (await app.http.get(f"{USERS}/{foreign}")).status_code == 404
    answer = await app.http.patch(f"{USERS}/{foreign}", json={"disabled": True}, headers=csrf)
    assert answer.status_code == 404
    async with app.auth.db.session() as s:
        assert (await s.get(User, foreign)).disabled is False  # type: ignore[union-attr]


async def test_the_last_admin_stays(admin: tuple[AccessApp, dict[str, str]]) -> None:
    app, csrf = admin
    boss = (await app.http.get(USERS)).json()[0]["id"]
    answer = await app.http.patch(f"{USERS}/{boss}", json={"role": "viewer"}, headers=csrf)
    assert answer.status_code == 409
    assert "last active administrator" in answer.json()["detail"]
    assert (await app.http.patch(f"{USERS}/{boss}", json={"disabled": True}, headers=csrf)).status_code == 409
    second = await app.add_user("deputy", "admin")
    assert (
        await app.http.patch(f"{USERS}/{second}", json={"disabled": True}, headers=csrf)
    ).status_code == 200


# -- first administrators --------------------------------------------------------------


def _service(database: Database, **auth: object) -> AuthService:
    config = make_config(**auth)
    return AuthService(
        database, AuditLog(database, retention_days=30), config.auth, config, passwords=light_passwords()
    )


async def _can_log_in(auth: AuthService, username: str, password: str) -> bool:
    try:
        await auth.login(username, password, "127.0.0.1")
    except Exception:
        return False
    return True


async def test_first_admins_from_env_and_generated(
    database: Database, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = _service(database)
    env = {env_variable("meizhou"): "env-password-for-meizhou"}
    created = await bootstrap_admins(auth, environ=env)
    assert created == ["admin-meizhou", "admin-xingning"]
    assert env_variable("xingning") == "HALLWATCH_ADMIN_PASSWORD_XINGNING"
    err = capsys.readouterr().err
    assert "admin-xingning" in err and "admin-meizhou" not in err
    generated = (
        next(line for line in err.splitlines() if "password:" in line).split("password:")[1].strip(" |")
    )
    assert len(generated) >= 24
    assert generated not in caplog.text and "env-password-for-meizhou" not in caplog.text
    assert await _can_log_in(auth, "admin-meizhou", "env-password-for-meizhou")
    assert await _can_log_in(auth, "admin-xingning", generated)
    async with database.session() as s:
        hashes = list(await s.scalars(select(User.password_hash)))
    assert all(h.startswith("$argon2id$") and generated not in h for h in hashes)
    # A second start creates nobody and prints nothing.
    assert await bootstrap_admins(auth, environ={}) == []
    assert capsys.readouterr().err == ""
    events = await auth.audit.query(AuditQuery(action="admin_change"))
    assert {e.centre_id for e in events} == {"meizhou", "xingning"}
    assert all(generated not in (e.detail or "") for e in events)


async def test_first_admins_from_secrets_file(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets_file = tmp_path / "admins.yaml"
    secrets_file.write_text("meizhou: file-password-meizhou\nxingning: 'file-password-xingning'\n")
    auth = _service(database, bootstrap_secrets_file=secrets_file)
    env = {env_variable("meizhou"): "the-env-loses-to-the-file"}
    assert len(await bootstrap_admins(auth, environ=env)) == 2
    assert capsys.readouterr().err == ""
    assert await _can_log_in(auth, "admin-meizhou", "file-password-meizhou")
    assert await _can_log_in(auth, "admin-xingning", "file-password-xingning")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_short_or_malformed_bootstrap_passwords_stop_the_start(
    database: Database, tmp_path: Path
) -> None:
    auth = _service(database)
    with pytest.raises(BootstrapError, match=r"HALLWATCH_ADMIN_PASSWORD_MEIZHOU.*12 characters") as caught:
        await bootstrap_admins(auth, environ={env_variable("meizhou"): "tooshort"})
    assert "tooshort" not in str(caught.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just a list\n")
    with pytest.raises(BootstrapError, match="must map centre ids"):
        await bootstrap_admins(_service(database, bootstrap_secrets_file=bad), environ={})
    with pytest.raises(BootstrapError, match="cannot read"):
        await bootstrap_admins(
            _service(database, bootstrap_secrets_file=tmp_path / "missing.yaml"), environ={}
        )
    async with database.session() as s:
        assert list(await s.scalars(select(User))) == []  # nothing half-created
