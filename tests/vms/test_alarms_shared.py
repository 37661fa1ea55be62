"""Alarms shared by two instances through a real PostgreSQL: one list, one event sequence.

Two :class:`AlarmCentre` instances in one process, each with its own engine and its own
listening connection to the same database, as two service instances would have.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy import func, select

from streams import IngestState
from tests.app_fixtures import serve_app
from tests.vms.test_alarms import ALL, event_stream, site
from tests.vms.test_webhooks import hook, receiving, verify
from tests.vms.test_webhooks import site as webhook_site
from vms.access import Principal
from vms.alarm_events import AlarmEvent, Subscription
from vms.alarms import AlarmCentre
from vms.alarms_shared import SharedAlarms
from vms.audit import AuditLog
from vms.config_loader import parse_config
from vms.storage import Database
from vms.storage.tables import AuditEvent

S = IngestState
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
OPERATOR = Principal(1, "op-b", "xingning", "operator", "session", None)


@dataclass
class Instance:
    db: Database
    centre: AlarmCentre
    audit: AuditLog

    @property
    def shared(self) -> SharedAlarms:
        assert self.centre.shared is not None
        return self.centre.shared


@pytest.fixture
async def pair(database_url: str) -> AsyncIterator[tuple[Instance, Instance]]:
    instances: list[Instance] = []
    try:
        for name in ("a", "b"):
            db = Database(database_url)
            await db.start()
            shared = SharedAlarms(db, picture_budget=1000, instance=name, poll=30.0)
            centre = AlarmCentre(parse_config(site(), "test.yaml"), shared=shared)
            instances.append(Instance(db, centre, AuditLog(db, retention_days=30)))
            await centre.start()
        yield instances[0], instances[1]
    finally:
        for instance in instances:
            await instance.centre.stop()
            await instance.db.stop()


async def eventually(check: Callable[[], bool], within: float = 5.0) -> float:
    """Seconds until ``check()`` held; fails the test after ``within``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "not within the time allowed"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def take(sub: Subscription, count: int, within: float = 5.0) -> list[AlarmEvent]:
    got: list[AlarmEvent] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            event = await sub.get()
            assert event is not None
            got.append(event)
    return got


