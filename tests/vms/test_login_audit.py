"""Refused logins are summed in the audit trail, attributed to the targeted account's
centre, and shown to the right administrators: real app, real database, real sockets."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Awaitable, Callable

import httpx

from tests.app_fixtures import serve_app
from tests.vms.auth_fixtures import PASSWORD, make_config, serve_access
from vms.audit import AuditLog, AuditQuery, AuditRecord
from vms.login_audit import RefusalAudit, Target
from vms.storage import Database

LOGIN = "/api/v1/auth/login"


async def until(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


def count_of(record: AuditRecord) -> int:
    """How many refusals one row stands for: 1, or the count of a summary."""
    if record.detail and record.detail.startswith("{"):
        return int(json.loads(record.detail)["count"])
    return 1


async def post_login(http: httpx.AsyncClient, username: str, password: str = "guess") -> int:
    answer = await http.post(LOGIN, json={"username": username, "password": password})
    return answer.status_code


async def test_a_locked_out_flood_writes_a_few_rows_with_the_count(database: Database) -> None:
    config = make_config(max_failed_logins=3, lockout_seconds=600, login_audit_interval=600)
    async with serve_access(database, config) as app:
        await app.add_user("alice", centre="meizhou")
        async with app.client("127.0.0.2") as attacker:
            for name in ("u1", "u2", "u3"):
                assert await post_login(attacker, name) == 401
            sent = {"alice": 0, "unknown": 0}
            for i in range(120):
                name = "alice" if i % 3 == 0 else f"nobody-{i}"
                assert await post_login(attacker, name, PASSWORD) == 429
                sent["alice" if name == "alice" else "unknown"] += 1
        # The first refusal of each (address, target) is there at once.
        locked = await app.events("login_locked")
        assert sorted((e.username, e.centre_id, e.source_addr) for e in locked) == [
            ("alice", "meizhou", "127.0.0.2"),
            ("nobody-1", None, "127.0.0.2"),
        ]
        assert app.auth.refusals.pending() == 118
        await app.auth.refusals.stop()  # as at shutdown: the counts are written
        await app.auth.refusals.stop()
        locked = await app.events("login_locked")
        assert len(locked) == 4
        assert sum(count_of(e) for e in locked if e.centre_id == "meizhou") == sent["alice"]
        assert sum(count_of(e) for e in locked if e.centre_id is None) == sent["unknown"]
        [summary] = [e for e in locked if e.centre_id is None and count_of(e) > 1]
        assert summary.username is None  # many names were typed
        assert summary.started_at is not None and summary.ended_at is not None
        assert summary.started_at <= summary.ended_at
        # The failures that led to the lockout are each recorded (the limiter bounds them).
        assert len(await app.events("login_failure")) == 3
        # After the stop, each refusal is written at once.
        async with app.client("127.0.0.2") as attacker:
            assert await post_login(attacker, "alice") == 429
        assert len(await app.events("login_locked")) == 5


async def test_a_summary_row_per_interval_while_refusals_go_on(database: Database) -> None:
    audit = AuditLog(database, retention_days=180)
    refusals = RefusalAudit(audit, interval=1.0)  # long enough that a busy machine does not split a burst
    alice = Target("alice", "xingning")

    async def rows() -> list[AuditRecord]:
        return await audit.query(AuditQuery(action="login_locked", limit=None))

    async def no_pending() -> bool:
        return refusals.pending() == 0

    async def no_open_key() -> bool:
        return len(refusals) == 0

    try:
        await refusals.refused(
            "login_locked", source_addr="192.0.2.9", target=alice, typed="Alice", detail="a"
        )
        assert len(await rows()) == 1
        for _ in range(3):
            for n in range(5):
                await refusals.refused(
                    "login_locked", source_addr="192.0.2.9", target=alice, typed="alice", detail=f"{n}"
                )
            await until(no_pending)  # the interval ended: one summary row
        assert len(await rows()) == 4
        # Quiet for an interval: the key closes, and the next refusal is written at once again.
        await until(no_open_key)
        written = len(await rows())
        await refusals.refused(
            "login_locked", source_addr="192.0.2.9", target=alice, typed="alice", detail="z"
        )
        assert len(await rows()) == written + 1
    finally:
        await refusals.stop()
    records = await rows()
    assert {(r.username, r.centre_id, r.source_addr) for r in records} == {("alice", "xingning", "192.0.2.9")}
    assert sum(count_of(r) for r in records) == 1 + 15 + 1
    assert all(count_of(r) <= 5 or r.detail is None for r in records)


async def test_memory_is_bounded_and_nothing_is_lost(database: Database) -> None:
    audit = AuditLog(database, retention_days=180)
    refusals = RefusalAudit(audit, interval=600, max_sources=10)
    try:
        for i in range(50):
            for _ in range(3):
                await refusals.refused(
                    "login_locked", source_addr=f"198.51.100.{i}", target=None, typed=f"x{i}", detail="d"
                )
        assert len(refusals) <= 11  # ten addresses, and one key for the rest
    finally:
        await refusals.stop()
    records = await audit.query(AuditQuery(action="login_locked", limit=None))
    assert sum(count_of(r) for r in records) == 150
    assert len(records) <= 2 * 11
    assert any(r.source_addr is None for r in records)


SITE = """
database:
  url: {url}
