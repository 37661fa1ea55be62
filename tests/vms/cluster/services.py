"""Whole service instances of one cluster, each its own ``python -m vms serve`` process,
over RTSP cameras that are GStreamer test servers, one per camera.

``Cameras`` counts the sessions each camera has, at the camera's side (established TCP
connections to its port, counted by the kernel), and ``Sampler`` records those counts
every 100 ms. ``Service`` starts an instance on free ports with a site of those cameras
and a ``cluster:`` section with test timings (recording into a shared directory when
given one), logs in, and counts the camera sessions of its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import psutil

from tests.app_fixtures import free_port
from tests.rtsp_fixtures import RtspTestServer

ROOT = Path(__file__).resolve().parents[3]
LEASE = 3.0
RENEW = LEASE / 3
PASSWORD = "cluster-admin-passw0rd"


class Cameras:
    """The cameras of the site: ``cam-<n>``, each a test server of its own."""

    def __init__(self, servers: list[RtspTestServer]) -> None:
        self.servers = {f"cam-{i}": server for i, server in enumerate(servers)}

    def ports(self) -> dict[int, str]:
        return {server.port: camera for camera, server in self.servers.items()}

    def sessions(self) -> dict[str, int]:
        """Camera id → established connections at the camera's side now."""
        ports = self.ports()
        counts = dict.fromkeys(self.servers, 0)
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr and conn.laddr.port in ports:
                counts[ports[conn.laddr.port]] += 1
        return counts

    def site(self) -> str:
        return "".join(
            f"  - {{id: {camera}, name: 摄像机 {camera}, hall: tax, url: '{server.url('cam')}', "
            "transport: tcp}\n"
            for camera, server in self.servers.items()
        )


class Sampler:
    """Every 100 ms, the sessions of every camera; ``doubles`` are the samples where one had two."""

    def __init__(self, cameras: Cameras) -> None:
        self._cameras = cameras
        self.samples: list[tuple[float, dict[str, int]]] = []

    @property
    def doubles(self) -> list[tuple[float, dict[str, int]]]:
        return [(at, counts) for at, counts in self.samples if max(counts.values()) > 1]

    def since(self, start: float) -> list[dict[str, int]]:
        return [counts for at, counts in self.samples if at >= start]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        async def loop() -> None:
            while True:
                counts = await asyncio.to_thread(self._cameras.sessions)
                self.samples.append((time.monotonic(), counts))
                await asyncio.sleep(0.1)

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Service:
    """One instance, started by :meth:`start`; :meth:`close` ends it however it is."""

    def __init__(
        self, instance_id: str, tmp: Path, db_url: str, cameras: Cameras, recordings: Path | None = None
    ) -> None:
        self.id = instance_id
        self._recordings = recordings
        self.port, self.rtsp_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._cameras = cameras
        self._log = tmp / f"{instance_id}.log"
        self._config = tmp / f"{instance_id}.yaml"
        self._config.write_text(self._site(tmp / instance_id, db_url), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=10)

    def _site(self, data: Path, db_url: str) -> str:
        return (
            f"server: {{host: 127.0.0.1, port: {self.port}, data_dir: '{data}', log_level: WARNING}}\n"
            f"database: {{url: '{db_url}'}}\n"
            f"rtsp_server: {{enabled: true, bind: 127.0.0.1, port: {self.rtsp_port}, udp: false}}\n"
            "webrtc: {ice_host_addresses: [127.0.0.1]}\n"
            "ingest: {connect_timeout: 2, stall_timeout: 2, backoff_initial: 0.3, backoff_max: 1}\n"
            "centres:\n  - {id: meizhou, name: 梅州市政务服务中心, halls: all}\n"
            "halls:\n  - {id: tax, name: 办税服务厅}\n"
            f"cameras:\n{self._cameras.site()}"
            f"cluster:\n  instance_id: {self.id}\n  http_url: {self.base_url}\n"
            f"  rtsp_url: rtsp://127.0.0.1:{self.rtsp_port}\n"
            f"  lease_timeout: {LEASE}\n  rebalance_interval: 1\n"
            + (
                ""
                if self._recordings is None
                else f"recording: {{record: true, directory: '{self._recordings}', segment_seconds: 2}}\n"
            )
        )

    def start(self) -> None:
        env = os.environ | {"HALLWATCH_ADMIN_PASSWORD_MEIZHOU": PASSWORD, "PYTHONPATH": str(ROOT)}
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vms", "serve", "--config", str(self._config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )

    def tail(self) -> str:
        return self._log.read_text(errors="replace")[-3000:] if self._log.exists() else ""

    async def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return (await self.http.get("/readyz")).status_code == 200
        return False

    async def until_ready(self, within: float = 40) -> None:
        deadline = time.monotonic() + within
        while not await self.ready():
            assert self.proc is not None and self.proc.poll() is None, f"{self.id} exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"{self.id} not ready in {within} s:\n{self.tail()}"
            await asyncio.sleep(0.2)

    async def login(self) -> None:
        answer = await self.http.post(
            "/api/v1/auth/login", json={"username": "admin-meizhou", "password": PASSWORD}
        )
        assert answer.status_code == 200, answer.text
        self.http.headers["X-CSRF-Token"] = answer.json()["csrf_token"]

    def pulls(self) -> set[str]:
        """The cameras this process has a session with now (its side of the connections)."""
        ports = self._cameras.ports()
        with contextlib.suppress(psutil.Error):
            return {
                ports[conn.raddr.port]
                for conn in psutil.Process(self.pid).net_connections(kind="tcp")
                if conn.raddr and conn.raddr.port in ports and conn.status == psutil.CONN_ESTABLISHED
            }
        return set()

    async def owned(self) -> set[str]:
        """The cameras this instance holds a lease on, as it says itself."""
        body = (await self.http.get("/api/v1/cluster")).json()
        return {camera for row in body["instances"] if row["this"] for camera in row["cameras"]}

    async def camera(self, camera_id: str) -> dict[str, object]:
        answer = await self.http.get(f"/api/v1/cameras/{camera_id}")
        assert answer.status_code == 200, answer.text
        live: dict[str, object] = answer.json()["live"]
        return live

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    async def close(self) -> None:
        await self.http.aclose()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)


async def until(check: Callable[[], object], what: str | Callable[[], str], within: float) -> float:
    """Wait until ``check()`` (a plain or async callable) is true; the seconds it took.
    ``what`` names it in the failure (a callable: what it says by then)."""
    start = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start >= within:
            raise AssertionError(f"{what() if callable(what) else what}: not within {within} s")
        await asyncio.sleep(0.1)


def state(cameras: Cameras, *services: Service) -> str:
    """Who pulls what, the sessions each camera sees and the end of each instance's log."""
    lines = [f"sessions {cameras.sessions()}"]
    for service in services:
        lines += [f"{service.id} pulls {sorted(service.pulls())}; its log ends:", service.tail()[-1000:]]
    return "\n".join(lines)
