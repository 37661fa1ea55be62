"""A real app for the access routes: the auth and users routers over a real database,
real audit trail and real argon2, served by uvicorn on 127.0.0.1.

The media relay is left out (these tests need no camera), and argon2 runs with
light parameters so a test may log in dozens of times quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from argon2 import PasswordHasher
from fastapi import Depends, FastAPI

from tests.app_fixtures import listening_socket
from vms import problems, users
from vms.audit import AuditLog, AuditQuery, AuditRecord
from vms.auth import AuthService
from vms.config import Config
from vms.config_access import AuthSettings
from vms.config_loader import parse_config
from vms.deps import CurrentUser, require
from vms.passwords import Passwords
from vms.routes import auth as auth_routes
from vms.routes import users as users_routes
from vms.storage import Database

CONFIG = """
centres:
  - id: meizhou
    name: 梅州市政务服务中心
  - id: xingning
    name: 兴宁市政务服务中心
    halls: [tax]
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
    department: 市税务局
  - id: police
    name: 兴宁市公安局综合办证大厅
    department: 市公安局
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1
  - id: police-1
    name: 窗口区
    hall: police
    url: demo://police-1
"""

PASSWORD = "correct horse battery staple"


def light_passwords() -> Passwords:
    """Real argon2id with small parameters (tests only)."""
    return Passwords(PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1))


def make_config(**auth: Any) -> Config:
    config = parse_config(CONFIG, "test.yaml")
    return config.model_copy(update={"auth": AuthSettings(**auth)})


@dataclass
class Clock:
    """Wall time plus an offset the test advances."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class AccessApp:
    app: FastAPI
    base_url: str
    http: httpx.AsyncClient
    auth: AuthService
    audit: AuditLog
    clock: Clock

    def client(self, local_address: str = "127.0.0.1") -> httpx.AsyncClient:
        """Another client (own cookies), optionally from another loopback address."""
        transport = httpx.AsyncHTTPTransport(local_address=local_address)
        return httpx.AsyncClient(base_url=self.base_url, timeout=10, transport=transport)

    async def add_user(self, username: str, role: str = "viewer", centre: str = "meizhou") -> int:
        info = await users.create_user(
            self.auth, None, username=username, centre_id=centre, role=role, password=PASSWORD
        )
        return info.id

    async def events(self, action: str | None = None) -> list[AuditRecord]:
        return await self.audit.query(AuditQuery(action=action, limit=None))


async def login(http: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    """Log in (the client keeps the cookie); returns the CSRF token."""
    answer = await http.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["csrf_token"]
    return token


def _probe_routes(app: FastAPI) -> None:
    """Two extra routes to exercise the dependencies: any user, and a permission."""

    @app.post("/api/v1/test/echo")
    async def echo(principal: CurrentUser) -> dict[str, str]:
        return {"username": principal.username, "via": principal.via}

    @app.get("/api/v1/test/snapshot", dependencies=[Depends(require("snapshot"))])
    async def snapshot() -> dict[str, bool]:
        return {"ok": True}


@contextlib.asynccontextmanager
async def serve_access(db: Database, config: Config | None = None) -> AsyncIterator[AccessApp]:
    config = config or make_config()
    clock = Clock()
    audit = AuditLog(db, retention_days=config.audit.retention_days)
    auth = AuthService(db, audit, config.auth, config, passwords=light_passwords(), clock=clock)
    app = FastAPI()
    app.state.config, app.state.db, app.state.audit, app.state.auth = config, db, audit, auth
    problems.install(app)
    app.include_router(auth_routes.router, prefix="/api/v1")
    app.include_router(users_routes.router, prefix="/api/v1")
    _probe_routes(app)
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the server stopped during start-up")
                await asyncio.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            yield AccessApp(app, base, http, auth, audit, clock)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()
