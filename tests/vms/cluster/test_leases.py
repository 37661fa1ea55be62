"""Camera leases among Cluster objects on a real PostgreSQL: sharing, takeover, joining,
refusals. Each object has its own engine, as separate instances would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.vms.cluster.helpers import REBALANCE, RENEW, Members, Sampler, camera_ids, site_config, until
from vms.cluster import ConfigMismatch, InstanceIdTaken, InstanceInfo, cluster_for
from vms.config_loader import parse_config
from vms.storage import Database


async def test_three_instances_share_twelve_cameras_four_each(members: Members) -> None:
    async with Sampler(members).running():
        a = await members.start(site_config("a"))
        assert a.owned() == camera_ids()  # alone, it takes every camera at once
        await members.start(site_config("b"))
        await members.start(site_config("c"))
        await until(lambda: members.counts() == {"a": 4, "b": 4, "c": 4}, "4/4/4", within=10)
    owners = {cluster.owner_of("cam-00") for cluster in members.clusters.values()}
    assert len(owners) == 1 and None not in owners
    rows = (await members.leases()).values()
    assert sorted(owner or "" for owner, _ in rows) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert all(epoch >= 1 for _, epoch in rows)


async def test_instances_starting_together_share_the_first_take_without_handovers(members: Members) -> None:
    rows_before = await members.leases()
    assert rows_before == {}  # an empty cluster: the first to join waits one renewal for the others
    # Joining within a renewal of each other, as a deployment's instances do.
    await asyncio.gather(
        *(
            members.start(site_config(name), after)
            for name, after in zip("abc", (0, RENEW / 3, RENEW * 2 / 3), strict=True)
        )
    )
    await until(lambda: members.counts() == {"a": 4, "b": 4, "c": 4}, "4/4/4", within=2 * RENEW)
    # Each camera's lease was taken once (epoch 1): none was taken by one and handed on.
    assert {epoch for _, epoch in (await members.leases()).values()} == {1}, await members.leases()


async def test_a_clean_stop_is_taken_over_at_once(members: Members) -> None:
    for name in "ab":
        await members.start(site_config(name))
    await until(lambda: members.counts() == {"a": 6, "b": 6}, "6/6", within=10)
    async with Sampler(members).running():
        await members.stop("b")
        took = await until(lambda: members.counts() == {"a": 12}, "a holds all after b left", within=5)
    assert took < RENEW + 0.5, f"taken over after {took:.2f} s"


async def test_a_joining_instance_gets_its_share_in_bounded_moves_without_flapping(members: Members) -> None:
    changes: list[tuple[str, str, str | None]] = []

    def follow(name: str) -> None:
        members.clusters[name].on_change(
            lambda camera, owner, mine: changes.append((name, camera, owner.id if owner else None))
        )

    for name in "ab":
        await members.start(site_config(name))
        follow(name)
    await until(lambda: members.counts() == {"a": 6, "b": 6}, "6/6", within=10)
    changes.clear()
    async with Sampler(members).running():
        await members.start(site_config("c"))
        await until(lambda: members.counts() == {"a": 4, "b": 4, "c": 4}, "4/4/4", within=10)
        await asyncio.sleep(4 * REBALANCE + 2 * RENEW)
    for name in "ab":  # each hears every change of owner: four cameras moved to c, nothing else
        heard = [(camera, owner) for who, camera, owner in changes if who == name]
        assert {camera for camera, _ in heard} == members.clusters["c"].owned(), heard
        for camera in members.clusters["c"].owned():
            owners = [owner for moved, owner in heard if moved == camera]
            # its giver let it go first (no owner while it stopped pulling), then heard c
            assert owners in (["c"], [None, "c"]), (camera, owners)
    assert members.counts() == {"a": 4, "b": 4, "c": 4}


async def test_a_giver_slow_to_let_go_keeps_the_others_from_giving_the_same_receiver_more(
    members: Members,
) -> None:
    """Two instances each hold two cameras when a third joins: one camera moves, not two.
    Letting a camera go (stopping its pull and its recording) takes a while, and the other
    giver's rounds fall within it."""
    for name in "ab":
        await members.start(site_config(name, cameras=4))
    await until(lambda: members.counts() == {"a": 2, "b": 2}, "2/2", within=10)

    async def slowly(_cameras: list[str]) -> None:
        await asyncio.sleep(RENEW)

    for name in "ab":
        members.clusters[name].letting_go = slowly
    await members.start(site_config("c", cameras=4))
    await until(lambda: members.counts().get("c") == 1, "c got a camera", within=10)
    await asyncio.sleep(4 * REBALANCE + 3 * RENEW)  # every giver's rounds, through a letting go
    counts = members.counts()
    assert counts["c"] == 1 and sorted(counts.values()) == [1, 1, 2], counts


async def test_listeners_learn_each_owner(members: Members) -> None:
    a = await members.start(site_config("a", cameras=2))
    seen: dict[str, InstanceInfo | None] = {}
    a.on_change(lambda camera, owner, mine: seen.__setitem__(camera, owner))
    b = await members.start(site_config("b", cameras=2))
    await until(lambda: len(b.owned()) == 1, "one camera each", within=10)
    (moved,) = b.owned()
    assert seen == {moved: b.instance}
    assert a.owner_of(moved) == b.instance == InstanceInfo("b", "http://127.0.0.1:1/b", "rtsp://127.0.0.1:1")
    assert b.epoch(moved) == 2 and a.epoch(moved) is None


async def test_a_different_shared_configuration_is_refused_naming_the_section(members: Members) -> None:
    await members.start(site_config("a"))
    with pytest.raises(ConfigMismatch) as refused:
        await members.start(site_config("b", cameras=11))
    assert refused.value.sections == ["cameras"]
    assert "live instance(s) a in: cameras" in str(refused.value)
    with pytest.raises(ConfigMismatch) as refused:
        await members.start(site_config("b", extra="recording:\n  retention_days: 7\n", lease_timeout=3))
    assert refused.value.sections == ["recording", "cluster"]
    own = site_config("b", http_url="http://10.0.0.12:8000", extra="server:\n  port: 8001\n")
    await members.start(own)  # its own addresses and ports may differ


async def test_a_live_instance_id_is_refused(members: Members) -> None:
    await members.start(site_config("a"))
    with pytest.raises(InstanceIdTaken, match="'a'"):
        await members.start(site_config("a"))


async def test_without_postgresql_or_a_cluster_section_there_is_no_cluster(
    members: Members, tmp_path: Path
) -> None:
    sqlite = Database(f"sqlite+aiosqlite:///{tmp_path / 'hallwatch.db'}")
    assert cluster_for(site_config("a"), sqlite) is None
    postgres = Database(members.url)
    plain = parse_config("cameras: []\n", "test.yaml")
    assert cluster_for(plain, postgres) is None
    assert cluster_for(site_config("a"), postgres) is not None