async def test_one_list_one_sequence_one_acknowledgement(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    on_b = b.centre.subscribe(ALL)
    # Both instances see the same camera fail: one alarm.
    a.centre.on_state("legal-1", S.ONLINE, S.OFFLINE, "no packet for 5 s")
    b.centre.on_state("legal-1", S.ONLINE, S.OFFLINE, "no packet for 5 s")
    started = time.monotonic()
    (raised,) = await take(on_b, 1)
    assert time.monotonic() - started < 1.0, "seen on the other instance within a second"
    assert raised.type == "alarm" and raised.data["kind"] == "offline"
    await asyncio.sleep(0.3)  # the second raise has had its time
    for instance in (a, b):
        assert [x.id for x in instance.centre.alarms(ALL)] == [raised.data["id"]]

    # Acknowledged on B: acknowledged on A too, once, with one audit record.
    alarm_id = raised.data["id"]
    first = await b.centre.acknowledge_recorded(alarm_id, OPERATOR, ALL, b.audit, "10.0.0.1")
    other = Principal(2, "op-a", "xingning", "operator", "session", None)
    again = await a.centre.acknowledge_recorded(alarm_id, other, ALL, a.audit, "10.0.0.2")
    assert first.acknowledged_by == again.acknowledged_by == "op-b"
    await eventually(lambda: a.centre.unacknowledged_count(ALL) == 0)
    assert a.centre.get(alarm_id, ALL).acknowledged_by == "op-b"
    async with a.db.session() as session:
        audits = await session.scalar(select(func.count()).where(AuditEvent.action == "alarm_ack"))
    assert audits == 1
    (ack,) = await take(on_b, 1)
    assert ack.type == "ack" and ack.seq > raised.seq

    # Back online, seen by both: one informational event resolving it.
    a.centre.on_state("legal-1", S.STARTING, S.ONLINE, None)
    b.centre.on_state("legal-1", S.STARTING, S.ONLINE, None)
    (back,) = await take(on_b, 1)
    assert back.data["kind"] == "online" and back.data["resolves"] == [alarm_id]
    await asyncio.sleep(0.3)
    assert [x.kind for x in a.centre.alarms(ALL)] == ["online", "offline"]

    # A stream that A served resumes on B from A's last id: the same numbers everywhere.
    on_a_log = a.centre.subscribe(ALL, str(raised.seq))
    on_b_log = b.centre.subscribe(ALL, str(raised.seq))
    assert [e.seq for e in on_a_log.replay] == [e.seq for e in on_b_log.replay] == [ack.seq, back.seq]
    assert not on_b_log.resync and on_b_log.position == back.seq


async def test_pictures_and_a_restarted_instance(pair: tuple[Instance, Instance], database_url: str) -> None:
    a, b = pair
    assert a.centre.picture_raised("tax-1", "covered", b"j" * 600) is None, "numbered by the database"
    b.centre.picture_raised("tax-1", "covered", b"k" * 600)
    await eventually(lambda: b.centre.picture_trouble("tax-1") == ["covered"])
    (covered,) = b.centre.alarms(ALL)
    assert (await b.centre.fetch_picture(covered.id, ALL))[1] in (b"j" * 600, b"k" * 600), "the first one"
    a.centre.picture_raised("tax-1", "dark", b"d" * 600)
    await eventually(lambda: len(b.centre.alarms(ALL)) == 2)
    assert b.shared is not None and await b.shared.picture(covered.id) is None, "beyond the budget"

    # An instance started later loads the list and can replay from an earlier id.
    db = Database(database_url)
    await db.start()
    late = AlarmCentre(parse_config(site(), "test.yaml"), shared=SharedAlarms(db, picture_budget=1000))
    try:
        await late.start()
        assert [x.id for x in late.alarms(ALL)] == [x.id for x in b.centre.alarms(ALL)]
        assert late.picture_trouble("tax-1") == ["covered", "dark"]
        first = b.centre.subscribe(ALL).position - 1
        assert len(late.subscribe(ALL, str(first)).replay) == 1
    finally:
        await late.stop()
        await db.stop()


async def test_a_lost_listening_connection_catches_up_without_loss_or_repeat(
    pair: tuple[Instance, Instance], database_url: str
) -> None:
    a, b = pair
    on_b = b.centre.subscribe(ALL)
    on_a = a.centre.subscribe(ALL)
    admin = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        listening = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        async with asyncio.timeout(5):  # B's listening connection opens in the background
            while await admin.fetchval(listening, b.shared.listener_name) != 1:
                await asyncio.sleep(0.05)
        await b.shared.read_now()  # and listens: it has read once since it connected
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            b.shared.listener_name,
        )
        assert killed == 1
        for camera in ("tax-2", "legal-1"):  # written while B hears nothing
            a.centre.on_state(camera, S.ONLINE, S.STALLED, None)
            a.centre.on_state(camera, S.STALLED, S.OFFLINE, None)
        written = await take(on_a, 4)
        got = await take(on_b, 4, within=8.0)
        assert [e.seq for e in got] == [e.seq for e in written], "every event, in order"
        assert (
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", b.shared.listener_name
            )
            == 1
        ), "listening again"
        a.centre.on_state("tax-2", S.STARTING, S.ONLINE, None)
        (back,) = await take(on_b, 1)
        assert back.data["kind"] == "online" and back.seq > got[-1].seq
        await asyncio.sleep(0.3)
        assert on_b._queue.empty(), "nothing twice"
    finally:
        await admin.close()


