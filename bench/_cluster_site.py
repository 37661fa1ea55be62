"""The cluster benchmark's site: one PostgreSQL, one camera server, several instances, and a watch.

* :func:`start_database` runs a throwaway PostgreSQL cluster (``tests/db_fixtures.py``'s
  :class:`~tests.db_fixtures.PostgresServer`: ``initdb`` and ``pg_ctl`` in a temp dir, on
  127.0.0.1) and creates the instances' database; :func:`audit_ids` reads the ids of every
  audit row straight from it.
* :class:`Instance` is one ``python -m vms serve`` (:class:`~_fixtures.Service`) with its own
  ports, data directory and ``cluster:`` section (default lease timing), the RTSP re-serve on,
  every instance on the same database and the same cameras, plus a viewer process of its own
  (:class:`~_viewers.ViewerProcess`: viewers of that instance only); :func:`owners` asks one
  which instance pulls each camera.
* :class:`Watch` samples, every ``interval`` seconds in a thread, the sessions each camera has
  at the camera's side (the RTSP test server counts its own sessions per path) and the
  connections each instance holds to the camera server (psutil): who pulls what, seen from
  outside the instances.

Blocking code for the benchmark's main thread, except :class:`Watch`'s sampling thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from _fixtures import Service, free_port
from _viewers import ViewerProcess
from relay import rtsp_sessions

from tests.db_fixtures import PG_USER, PostgresServer, _pg_bin_dir
from tests.rtsp_fixtures import RtspTestServer

DATABASE = "hallwatch"


def start_database() -> tuple[PostgresServer, str]:
    """A started throwaway PostgreSQL and the SQLAlchemy URL of an empty database on it."""
    bin_dir = _pg_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        raise RuntimeError("PostgreSQL is not installed (no initdb/pg_ctl): run scripts/install-test-deps.sh")
    server = PostgresServer(bin_dir)
    try:
        server.init()
        server.start()
        url = asyncio.run(server.create_database(DATABASE))
    except BaseException:
        server.destroy()
        raise
    return server, url


def audit_ids(server: PostgresServer) -> set[int]:
    """The ids of every row of the audit trail, read from the database itself."""

    async def read() -> set[int]:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=server.port, user=PG_USER, database=DATABASE, timeout=10
        )
        try:
            return {row["id"] for row in await conn.fetch("SELECT id FROM audit_events")}
        finally:
            await conn.close()

    return asyncio.run(read())


@dataclass
class Instance:
    """One instance of the cluster: the service, its RTSP re-serve port and its viewer process."""

    name: str
    service: Service
    rtsp_port: int
    viewers: ViewerProcess
    pid: int | None = None

    @property
    def alive(self) -> bool:
        return self.service.proc is not None

    def http(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.service.base_url, headers=self.service.headers, timeout=timeout)

    def get(self, path: str, **params: Any) -> Any:
        with self.http() as http:
            response = http.get(path, params=params)
            response.raise_for_status()
            return response.json()

    def launch(self) -> None:
        self.service.launch()
        assert self.service.proc is not None
        self.pid = self.service.proc.pid

    def kill(self) -> None:
        self.service.kill()
        self.pid = None

    def connect_viewers(self) -> None:
        """Hand this instance's credentials to its viewer process (after it has logged in)."""
        token = self.service.headers.get("Authorization", "").removeprefix("Bearer ")
        self.viewers.call("headers", self.service.headers, timeout=60.0)
        self.viewers.call("mse_options", self.service.browser_headers, True, timeout=60.0)
        self.viewers.call("rtsp_options", self.rtsp_port, "admin-bench", token, timeout=60.0)


def make_instances(
    workdir: Path, count: int, cameras: int, rtsp: RtspTestServer, database_url: str, max_viewers: int
) -> list[Instance]:
    """``count`` instances on the same database and cameras, each with its own ports and data."""
    password = secrets.token_urlsafe(18)
    instances = []
    for index in range(count):
        name = f"hw-{index + 1}"
        port, rtsp_port = free_port(), free_port()
        extra = {
            "database": {"url": database_url},
            "analysis": {"enabled": False},
            "rtsp_server": {"enabled": True, "bind": "127.0.0.1", "port": rtsp_port},
            "cluster": {
                "instance_id": name,
                "http_url": f"http://127.0.0.1:{port}",
                "rtsp_url": f"rtsp://127.0.0.1:{rtsp_port}",
            },
        }
        service = Service(
            workdir, port, rtsp.port, cameras, max_viewers, extra=extra, label=name, password=password
        )
        viewers = ViewerProcess(service.base_url)
        instances.append(Instance(name, service, rtsp_port, viewers))
    return instances


def owners(instance: Instance) -> dict[str, str]:
    """Camera → the instance that pulls it, as ``GET /api/v1/cluster`` says."""
    listing = instance.get("/api/v1/cluster")
    return {camera: i["id"] for i in listing["instances"] for camera in i["cameras"]}


@dataclass(frozen=True)
class Sample:
    at: float
    """``time.monotonic()`` when taken."""
    cameras: dict[str, int]
    """Sessions per camera at the camera's side."""
    pulls: tuple[int | None, ...]
    """Connections to the camera server per instance (None: the instance is down)."""


@dataclass
class Watch:
    """Samples who pulls what every ``interval`` s in a thread (see the module docstring)."""

    rtsp: RtspTestServer
    instances: list[Instance]
    interval: float = 0.15
    samples: list[Sample] = field(default_factory=list)
    failures: int = 0
    """Samples the running camera server did not answer."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while sampling: hold it to restart the camera server between two samples."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cluster watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self.lock:
                try:
                    cameras = self.rtsp.sessions(timeout=2.0)
                except RuntimeError:
                    self.failures += self.rtsp.running
                    continue
                pulls = tuple(self._pulls(i) for i in self.instances)
                self.samples.append(Sample(time.monotonic(), cameras, pulls))

    def _pulls(self, instance: Instance) -> int | None:
        pid = instance.pid
        if pid is None:
            return None
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
        with contextlib.suppress(psutil.Error):
            return rtsp_sessions(proc, self.rtsp.port)
        return None

    def since(self, start: float) -> list[Sample]:
        return [s for s in list(self.samples) if s.at >= start]

    def wait_for(self, check: Callable[[Sample], bool], hold: float, timeout: float) -> float | None:
        """``time.monotonic()`` of the first sample from which ``check`` held for ``hold`` s (every
        sample since); None if that did not happen within ``timeout``."""
        start, deadline = time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            since: float | None = None
            for sample in self.since(start):
                since = (since or sample.at) if check(sample) else None
            if since is not None and time.monotonic() - since >= hold:
                return since
            time.sleep(self.interval)
        return None


def run_start(samples: list[Sample], check: Callable[[Sample], bool], at: float) -> float:
    """The start of the unbroken run of samples meeting ``check`` that holds at ``at``."""
    start = at
    for sample in reversed([s for s in samples if s.at <= at]):
        if not check(sample):
            break
        start = sample.at
    return start


def each_once(sample: Sample) -> bool:
    """Every camera has exactly one session at the camera's side."""
    return all(count == 1 for count in sample.cameras.values())


def balanced(sample: Sample) -> bool:
    """Every camera once, and the live instances' shares differ by one at most."""
    pulls = [p for p in sample.pulls if p is not None]
    return (
        each_once(sample)
        and bool(pulls)
        and max(pulls) - min(pulls) <= 1
        and sum(pulls) == len(sample.cameras)
    )
