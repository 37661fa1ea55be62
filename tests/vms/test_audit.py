"""The audit trail: recording, filters, CSV export, retention and the HTTP API, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import func, select

from tests.app_fixtures import listening_socket
from vms import problems
from vms.access import Principal
from vms.audit import CSV_COLUMNS, AuditLog, AuditQuery, AuditRecord
from vms.deps import current_user
from vms.problems import Problem
from vms.routes import audit as audit_routes
from vms.storage import Database
from vms.storage.tables import AuditEvent

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

OPERATOR_A = Principal(
    user_id=1, username="op-a", centre_id="meizhou", role="operator", via="token", csrf_token=None
)
ADMIN_B = Principal(
    user_id=2, username="admin-b", centre_id="xingning", role="admin", via="token", csrf_token=None
)
VIEWER_A = Principal(
    user_id=3, username="viewer-a", centre_id="meizhou", role="viewer", via="token", csrf_token=None
)


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


async def _seed(audit: AuditLog) -> None:
    """Six events over an hour in two centres: three views, a snapshot, two logins."""
    await audit.record("login_success", principal=OPERATOR_A, source_addr="10.0.0.5", at=T0)
    await audit.record(
        "view",
        principal=OPERATOR_A,
        camera_id="cam-1",
        protocol="webrtc",
        started_at=T0 + timedelta(minutes=1),
        ended_at=T0 + timedelta(minutes=11),
        bytes=12_000_000,
        at=T0 + timedelta(minutes=11),
    )
    await audit.record("snapshot", principal=OPERATOR_A, camera_id="cam-2", at=T0 + timedelta(minutes=20))
    await audit.record(
        "view", principal=VIEWER_A, camera_id="cam-2", protocol="mjpeg", at=T0 + timedelta(minutes=30)
    )
    await audit.record(
        "login_failure", username="admin-b", centre_id="xingning", at=T0 + timedelta(minutes=40)
    )
    await audit.record(
        "view", principal=ADMIN_B, camera_id="cam-1", protocol="webrtc", at=T0 + timedelta(minutes=50)
    )


async def test_record_fills_in_from_the_principal(database: Database) -> None:
    audit = AuditLog(database, retention_days=180)
    started = datetime(2026, 3, 1, 17, 0, tzinfo=UTC).astimezone()  # any zone in, UTC out
    await audit.record(
        "view",
        principal=OPERATOR_A,
        camera_id="cam-1",
        protocol="webrtc",
        source_addr="192.0.2.7",
        started_at=started,
        ended_at=started + timedelta(seconds=95.5),
        bytes=3_500_000,
        detail={"hall": "hall-1", "quality": "main"},
    )
    [record] = await audit.query(AuditQuery())
    assert isinstance(record, AuditRecord)
    assert (record.user_id, record.username, record.centre_id) == (1, "op-a", "meizhou")
    assert (record.action, record.camera_id, record.protocol) == ("view", "cam-1", "webrtc")
    assert record.source_addr == "192.0.2.7"
    assert record.started_at == started and record.started_at.tzinfo is UTC
    assert record.duration_seconds == 95.5
    assert record.bytes == 3_500_000
    assert record.detail == '{"hall": "hall-1", "quality": "main"}'
    assert record.at.tzinfo is UTC
    assert abs((datetime.now(UTC) - record.at).total_seconds()) < 30


async def test_explicit_values_win_and_long_input_is_cut(database: Database) -> None:
    audit = AuditLog(database, retention_days=180)
    typed = "=" + "x" * 300  # an attacker types anything into the login form
    await audit.record("login_failure", username=typed, source_addr="203.0.113.9", detail="unknown user")
    await audit.record("admin_change", principal=ADMIN_B, centre_id="meizhou", detail="moved a user")
    change, failure = await audit.query(AuditQuery())
    assert failure.username == typed[:64] and failure.user_id is None and failure.centre_id is None
    assert (change.username, change.centre_id) == ("admin-b", "meizhou")


async def test_concurrent_records_all_land(database: Database) -> None:
    audit = AuditLog(database, retention_days=180)
    await asyncio.gather(
        *(audit.record("snapshot", principal=OPERATOR_A, camera_id=f"cam-{n}") for n in range(40))
    )
    assert await _count(database) == 40


async def test_filters_ordering_and_paging(database: Database) -> None:
    audit = AuditLog(database, retention_days=10_000)
    await _seed(audit)

    everything = await audit.query(AuditQuery())
    assert [r.at for r in everything] == sorted((r.at for r in everything), reverse=True)
    assert [r.action for r in everything] == [
        "view",
        "login_failure",
        "view",
        "snapshot",
        "view",
        "login_success",
    ]

    async def actions(**filters: object) -> list[str]:
        return [r.action for r in await audit.query(AuditQuery(**filters))]  # type: ignore[arg-type]

    assert await actions(centre_id="meizhou") == ["view", "snapshot", "view", "login_success"]
    assert await actions(centre_id="xingning") == ["view", "login_failure"]
    assert await actions(username="op-a") == ["snapshot", "view", "login_success"]
    assert await actions(camera_id="cam-1") == ["view", "view"]
    assert await actions(action="view", centre_id="meizhou") == ["view", "view"]
    # since inclusive, until exclusive; a time in another zone means the same instant
    since = (T0 + timedelta(minutes=11)).astimezone()
    assert await actions(since=since, until=T0 + timedelta(minutes=40)) == ["view", "snapshot", "view"]
    assert await actions(since=T0 + timedelta(hours=2)) == []
    page1 = await audit.query(AuditQuery(limit=2))
    page2 = await audit.query(AuditQuery(limit=2, offset=2))
    assert [r.id for r in page1 + page2] == [r.id for r in everything[:4]]

    [view] = await audit.query(AuditQuery(username="op-a", action="view"))
    assert view.duration_seconds == 600.0 and view.bytes == 12_000_000


async def test_csv_export_parses_and_holds_every_row(database: Database) -> None:
    audit = AuditLog(database, retention_days=10_000)
    await _seed(audit)
    for n in range(7):  # equal times: paging must neither skip nor repeat rows
        await audit.record("snapshot", username=f"=cmd|{n}", centre_id="meizhou", at=T0 + timedelta(hours=1))

    text = "".join([chunk async for chunk in audit.export_csv(AuditQuery(centre_id="meizhou"), page_size=3)])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    expected = await audit.query(AuditQuery(centre_id="meizhou", limit=None))
    assert len(rows) == len(expected) == 11
    assert [int(row["id"]) for row in rows] == [r.id for r in expected]
    assert {row["centre_id"] for row in rows} == {"meizhou"}
    for row in rows:
        assert datetime.fromisoformat(row["at"]).tzinfo is not None
    view = next(row for row in rows if row["action"] == "view" and row["username"] == "op-a")
    assert datetime.fromisoformat(view["started_at"]) == T0 + timedelta(minutes=1)
    assert float(view["duration_seconds"]) == 600.0 and view["bytes"] == "12000000"
    assert view["detail"] == ""
    # a typed value that a spreadsheet would run as a formula is quoted
    assert {row["username"] for row in rows if row["username"].startswith("'=")} == {
        f"'=cmd|{n}" for n in range(7)
    }

    limited = "".join([c async for c in audit.export_csv(AuditQuery(action="view", limit=2), page_size=1)])
    assert len(list(csv.DictReader(io.StringIO(limited)))) == 2
    empty = "".join([c async for c in audit.export_csv(AuditQuery(camera_id="nowhere"))])
    assert empty.splitlines() == [",".join(CSV_COLUMNS)]


async def test_purge_deletes_exactly_the_expired_rows(database: Database) -> None:
    audit = AuditLog(database, retention_days=30)
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    cutoff = now - timedelta(days=30)
    for at in (cutoff - timedelta(days=400), cutoff - timedelta(seconds=1)):
        await audit.record("logout", username="old", at=at)
    for at in (cutoff, cutoff + timedelta(seconds=1), now):
        await audit.record("logout", username="kept", at=at)
    assert await audit.purge(now) == 2
    assert {r.username for r in await audit.query(AuditQuery(limit=None))} == {"kept"}
    assert await audit.purge(now) == 0
    assert await _count(database) == 3


async def test_retention_task_purges_at_start_and_stops(database: Database) -> None:
    audit = AuditLog(database, retention_days=1, purge_interval=3600)
    await audit.record("logout", username="old", at=datetime.now(UTC) - timedelta(days=3))
    await audit.record("logout", username="new")
    await audit.stop()  # stopping a log that never started is fine
    audit.start()
    audit.start()
    try:
        async with asyncio.timeout(10):
            while await _count(database) != 1:
                await asyncio.sleep(0.02)
    finally:
        await audit.stop()
        await audit.stop()
    [left] = await audit.query(AuditQuery())
    assert left.username == "new"


# -- the HTTP API ----------------------------------------------------------------

PRINCIPALS = {p.username: p for p in (OPERATOR_A, ADMIN_B, VIEWER_A)}


def _audit_app(audit: AuditLog) -> FastAPI:
    """The audit router alone; the caller is named by a test header instead of a login."""

    async def caller(request: Request) -> Principal:
        principal = PRINCIPALS.get(request.headers.get("x-test-user", ""))
        if principal is None:
            raise Problem(401, "no such test user")
        return principal

    app = FastAPI()
    problems.install(app)
    app.include_router(audit_routes.router, prefix="/api/v1")
    app.dependency_overrides[current_user] = caller
    app.state.audit = audit
    return app


@contextlib.asynccontextmanager
async def _serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    sock = listening_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "the server stopped during start-up"
                await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def test_audit_api_shows_the_callers_centre_only(database: Database) -> None:
    audit = AuditLog(database, retention_days=10_000)
    await _seed(audit)
    async with _serve(_audit_app(audit)) as http:
        as_op = {"x-test-user": "op-a"}
        answer = await http.get("/api/v1/audit", headers=as_op)
        assert answer.status_code == 200
        body = answer.json()
        assert [e["action"] for e in body] == ["view", "snapshot", "view", "login_success"]
        assert {e["centre_id"] for e in body} == {"meizhou"}
        assert datetime.fromisoformat(body[0]["at"]) == T0 + timedelta(minutes=30)

        # filters narrow the caller's centre; asking for the other centre's camera or user finds nothing of it
        params = {"camera": "cam-1", "since": "2026-03-01T09:05:00Z", "until": "2026-03-01T17:30:00+08:00"}
        answer = await http.get("/api/v1/audit", headers=as_op, params=params)
        assert [(e["username"], e["camera_id"]) for e in answer.json()] == [("op-a", "cam-1")]
        answer = await http.get("/api/v1/audit", headers=as_op, params={"user": "admin-b"})
        assert answer.json() == []
        answer = await http.get(
            "/api/v1/audit", headers=as_op, params={"action": "view", "limit": 1, "offset": 1}
        )
        assert [e["username"] for e in answer.json()] == ["op-a"]

        answer = await http.get("/api/v1/audit", headers={"x-test-user": "admin-b"})
        assert [e["action"] for e in answer.json()] == ["view", "login_failure"]

        for path in ("/api/v1/audit", "/api/v1/audit.csv"):
            denied = await http.get(path, headers={"x-test-user": "viewer-a"})
            assert denied.status_code == 403
            assert denied.headers["content-type"] == "application/problem+json"

        assert (await http.get("/api/v1/audit", headers=as_op, params={"limit": 1001})).status_code == 422
        bad = await http.get(
            "/api/v1/audit",
            headers=as_op,
            params={"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
        )
        assert bad.status_code == 400
        assert (
            await http.get("/api/v1/audit", headers=as_op, params={"since": "yesterday"})
        ).status_code == 422

        export = await http.get("/api/v1/audit.csv", headers=as_op, params={"action": "view"})
        assert export.status_code == 200
        assert export.headers["content-type"].startswith("text/csv")
        disposition = export.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="audit-meizhou-') and disposition.endswith(
            '.csv"'
        )
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert [(r["username"], r["camera_id"]) for r in rows] == [("viewer-a", "cam-2"), ("op-a", "cam-1")]

    [exported] = await audit.query(AuditQuery(action="audit_export"))
    assert (exported.username, exported.centre_id) == ("op-a", "meizhou")
    assert exported.detail == "CSV export action=view"


async def test_admins_see_logins_aimed_at_no_account_and_nothing_of_another_centre(
    database: Database,
) -> None:
    audit = AuditLog(database, retention_days=10_000)
    await _seed(audit)
    # Aimed at no account: no centre. And rows of other kinds without a centre stay hidden.
    await audit.record(
        "login_locked", username="ghost", source_addr="203.0.113.9", at=T0 + timedelta(hours=1)
    )
    await audit.record(
        "login_failure", username="nobody", source_addr="203.0.113.9", at=T0 + timedelta(hours=2)
    )
    await audit.record("admin_change", username="system", detail="no centre", at=T0 + timedelta(hours=3))
    await audit.record("login_locked", username="op-a", centre_id="meizhou", at=T0 + timedelta(hours=4))
    async with _serve(_audit_app(audit)) as http:
        for path in ("/api/v1/audit", "/api/v1/audit.csv"):
            answer = await http.get(path, headers={"x-test-user": "admin-b"})
            assert answer.status_code == 200
            rows = answer.json() if path.endswith("audit") else list(csv.DictReader(io.StringIO(answer.text)))
            rows = [r for r in rows if r["action"] != "audit_export"]  # the export records itself
            assert [(r["action"], r["username"], r["centre_id"] or None) for r in rows] == [
                ("login_failure", "nobody", None),
                ("login_locked", "ghost", None),
                ("view", "admin-b", "xingning"),
                ("login_failure", "admin-b", "xingning"),
            ]
            # An operator of centre A sees centre A only: not B, not the unattributed ones.
            answer = await http.get(path, headers={"x-test-user": "op-a"})
            rows = answer.json() if path.endswith("audit") else list(csv.DictReader(io.StringIO(answer.text)))
            assert {r["centre_id"] for r in rows} == {"meizhou"}
            assert ("login_locked", "op-a") in {(r["action"], r["username"]) for r in rows}
        # Filters only narrow: B's admin asking for A's user finds nothing of A.
        answer = await http.get("/api/v1/audit", headers={"x-test-user": "admin-b"}, params={"user": "op-a"})
        assert answer.json() == []