async def test_three_service_instances_on_one_database(database_url: str) -> None:
    # Every instance pulls the two unreachable cameras: each fault is one alarm, on all three.
    text = site() + f"database:\n  url: {database_url}\n"
    async with serve_app(text) as app_a, serve_app(text) as app_b, serve_app(text) as app_c:
        op_a = await app_a.user("xingning", "operator", "op-a")
        op_b = await app_b.login("op-a")
        op_c = await app_c.login("op-a")
        async with event_stream(op_b, "0") as stream_b:  # from the first event of this database
            raised = await stream_b.take(2)
            assert {f.data["camera_id"] for f in raised} == {"tax-2", "legal-1"}
            alarm = raised[0].data["id"]
            started = time.monotonic()
            res = await op_c.post(f"/api/v1/alarms/{alarm}/ack")
            assert res.status_code == 200 and res.json()["acknowledged_by"] == "op-a"
            ack = await stream_b.next()
            assert time.monotonic() - started < 1.0, "acknowledged on C, seen on B within a second"
            assert ack.event == "ack" and ack.data["id"] == alarm
        again = await op_b.post(f"/api/v1/alarms/{alarm}/ack")
        assert again.json()["acknowledged_at"] == res.json()["acknowledged_at"]
        await asyncio.sleep(1.0)  # any further raise of the same faults has had its time
        for op in (op_a, op_b, op_c):  # one list everywhere, the alarm acknowledged in it
            listed = (await op.get("/api/v1/alarms")).json()
            assert {a["camera_id"] for a in listed["alarms"]} == {"tax-2", "legal-1"}
            assert listed["unacknowledged"] == 1 and len(listed["alarms"]) == 2
            (acked,) = [a for a in listed["alarms"] if a["id"] == alarm]
            assert acked["acknowledged_at"] == res.json()["acknowledged_at"]
        admin = await app_a.admin("xingning")
        trail = (await admin.get("/api/v1/audit", params={"action": "alarm_ack"})).json()
        assert [(r["username"], r["camera_id"]) for r in trail] == [("op-a", raised[0].data["camera_id"])]
        # The stream B served resumes on A from B's last id.
        async with event_stream(op_a, raised[0].id) as stream_a:
            replayed = await stream_a.take(2)
            assert [f.id for f in replayed] == [raised[1].id, ack.id]


async def test_each_alarm_and_acknowledgement_is_posted_once_by_the_instance_that_wrote_it(
    database_url: str,
) -> None:
    """Both instances pull the unreachable camera and both have the centre's webhook; the
    receiver still gets one post of the alarm and one of its acknowledgement."""
    async with receiving() as receiver:
        text = webhook_site(meizhou=hook(receiver.port), tax_url="rtsp://127.0.0.1:9/tax")
        text += f"database:\n  url: {database_url}\n"
        async with serve_app(text) as app_a, serve_app(text) as app_b:
            (alarm_post,) = await receiver.wait_posts(1, within=15)
            assert verify(alarm_post) and alarm_post.json["alarm"]["camera_id"] == "tax-1"
            alarm_id = alarm_post.json["alarm"]["id"]
            await app_a.user("meizhou", "operator", "op-m")
            await asyncio.sleep(2.0)  # the other instance saw the same fault: it posts nothing
            assert len(receiver.posts) == 1, [p.json for p in receiver.posts]
            res = await (await app_b.login("op-m")).post(f"/api/v1/alarms/{alarm_id}/ack")
            assert res.status_code == 200, res.text
            await receiver.wait_posts(2, within=5)
            await asyncio.sleep(1.0)
            assert len(receiver.posts) == 2, [p.json for p in receiver.posts]
            ack_post = receiver.posts[1]
            assert verify(ack_post) and ack_post.json["event"] == "ack"
            assert ack_post.json["alarm"]["id"] == alarm_id
            sent = [app.app.state.webhooks.senders["meizhou"].status.delivered for app in (app_a, app_b)]
            assert sorted(sent) in ([0, 2], [1, 1]), sent  # whoever wrote each event posted it
