"""The FastAPI application factory and its lifespan.

``create_app(config)`` builds a fresh app from a configuration object (no
singleton at import time), so each test builds its own. The lifespan owns the
stream manager: it starts every ingest on start-up and stops every viewer,
output and ingest on shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from streams import StreamManager
from vms import problems
from vms.config import Config
from vms.relay import build_manager
from vms.routes import cameras, health, media

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def dashboard_dir() -> Path | None:
    """The dashboard's static files: ``$HALLWATCH_DASHBOARD``, else beside the package (a checkout)."""
    configured = os.environ.get("HALLWATCH_DASHBOARD")
    here = Path(configured) if configured else Path(str(resources.files("vms"))).parent / "dashboard"
    if (here / "index.html").is_file():
        return here
    log.warning("no dashboard at %s: serving the API only", here)
    return None


def create_app(config: Config, *, manager: StreamManager | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        relay = manager or build_manager(config)
        await relay.start()
        app.state.manager = relay
        log.info("relaying %d cameras", len(relay.camera_ids()))
        try:
            yield
        finally:
            app.state.manager = None
            await relay.stop()

    app = FastAPI(title="Hallwatch", version="0.1.0", lifespan=lifespan)
    app.state.config = config
    app.state.manager = None
    problems.install(app)
    app.include_router(health.router)
    app.include_router(cameras.router, prefix=API_PREFIX)
    app.include_router(media.router, prefix=API_PREFIX)
    static = dashboard_dir()
    if static is not None:
        app.mount("/", StaticFiles(directory=static, html=True), name="dashboard")
    return app
