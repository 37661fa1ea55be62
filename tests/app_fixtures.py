"""The real app on a real socket: uvicorn serving ``create_app(config)`` on 127.0.0.1.

Streaming answers (MJPEG) and WHEP need a real server rather than an in-memory
transport, and the lifespan (which starts and stops the relay) runs as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

from vms.app import create_app
from vms.config import Config
from vms.config_loader import parse_config


@dataclass
class RunningApp:
    app: FastAPI
    base_url: str
    http: httpx.AsyncClient

    @property
    def manager(self):  # type: ignore[no-untyped-def]
        return self.app.state.manager


@contextlib.asynccontextmanager
async def serve_app(config: Config | str) -> AsyncIterator[RunningApp]:
    """Start the app (a Config or YAML text) on a free port; stop it on exit."""
    if isinstance(config, str):
        config = parse_config(config, "test.yaml")
    app = create_app(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server stopped during start-up")
            await asyncio.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            yield RunningApp(app, base, http)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()
