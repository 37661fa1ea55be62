"""The FastAPI application factory and its lifespan.

``create_app(config)`` builds a fresh app from a configuration object (no
singleton at import time), so each test builds its own. The lifespan owns, in
start-up order, the database (migrated on start), the audit log, the access
service (and the first administrators), the viewing recorder, the alarm centre
(a listener of the stream manager) and the stream manager; shutdown stops them
in reverse order, so the last viewing sessions still reach the audit trail.
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
from vms import middleware, problems
from vms.alarms import AlarmCentre
from vms.audit import AuditLog
from vms.auth import AuthService
from vms.bootstrap import bootstrap_admins
from vms.config import Config
from vms.relay import build_manager
from vms.routes import alarms, audit, auth, cameras, dashboard, health, live_ws, media, probes, users
from vms.routes import metrics as metrics_route
from vms.storage import Database, database_url
from vms.viewing import ViewingRecorder

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
        async with contextlib.AsyncExitStack() as stack:
            db = Database(database_url(config))
            await db.start()
            stack.push_async_callback(db.stop)
            audit_log = AuditLog(db, retention_days=config.audit.retention_days)
            audit_log.start()
            stack.push_async_callback(audit_log.stop)
            access = AuthService(db, audit_log, config.auth, config)
            await bootstrap_admins(access)
            viewing = ViewingRecorder(audit_log)
            viewing.start()
            stack.push_async_callback(viewing.stop)
            alarm_centre = AlarmCentre(config)
            relay = manager or build_manager(config)
            relay.add_session_listener(viewing.whep_ended)
            relay.add_listener(alarm_centre.on_state)
            await relay.start()
            stack.push_async_callback(relay.stop)
            stack.push_async_callback(alarm_centre.stop)
            app.state.db, app.state.audit, app.state.auth = db, audit_log, access
            app.state.viewing, app.state.manager = viewing, relay
            app.state.alarms = alarm_centre
            log.info("relaying %d cameras", len(relay.camera_ids()))
            try:
                yield
            finally:
                app.state.manager = app.state.auth = None

    # No /docs or /redoc: their pages load scripts from a CDN, which the CSP forbids.
    app = FastAPI(title="Hallwatch", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config = config
    app.state.manager = None
    problems.install(app)
    middleware.install(app)
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.include_router(probes.router, prefix=API_PREFIX)
    app.include_router(auth.router, prefix=API_PREFIX)
    app.include_router(users.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(cameras.router, prefix=API_PREFIX)
    app.include_router(media.router, prefix=API_PREFIX)
    app.include_router(dashboard.router, prefix=API_PREFIX)
    app.include_router(live_ws.router, prefix=API_PREFIX)
    app.include_router(alarms.router, prefix=API_PREFIX)
    static = dashboard_dir()
    if static is not None:
        app.mount("/", StaticFiles(directory=static, html=True), name="dashboard")
    return app
