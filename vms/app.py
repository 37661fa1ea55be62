"""The FastAPI application factory and its lifespan.

``create_app(config)`` builds a fresh app from a configuration object (no
singleton at import time), so each test builds its own. The lifespan owns, in
start-up order, the store (the database, migrated on start, its identity and its
write health check: a store that cannot take writes stops the start-up), the cluster
membership and camera leases (with a ``cluster:`` section on PostgreSQL: it then says
where the relay pulls each camera from, :mod:`vms.cluster.media`), the audit
log, the access service (and the first administrators), the viewing recorder with
its local journal (replayed after each good health check), the alarm centre (a
listener of the stream manager; on PostgreSQL its alarms are shared with the other
instances) and the centres' alarm webhooks, the recordings'
index, the exports, the stream manager and the RTSP server (when enabled); shutdown
stops them in reverse order, so the last viewing sessions still reach the audit trail.

A write refused by the database (locked, disk full, read-only, not answering)
answers 503 with the reason, never 500.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from streams import StreamManager
from vms import middleware, problems
from vms.alarms import PICTURE_BUDGET, AlarmCentre
from vms.alarms_shared import SharedAlarms
from vms.audit import AuditError, AuditLog
from vms.auth import AuthService
from vms.bootstrap import bootstrap_admins
from vms.cluster import cluster_for
from vms.cluster.media import ClusterMedia, when_owned
from vms.cluster.peers import peer_login
from vms.config import Config
from vms.diagnosis import DiagnosisService
from vms.exports import ExportService
from vms.gb28181 import Cascade, MediaStarter
from vms.gb28181.ps_media import PsMedia, RecordedMedia
from vms.gb28181.subscription_store import SubscriptionStore
from vms.recordings import RecordingIndex
from vms.relay import build_manager
from vms.routes import alarms, audit, auth, cameras, dashboard, exports, health, live_ws, media, probes, users
from vms.routes import cluster as cluster_route
from vms.routes import diagnosis as diagnosis_route
from vms.routes import gb28181 as gb28181_route
from vms.routes import metrics as metrics_route
from vms.routes import playback as playback_route
from vms.routes import playback_ws as playback_ws_route
from vms.routes import recordings as recordings_route
from vms.routes import webhooks as webhooks_route
from vms.rtsp_access import rtsp_server
from vms.storage.database import Database
from vms.storage.faults import GONE, describe
from vms.storage.health import DatabaseHealth
from vms.storage.identity import leave_tombstone
from vms.storage.journal import Journal
from vms.storage.opening import JOURNAL_DIR, close_store, open_store
from vms.viewing import ViewingRecorder
from vms.webhooks import Webhooks

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


def create_app(
    config: Config, *, manager: StreamManager | None = None, gb28181_media: MediaStarter | None = None
) -> FastAPI:
    """``gb28181_media`` sends the superior platforms' live sessions (PS over RTP); by
    default the relay's own PS output (:class:`~vms.gb28181.ps_media.PsMedia`) does."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            store = await open_store(config)
            stack.push_async_callback(close_store, store)
            db, health = store.db, store.health
            relay = manager or build_manager(config)
            cluster = cluster_for(config, db)
            cluster_media = None
            if cluster is not None:
                cluster_media = ClusterMedia(cluster, relay, await peer_login(db))
                await cluster_media.prepare()  # every camera pulled from nowhere until owned
                await cluster.start()  # refuses an instance whose shared configuration differs
                stack.push_async_callback(cluster.stop)  # after the relay stopped pulling
            app.state.cluster = cluster
            health.on_fault(lambda reason: _tombstone(store.markers, store.store_id, reason))
            journal = Journal(config.server.data_dir.resolve() / JOURNAL_DIR)
            journal.open()
            audit_log = AuditLog(db, retention_days=config.audit.retention_days)
            audit_log.start()
            stack.push_async_callback(audit_log.stop)
            access = AuthService(db, audit_log, config.auth, config)
            stack.push_async_callback(access.refusals.stop)  # pending counts of refused logins
            await bootstrap_admins(access)
            viewing = ViewingRecorder(audit_log, journal=journal, health=health)
            await viewing.replay()  # what a previous run left in the journal
            health.on_healthy(viewing.replay)
            viewing.start()
            stack.push_async_callback(viewing.stop)
            alarm_centre = AlarmCentre(config, shared=shared_alarms(db))
            await alarm_centre.start()
            if alarm_centre.shared is not None:
                stack.push_async_callback(alarm_centre.shared.stop)
            webhooks = Webhooks(config, alarm_centre)
            webhooks.start()  # before the cameras start, so their first alarms are posted too
            stack.push_async_callback(webhooks.stop)
            relay.add_session_listener(viewing.whep_ended)
            relay.add_listener(when_owned(relay, alarm_centre.on_state))  # the owner's alarms only
            recordings = RecordingIndex(db, config, alarm_centre)
            if cluster_media is None:
                await recordings.recover()  # before any recorder opens a new segment
            else:  # each camera as this instance takes it over, before its recorder starts
                cluster_media.before_owning = lambda camera_id: recordings.recover({camera_id})
                relay.holds = cluster_media.owns  # a recorder that lost its lease writes no more
            relay.add_output_listener(recordings.on_output_event)
            recordings.start()
            stack.push_async_callback(recordings.stop)  # after the recorders closed their segments
            diagnosis = DiagnosisService(db, relay, alarm_centre, audit_log)
            relay.add_output_listener(diagnosis.on_output_event)
            await diagnosis.load_references()
            exporter = ExportService(db, config, recordings, audit_log)
            await exporter.start()
            stack.push_async_callback(exporter.stop)
            ps_media = PsMedia(relay, rtcp_timeout=config.gb28181.rtcp_timeout)
            cascade = Cascade(
                config,
                online=lambda camera_id: relay.stats(camera_id).state.available,
                recording=config_records(config),
                media=gb28181_media or ps_media,
                record=viewing.record_soon,
                recordings=RecordedMedia(config, recordings, rtcp_timeout=config.gb28181.rtcp_timeout),
                store=SubscriptionStore(db),
            )
            relay.add_listener(cascade.on_state)
            await relay.start()
            stack.push_async_callback(relay.stop)
            if cluster_media is not None:
                cluster_media.start()
                stack.push_async_callback(cluster_media.stop)  # before the relay stops
            stack.push_async_callback(ps_media.stop)  # before the manager stops its hubs
            if config.rtsp_server.enabled:
                rtsp = rtsp_server(config, relay, access, viewing, cluster_media)
                await rtsp.start()
                stack.push_async_callback(rtsp.stop)  # before the manager: its sessions end first
                app.state.rtsp = rtsp
            cascade.start()
            stack.push_async_callback(cascade.stop)  # before the relay stops, so sessions end first
            stack.push_async_callback(alarm_centre.stop)
            app.state.db, app.state.audit, app.state.auth = db, audit_log, access
            app.state.db_health = health
            app.state.viewing, app.state.manager = viewing, relay
            app.state.alarms, app.state.webhooks = alarm_centre, webhooks
            app.state.recordings = recordings
            app.state.exports = exporter
            app.state.diagnosis = diagnosis
            app.state.gb28181 = cascade
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
    app.add_exception_handler(DBAPIError, _database_refused)
    app.add_exception_handler(PoolTimeout, _database_refused)
    app.add_exception_handler(AuditError, _database_refused)
    app.add_exception_handler(ConnectionError, _database_refused)  # asyncpg's refused connect
    middleware.install(app)
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.include_router(probes.router, prefix=API_PREFIX)
    app.include_router(auth.router, prefix=API_PREFIX)
    app.include_router(users.router, prefix=API_PREFIX)
    app.include_router(cluster_route.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(cameras.router, prefix=API_PREFIX)
    app.include_router(media.router, prefix=API_PREFIX)
    app.include_router(dashboard.router, prefix=API_PREFIX)
    app.include_router(live_ws.router, prefix=API_PREFIX)
    app.include_router(alarms.router, prefix=API_PREFIX)
    app.include_router(diagnosis_route.router, prefix=API_PREFIX)
    app.include_router(webhooks_route.router, prefix=API_PREFIX)
    app.include_router(gb28181_route.router, prefix=API_PREFIX)
    app.include_router(recordings_route.router, prefix=API_PREFIX)
    app.include_router(exports.router, prefix=API_PREFIX)
    app.include_router(playback_route.router, prefix=API_PREFIX)
    app.include_router(playback_ws_route.router, prefix=API_PREFIX)
    static = dashboard_dir()
    if static is not None:
        app.mount("/", StaticFiles(directory=static, html=True), name="dashboard")
    return app


def shared_alarms(db: Database) -> SharedAlarms | None:
    """On PostgreSQL every instance shares the alarms; SQLite serves one process."""
    return SharedAlarms(db, picture_budget=PICTURE_BUDGET) if db.dialect == "postgresql" else None


def config_records(config: Config) -> Callable[[str], bool]:
    """Whether a camera is recorded, by its id (for the cascade's DeviceStatus)."""
    return lambda camera_id: config.records(config.camera(camera_id))


def _tombstone(markers: list[Path], store_id: str, reason: str) -> None:
    if reason == GONE:
        leave_tombstone(markers, store_id)


async def _database_refused(request: Request, exc: Exception) -> JSONResponse:
    """A request the database could not serve: 503 with the fault, never 500."""
    if isinstance(exc, IntegrityError):
        log.error("integrity error on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        return problems.problem_response(409, "the change conflicts with the stored data")
    cause = exc.__cause__ or exc if isinstance(exc, AuditError) else exc
    health: DatabaseHealth | None = getattr(request.app.state, "db_health", None)
    reason = health.explain(cause) if health is not None else describe(cause)
    log.warning("%s %s refused: %s", request.method, request.url.path, reason)
    detail = f"the database cannot serve this now: {reason}"
    return problems.problem_response(503, detail, {"Retry-After": "5"})