auth:
  max_failed_logins: 2
  lockout_seconds: 600
  login_audit_interval: 600
centres:
  - id: meizhou
    name: 梅州市政务服务中心
    halls: all
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


async def test_each_centre_sees_its_own_and_the_unattributed_refusals_only(database_url: str) -> None:
    async with serve_app(SITE.format(url=database_url)) as app:
        op_a = await app.user("meizhou", "operator", "op-a")
        await app.user("xingning", "viewer", "viewer-b")
        admin_a, admin_b = await app.admin("meizhou"), await app.admin("xingning")
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
        async with httpx.AsyncClient(base_url=app.base_url, transport=transport, timeout=10) as attacker:
            # Two failures lock viewer-b (centre B) and the address; then refusals aimed at
            # viewer-b, at op-a (centre A) and at nobody.
            assert await post_login(attacker, "viewer-b") == 401
            assert await post_login(attacker, "viewer-b") == 401
            for name in ("viewer-b", "op-a", "ghost", "viewer-b", "op-a", "ghost"):
                assert await post_login(attacker, name) == 429

        async def seen(client: httpx.AsyncClient, path: str = "/api/v1/audit") -> list[dict[str, str]]:
            answer = await client.get(path, params={"limit": 1000} if path.endswith("audit") else None)
            assert answer.status_code == 200, answer.text
            if path.endswith(".csv"):
                return list(csv.DictReader(io.StringIO(answer.text)))
            rows: list[dict[str, str]] = answer.json()
            return rows

        for path in ("/api/v1/audit", "/api/v1/audit.csv"):
            a_rows, b_rows, op_rows = (
                await seen(admin_a, path),
                await seen(admin_b, path),
                await seen(op_a, path),
            )
            # Nothing of centre B reaches centre A, whoever asks and however.
            assert {r["centre_id"] for r in a_rows} <= {"meizhou", None, ""}
            assert {r["centre_id"] for r in b_rows} <= {"xingning", None, ""}
            assert {r["centre_id"] for r in op_rows} == {"meizhou"}
            assert "viewer-b" not in {r["username"] for r in a_rows + op_rows}
            # The lockout of B's account shows in B's view; the one aimed at A's account in A's.
            assert ("login_failure", "viewer-b") in {(r["action"], r["username"]) for r in b_rows}
            assert ("login_locked", "viewer-b") in {(r["action"], r["username"]) for r in b_rows}
            assert ("login_locked", "op-a") in {(r["action"], r["username"]) for r in a_rows + op_rows}
            # The refusal aimed at nobody: every centre's admins see it, operators do not.
            ghost = [r for r in a_rows if r["username"] == "ghost"]
            assert [(r["action"], r["source_addr"]) for r in ghost] == [("login_locked", "127.0.0.3")]
            assert [r["username"] for r in b_rows if r["username"] == "ghost"] == ["ghost"]
            assert "ghost" not in {r["username"] for r in op_rows}
        # Filters narrow within what the caller may see; they never widen it.
        answer = await admin_a.get("/api/v1/audit", params={"user": "viewer-b"})
        assert answer.json() == []

    # The shutdown wrote the counts still pending, each with its target's centre.
    db = Database(database_url)
    await db.start()
    try:
        locked = await AuditLog(db, retention_days=180).query(AuditQuery(action="login_locked", limit=None))
    finally:
        await db.stop()
    totals: dict[str | None, int] = {}
    for record in locked:
        totals[record.username] = totals.get(record.username, 0) + count_of(record)
    assert totals == {"viewer-b": 2, "op-a": 2, "ghost": 2}
    assert {r.centre_id for r in locked if r.username == "viewer-b"} == {"xingning"}
    assert {r.centre_id for r in locked if r.username == "op-a"} == {"meizhou"}
