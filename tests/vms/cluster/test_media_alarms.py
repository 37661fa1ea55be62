"""A camera's state reaches its alarms only while this instance pulls it from the camera
itself: a failing pull from the owning instance is no camera fault here."""

from __future__ import annotations

import asyncio
import time

from streams import OWN, CameraSpec, IngestPolicy, IngestState, SourceOptions, StreamManager
from tests.app_fixtures import free_port
from vms.cluster.media import when_owned
from vms.cluster.peers import PeerLogin
from vms.cluster.types import InstanceInfo

CAMERA = "cam-0"
Event = tuple[str, IngestState]


async def state_seen(events: list[Event], state: IngestState, within: float) -> None:
    deadline = time.monotonic() + within
    while (CAMERA, state) not in events:
        assert time.monotonic() < deadline, f"no {state} within {within} s: {events}"
        await asyncio.sleep(0.02)


async def test_a_failing_peer_pull_is_no_alarm_and_the_owner_s_states_are() -> None:
    spec = CameraSpec(
        id=CAMERA,
        source=SourceOptions(url=f"demo://{CAMERA}?size=160x90&gop=10", connect_timeout=1.0),
        policy=IngestPolicy(backoff_initial=0.3, backoff_max=1.0),
    )
    manager = StreamManager([spec])
    every: list[Event] = []
    owned: list[Event] = []
    manager.add_listener(lambda camera, _old, new, _error: every.append((camera, new)))
    manager.add_listener(when_owned(manager, lambda camera, _old, new, _error: owned.append((camera, new))))
    gone = InstanceInfo("a", "http://127.0.0.1:1", f"rtsp://127.0.0.1:{free_port()}")
    peer = PeerLogin("a secret").upstream(gone)
    assert peer is not None and PeerLogin("a secret").upstream(InstanceInfo("b", "http://b", None)) is None
    await manager.repoint(CAMERA, peer)
    await manager.start()
    try:
        subscription = manager.hub(CAMERA).subscribe()  # a viewer here: the peer pull opens
        await state_seen(every, IngestState.OFFLINE, within=10)
        assert owned == [], "the owner alone raises a camera's alarms"
        await manager.repoint(CAMERA, OWN)
        await state_seen(owned, IngestState.ONLINE, within=10)
        assert IngestState.OFFLINE not in [state for _, state in owned]
        subscription.close()
    finally:
        await manager.stop()
