"""The real app on a real socket: uvicorn serving ``create_app(config)`` on 127.0.0.1.

Streaming answers (MJPEG) and WHEP need a real server rather than an in-memory
transport, and the lifespan (database, migrations, first admins, relay) runs as
in production. Each app gets its own data directory (so its own SQLite file,
unless the config names a database URL) and its first admins' passwords from a
secrets file, so tests can log in.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
import yaml
from fastapi import FastAPI

from streams import IngestState, StreamManager
from vms.app import create_app
from vms.cli import server_config
from vms.config import Config
from vms.config_loader import parse_config

ADMIN_PASSWORD = "first-admin-password-for-tests"
USER_PASSWORD = "a-user-password-for-tests"


@dataclass
class RunningApp:
    app: FastAPI
    base_url: str
    http: httpx.AsyncClient
    """Anonymous: no cookie, no token."""
    _clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def manager(self) -> StreamManager:
        manager: StreamManager = self.app.state.manager
        return manager

    async def wait_online(self, *cameras: str, within: float = 15.0) -> None:
        """Wait until every camera is online; fail the test after ``within`` seconds."""
        deadline = time.monotonic() + within
        for camera in cameras:
            while self.manager.stats(camera).state is not IngestState.ONLINE:
                assert time.monotonic() < deadline, f"{camera} did not come online in {within} s"
                await asyncio.sleep(0.05)

    async def login(self, username: str, password: str = USER_PASSWORD) -> httpx.AsyncClient:
        """A client logged in as ``username``, sending its CSRF token on every request."""
        client = httpx.AsyncClient(base_url=self.base_url, timeout=10)
        self._clients.append(client)
        res = await client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert res.status_code == 200, res.text
        client.headers["X-CSRF-Token"] = res.json()["csrf_token"]
        return client

    async def admin(self, centre: str) -> httpx.AsyncClient:
        return await self.login(f"admin-{centre}", ADMIN_PASSWORD)

    async def user(self, centre: str, role: str, username: str | None = None) -> httpx.AsyncClient:
        """Create a user of ``centre`` with ``role`` (through the admin API) and log in as it."""
        username = username or f"{role}-{centre}"
        admin = await self.admin(centre)
        res = await admin.post(
            "/api/v1/users", json={"username": username, "role": role, "password": USER_PASSWORD}
        )
        assert res.status_code == 201, res.text
        return await self.login(username)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def free_port() -> int:
    """A TCP port of 127.0.0.1 free now, for a process or server that binds it itself."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening_socket() -> socket.socket:
    """A TCP socket bound to a free port of 127.0.0.1, for ``uvicorn.Server.serve(sockets=...)``.

    Made with ``IPPROTO_TCP``, as uvicorn makes its own from ``host`` and ``port`` in
    production: asyncio then sets ``TCP_NODELAY`` on the connections it accepts. With
    protocol 0 it does not, and every answer whose head and body go out in two writes
    waits about 40 ms for the client's delayed ACK.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


def prepared(config: Config | str, data_dir: Path) -> Config:
    """``config`` with its data in ``data_dir`` and known first-admin passwords."""
    if isinstance(config, str):
        config = parse_config(config, "test.yaml")
    secrets_file = data_dir / "admins.yaml"
    secrets_file.write_text(yaml.safe_dump({c.id: ADMIN_PASSWORD for c in config.centres}), encoding="utf-8")
    return config.model_copy(
        update={
            "server": config.server.model_copy(update={"data_dir": data_dir}),
            "auth": config.auth.model_copy(update={"bootstrap_secrets_file": secrets_file}),
        }
    )


@contextlib.asynccontextmanager
async def serve_app(config: Config | str, data_dir: Path | None = None) -> AsyncIterator[RunningApp]:
    """Start the app (a Config or YAML text) on a free port; stop it on exit. Its data goes to
    ``data_dir`` when given (a restart keeps it), else to a fresh temporary directory."""
    with tempfile.TemporaryDirectory(prefix="hallwatch-") as tmp:
        app = create_app(prepared(config, data_dir or Path(tmp)))
        sock = listening_socket()
        port = sock.getsockname()[1]
        server = uvicorn.Server(server_config(app, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
        running: RunningApp | None = None
        try:
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the server stopped during start-up")
                await asyncio.sleep(0.02)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                running = RunningApp(app, base, http)
                yield running
        finally:
            if running is not None:
                await running.aclose()
            server.should_exit = True
            await asyncio.wait_for(task, 15)
            sock.close()
