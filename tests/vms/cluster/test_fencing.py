"""A member in its own process, killed or frozen: its cameras are taken over, and a
frozen member drops its leases when it wakes, before renewing anything (fencing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.vms.cluster.helpers import LEASE, RENEW, Members, Sampler, camera_ids, site, site_config, until

ROOT = Path(__file__).resolve().parents[3]


class Process:
    """A member process and the events it printed, read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def claimed(self) -> set[str]:
        """The cameras it last said it holds."""
        held: set[str] = set()
        for event in self.events:
            if "camera" in event:
                (held.add if event["mine"] else held.discard)(event["camera"])
        return held

    def signal(self, number: int) -> None:
        os.kill(self.proc.pid, number)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await self._reader


@contextlib.asynccontextmanager
async def member(tmp_path: Path, url: str, instance_id: str) -> AsyncIterator[Process]:
    config = tmp_path / f"{instance_id}.yaml"
    config.write_text(site(instance_id), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.vms.cluster.member",
        str(config),
        url,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    process = Process(proc)
    try:
        await until(lambda: any("started" in e for e in process.events), "the member started", within=20)
        yield process
    finally:
        await process.close()


async def test_a_killed_owner_is_taken_over_within_the_lease_timeout(
    members: Members, tmp_path: Path
) -> None:
    async with member(tmp_path, members.url, "p") as p:
        b = await members.start(site_config("b"))
        await until(lambda: len(p.claimed()) == 6 and len(b.owned()) == 6, "6/6", within=10)
        async with Sampler(members, p.claimed).running():
            p.signal(signal.SIGKILL)
            p.events += [{"camera": camera, "mine": False} for camera in p.claimed()]  # it died with them
            took = await until(lambda: b.owned() == camera_ids(), "b holds all", within=10)
    assert took < LEASE + RENEW + 0.5, f"taken over after {took:.2f} s"


async def test_a_frozen_owner_drops_its_leases_on_waking_before_renewing(
    members: Members, tmp_path: Path
) -> None:
    async with member(tmp_path, members.url, "p") as p:
        await until(lambda: p.claimed() == camera_ids(), "p holds all", within=10)
        epochs = {e["camera"]: e["epoch"] for e in p.events if e.get("mine")}
        p.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        b = await members.start(site_config("b"))
        assert b.owned() == set()  # p's leases still run
        await until(lambda: b.owned() == camera_ids(), "b took every camera", within=10)
        assert time.monotonic() - frozen_at >= LEASE * 0.9
        before = len(p.events)
        async with Sampler(members).running() as sampler:
            p.signal(signal.SIGCONT)
            await until(lambda: not p.claimed(), "p dropped its cameras", within=5)
            woke = p.events[before:]
            fenced = next(i for i, e in enumerate(woke) if "no lease renewal" in e.get("log", ""))
            assert all("log" in e for e in woke[:fenced]), woke[:fenced]  # no renewal came first
            assert [e["mine"] for e in woke[fenced + 1 : fenced + 13]] == [False] * 12
            await asyncio.sleep(2 * RENEW)
            sampler.sample()
            assert not p.claimed() & b.owned()
        leases = await members.leases()
        for camera in camera_ids():
            owner, epoch = leases[camera]
            if owner == "b":
                assert epoch > epochs[camera]
