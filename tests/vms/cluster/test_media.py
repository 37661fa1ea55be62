"""The cluster drives the media plane, with whole service processes on one PostgreSQL and
RTSP cameras whose sessions are counted at the camera's side: each camera pulled once
across the instances, spread evenly, taken over after a kill -9, never pulled by an
owner woken from SIGSTOP, watched through an instance that does not own it (MSE and
WHEP, the WHEP session ended through a third instance), rebalanced when an instance
joins, and through a restart of PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import connect
from websockets.typing import Origin

from tests.db_fixtures import PostgresServer
from tests.rtsp_fixtures import RtspServerFactory
from tests.vms.cluster.services import LEASE, RENEW, Cameras, Sampler, Service, state, until
from tests.vms.test_live_ws import receive_mse
from tests.whep_client import WhepClient
from vms.deps import SESSION_COOKIE

pytestmark = pytest.mark.rtsp

Start = Callable[..., Awaitable[list[Service]]]
CAMERAS = {f"cam-{i}" for i in range(4)}


@pytest.fixture
def cameras(rtsp_server: RtspServerFactory) -> Cameras:
    return Cameras([rtsp_server({"cam": "160x90@10,100k,gop=10"}) for _ in range(4)])


@pytest.fixture
async def start(pg_url: str, cameras: Cameras, tmp_path: Path) -> AsyncIterator[Start]:
    started: list[Service] = []

    async def instances(*ids: str, recordings: Path | None = None) -> list[Service]:
        services = [Service(instance_id, tmp_path, pg_url, cameras, recordings) for instance_id in ids]
        started.extend(services)
        for service in services:
            service.start()
        for service in services:
            await service.until_ready()
            await service.login()
        return services

    try:
        yield instances
    finally:
        for service in started:
            await service.close()


def once_each(cameras: Cameras) -> bool:
    return all(count == 1 for count in cameras.sessions().values())


async def test_each_camera_pulled_once_spread_rebalanced_on_join_and_taken_over_after_kill(
    start: Start, cameras: Cameras
) -> None:
    a, b = await start("a", "b")
    async with Sampler(cameras).running() as sampler:
        await until(lambda: once_each(cameras) and len(a.pulls()) == 2, "pulled once each, 2/2", within=20)
        steady = time.monotonic()
        await asyncio.sleep(3)
        window = sampler.since(steady)
        assert len(window) >= 20 and all(counts == dict.fromkeys(CAMERAS, 1) for counts in window), window
        assert len(a.pulls()) == len(b.pulls()) == 2 and a.pulls() | b.pulls() == CAMERAS

        (c,) = await start("c")
        await until(
            lambda: len(c.pulls()) == 1 and once_each(cameras),
            lambda: f"c pulls its share\n{state(cameras, a, b, c)}\n",
            within=15,
        )
        assert sorted(len(s.pulls()) for s in (a, b, c)) == [1, 1, 2]

        lost = a.pulls()
        a.signal(signal.SIGKILL)
        killed = time.monotonic()
        took = await until(
            lambda: (b.pulls() | c.pulls()) >= lost and once_each(cameras), "a's cameras taken over", 15
        )
        assert took < LEASE + RENEW + 3, f"a's cameras pulled again after {took:.1f} s"
        assert sampler.since(killed)
    assert sampler.doubles == [], sampler.doubles[:3]


async def test_an_owner_woken_from_sigstop_does_not_pull_or_record_what_it_lost(
    start: Start, cameras: Cameras, pg_url: str, tmp_path: Path
) -> None:
    shared = tmp_path / "recordings"  # one directory for both, as a shared mount would be
    a, b = await start("a", "b", recordings=shared)
    await until(lambda: once_each(cameras) and len(a.pulls()) == 2, "2/2", within=20)
    a.signal(signal.SIGSTOP)
    await until(lambda: b.pulls() == CAMERAS, "b pulls every camera", within=LEASE + 8)
    assert max(cameras.sessions().values()) == 2, "the frozen owner's connections are still open"
    async with Sampler(cameras).running() as sampler:
        a.signal(signal.SIGCONT)
        await until(lambda: once_each(cameras), "a closed the sessions it held when frozen", within=2)
        awake = time.monotonic()
        await asyncio.sleep(3.5)  # through the rebalance that gives a its share again
        await until(lambda: once_each(cameras) and len(a.pulls()) == 2, "2/2 again", within=5)
    after = sampler.since(awake)
    assert len(after) >= 20 and all(max(counts.values()) <= 1 for counts in after), after
    await asyncio.sleep(3)  # the segments open at the hand-back are closed and indexed
    rows = await _check_recordings(pg_url, shared)
    # Either instance plays back what either recorded: the index and the files are shared.
    recovered = next(row for row in rows if row.recovered)
    start = datetime.fromtimestamp(recovered.start_ms / 1000, UTC).isoformat()
    for service in (a, b):
        answer = await service.http.get(
            f"/api/v1/cameras/{recovered.camera_id}/playback.mp4", params={"start": start, "duration": 4}
        )
        assert answer.status_code == 200, answer.text
        with av.open(io.BytesIO(answer.content)) as container:
            assert sum(1 for _ in container.decode(video=0)) >= 3, service.id


async def _check_recordings(db_url: str, root: Path) -> list[Row[Any]]:
    """Every camera's indexed segments follow one another without overlap, and each file is
    exactly what was indexed: the frozen owner wrote nothing into what b recovered."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT camera_id, start_ms, end_ms, path, bytes, sha256, recovered "
                        "FROM recording_segments ORDER BY camera_id, start_ms"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert {row.camera_id for row in rows} == CAMERAS
    assert any(row.recovered for row in rows), "b recovered the segments the frozen owner left open"
    for before, after in itertools.pairwise(rows):
        if before.camera_id == after.camera_id:
            assert after.start_ms >= before.end_ms - 1, (before, after)
    for row in rows:
        data = (root / row.path).read_bytes()
        assert len(data) == row.bytes and hashlib.sha256(data).hexdigest() == row.sha256, row
    return list(rows)


