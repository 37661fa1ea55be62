"""Configuration changes reach a subscribed superior across restarts of the service.

A superior on 127.0.0.1 subscribes to the catalog; the service stops, its configuration
changes, the service starts again on the same database (SQLite and PostgreSQL), and the
superior must get NOTIFY DEL, ADD and UPDATE (or OFF and ON for a camera disabled or
enabled) in the subscription's own dialog, and nothing when nothing changed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.vms.gb28181.superior import REALM, Msg, Superior, build
from tests.vms.gb28181.test_cascade import LOCAL_ID, query, site
from tests.vms.gb28181.test_catalog_state import edited
from vms.config import Config
from vms.config_gb28181 import CAMERA_TYPE, channel_id
from vms.gb28181 import Cascade
from vms.gb28181.catalog_state import snapshot
from vms.gb28181.channels import Directory
from vms.gb28181.subscription_store import SubscriptionStore
from vms.storage import Database

URI = f"sip:{LOCAL_ID}@{REALM}"
# cam0 and cam3 are in social, cam1 and cam4 in tax (both seen by meizhou), cam2 and cam5 in police
SHARED = "      cameras: [cam0, cam1, cam3]\n"
CHANGED = "      cameras: [cam0, cam1, cam4]\n"


def gb_id(config: Config, camera: str) -> str:
    return channel_id(config.gb28181, CAMERA_TYPE, camera)


@asynccontextmanager
async def service(url: str, config: Config) -> AsyncIterator[SubscriptionStore]:
    """One run of the service's cascade on its own connection to the database, registered;
    its store."""
    db = Database(url)
    await db.start()
    store = SubscriptionStore(db)
    cascade = Cascade(
        config,
        online=lambda camera_id: True,
        recording=lambda camera_id: False,
        media=None,
        record=lambda action, **fields: None,
        store=store,
    )
    cascade.start()
    try:
        async with asyncio.timeout(5):
            while not cascade.platforms[0].status.registered:
                await asyncio.sleep(0.02)
        yield store
    finally:
        await cascade.stop()
        await db.stop()


async def subscribe(superior: Superior, expires: int) -> Msg:
    call_id = superior.request(
        "SUBSCRIBE", URI, query("Catalog", 31), [("Event", "Catalog"), ("Expires", str(expires))]
    )
    answer = await superior.next_response(call_id)
    assert answer.status == 200 and answer.h("Expires") == str(expires)
    return answer


def in_dialog(superior: Superior, answer: Msg, expires: int, cseq: int) -> None:
    """Refresh (or with 0, end) the subscription in its dialog."""
    body = query("Catalog", 32)
    superior.send(
        build(
            f"SUBSCRIBE {URI} SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{superior.port};branch=z9hG4bKrefresh{cseq}{expires}"),
                ("From", answer.h("From")),
                ("To", answer.h("To")),
                ("Call-ID", answer.h("Call-ID")),
                ("CSeq", f"{cseq} SUBSCRIBE"),
                ("Contact", f"<sip:44140000002000000001@127.0.0.1:{superior.port}>"),
                ("Event", "Catalog"),
                ("Expires", str(expires)),
                ("Content-Type", "Application/MANSCDP+xml"),
            ],
            body,
        )
    )


def tag(header: str) -> str:
    found = re.search(r";tag=([^;>\s]+)", header)
    assert found is not None, header
    return found.group(1)


async def notifies(superior: Superior, count: int) -> list[tuple[Msg, str, list[str]]]:
    """The next ``count`` NOTIFYs: each with its one Event and the channel IDs it names."""
    found = []
    for _ in range(count):
        msg = await superior.next_request("NOTIFY")
        body = msg.body.decode("gb2312")
        events = set(re.findall(r"<Event>(\w+)</Event>", body))
        assert len(events) == 1, body
        ids = re.findall(r"<Item>\s*<DeviceID>(\d{20})</DeviceID>", body)
        assert f"<SumNum>{len(ids)}</SumNum>" in body and f'<DeviceList Num="{len(ids)}">' in body
        found.append((msg, events.pop(), ids))
    return found


def assert_in_dialog(msg: Msg, subscription: Msg) -> None:
    assert msg.h("Call-ID") == subscription.h("Call-ID")
    assert tag(msg.h("From")) == tag(subscription.h("To"))  # our tag, given in the 200
    assert tag(msg.h("To")) == tag(subscription.h("From"))  # the superior's
    assert msg.h("Event") == "Catalog" and msg.h("Subscription-State").startswith("active;expires=")


async def nothing_more(superior: Superior) -> None:
    try:
        extra = await superior.next_request("NOTIFY", within=1.0)
    except TimeoutError:
        return
    raise AssertionError(f"an unexpected NOTIFY: {extra.body.decode('gb2312')}")


async def stored_catalog_is(url: str, config: Config) -> None:
    expected = snapshot(Directory(config, config.gb28181.platforms[0]))
    db = Database(url)
    await db.start()
    try:
        async with asyncio.timeout(5):
            while await SubscriptionStore(db).catalog("meizhou") != expected:
                await asyncio.sleep(0.05)
    finally:
        await db.stop()


async def test_a_restart_with_a_changed_share_notifies_del_add_update_in_the_dialog(
    database_url: str,
) -> None:
    superior = Superior("udp")
    await superior.start()
    before = site("udp", superior.port, cameras=6, extra=SHARED)
    after = edited(site("udp", superior.port, cameras=6, extra=CHANGED), names={"cam0": "东门窗口"})
    try:
        async with service(database_url, before):
            live = await subscribe(superior, 600)
            lapsing = await subscribe(superior, 1)
            lapses_at = time.time() + 1
        await stored_catalog_is(database_url, before)
        await asyncio.sleep(max(0.0, lapses_at - time.time()) + 0.1)
        async with service(database_url, after):
            received = await notifies(superior, 3)
            await nothing_more(superior)  # and nothing in the lapsed subscription's dialog
        assert [(event, ids) for _, event, ids in received] == [
            ("DEL", [gb_id(before, "cam3")]),
            ("ADD", [gb_id(after, "cam4")]),
            ("UPDATE", [gb_id(after, "cam0")]),
        ]
        for msg, _, _ in received:
            assert_in_dialog(msg, live)
            assert msg.h("Call-ID") != lapsing.h("Call-ID")
        cseqs = [int(msg.h("CSeq").split()[0]) for msg, _, _ in received]
        assert cseqs == sorted(set(cseqs)) and received[0][0].h("CSeq").endswith("NOTIFY")
        update = received[2][0].body.decode("gb2312")
        assert "<Name>东门窗口</Name>" in update and "<Status>ON</Status>" in update
        assert "<Name>" not in received[0][0].body.decode("gb2312")  # a DEL names the channel only
        await stored_catalog_is(database_url, after)
        async with service(database_url, after):
            await nothing_more(superior)  # the same configuration again: nothing to tell
    finally:
        await superior.stop()


async def test_refresh_unsubscribe_and_a_disabled_camera(database_url: str) -> None:
    superior = Superior("udp")
    await superior.start()
    config = site("udp", superior.port, cameras=6, extra=SHARED)
    cam1 = gb_id(config, "cam1")
    try:
        async with service(database_url, config) as store:
            kept = await subscribe(superior, 60)
            in_dialog(superior, kept, 1200, 2)
            refreshed = await superior.next_response(kept.h("Call-ID"))
            assert refreshed.status == 200 and tag(refreshed.h("To")) == tag(kept.h("To"))
            ended = await subscribe(superior, 600)
            in_dialog(superior, ended, 0, 2)
            assert (await superior.next_response(ended.h("Call-ID"))).status == 200
            stored = await store.subscriptions("meizhou")
        assert [sub.call_id for sub in stored] == [kept.h("Call-ID")]
        assert 1190 < stored[0].expires_at - time.time() <= 1200
        async with service(database_url, edited(config, disabled=("cam1",))):
            ((off, event, ids),) = await notifies(superior, 1)
            assert (event, ids) == ("OFF", [cam1])
            assert_in_dialog(off, kept)
            await nothing_more(superior)
        async with service(database_url, config):
            ((on, event, ids),) = await notifies(superior, 1)
            assert (event, ids) == ("ON", [cam1])
            assert_in_dialog(on, kept)
            assert int(on.h("CSeq").split()[0]) > int(off.h("CSeq").split()[0])
    finally:
        await superior.stop()