async def test_viewers_of_another_instance_s_camera_and_a_whep_delete_passed_to_its_holder(
    start: Start, cameras: Cameras
) -> None:
    a, b, c = await start("a", "b", "c")
    await until(
        lambda: once_each(cameras) and sorted(len(s.pulls()) for s in (a, b, c)) == [1, 1, 2], "2/1/1", 20
    )
    camera = sorted(await a.owned())[0]
    cookie = f"{SESSION_COOKIE}={b.http.cookies[SESSION_COOKIE]}"
    ws_url = f"ws://127.0.0.1:{b.port}/api/v1/cameras/{camera}/mse.ws"
    whep = WhepClient(decode=False)
    try:
        async with connect(
            ws_url, origin=Origin(b.base_url), additional_headers={"Cookie": cookie}, open_timeout=5
        ) as ws:
            capture = await receive_mse(ws, 3, within=15)
            assert capture.init is not None and capture.init["codec"].startswith("avc1.")
            await whep.connect_http(b.http, f"/api/v1/cameras/{camera}/whep")
            assert await whep.wait_until(lambda: len(whep.units) >= 10, within=15)
            live = await b.camera(camera)
            assert (live["upstream"], live["peer"], live["webrtc_viewers"]) == ("peer", "a", 1)
            assert cameras.sessions()[camera] == 1, "the owner pulls it once for both instances"
            assert whep.location is not None
            location = httpx.URL(whep.location).path  # the session URL on b, asked of c
            assert location.startswith("/api/v1/whep/b~")
            assert (await c.http.delete(location)).status_code == 200
            await until(_no_webrtc_viewer(b, camera), "the session ended on b", within=5)
            assert (await c.http.delete(location)).status_code == 404
            assert (await a.http.delete(location)).status_code == 404
            assert (await c.http.delete("/api/v1/whep/gone~abc")).status_code == 404
    finally:
        await whep.close()


def _no_webrtc_viewer(service: Service, camera: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await service.camera(camera))["webrtc_viewers"] == 0

    return check


async def test_a_postgresql_restart_makes_instances_unready_then_they_recover_alone(
    start: Start, cameras: Cameras, postgres_server: PostgresServer
) -> None:
    a, b = await start("a", "b")
    await until(lambda: once_each(cameras), "each camera pulled", within=20)
    readiness: dict[str, list[bool]] = {"a": [], "b": []}

    async def probe() -> None:
        while True:
            for service in (a, b):
                readiness[service.id].append(await service.ready())
            await asyncio.sleep(0.1)

    async with Sampler(cameras).running() as sampler:
        prober = asyncio.create_task(probe())
        try:
            await asyncio.to_thread(postgres_server.stop)
            await asyncio.sleep(LEASE + 1)  # past the fencing: every instance drops its cameras
            dropped = sampler.since(time.monotonic() - 1)
            await asyncio.to_thread(postgres_server.start)
            await until(lambda: all(r and r[-1] for r in readiness.values()), "both ready again", 30)
            await until(lambda: once_each(cameras), "each camera pulled again", within=15)
        finally:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
    assert all(False in seen for seen in readiness.values()), "an instance stayed ready without its database"
    assert dropped and all(sum(counts.values()) == 0 for counts in dropped), dropped
    assert sampler.doubles == [], sampler.doubles[:3]
