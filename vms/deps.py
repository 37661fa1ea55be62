"""Dependency aliases shared by the routers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from streams import StreamManager
from vms.access import Permission, Principal
from vms.auth import AuthService
from vms.auth_types import csrf_matches
from vms.cluster import Cluster
from vms.config import Camera, Config
from vms.problems import Problem


async def get_config(request: Request) -> Config:
    config: Config = request.app.state.config
    return config


async def get_manager(request: Request) -> StreamManager:
    manager: StreamManager | None = getattr(request.app.state, "manager", None)
    if manager is None:
        raise Problem(503, "the relay is not running")
    return manager


async def get_cluster(request: Request) -> Cluster | None:
    """The cluster this instance is part of; None when it owns every camera alone."""
    cluster: Cluster | None = getattr(request.app.state, "cluster", None)
    return cluster


ConfigDep = Annotated[Config, Depends(get_config)]
ManagerDep = Annotated[StreamManager, Depends(get_manager)]
ClusterDep = Annotated[Cluster | None, Depends(get_cluster)]


# -- access control ------------------------------------------------------------

SESSION_COOKIE = "hallwatch_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hallwatch"'}


def _auth_of(conn: HTTPConnection) -> AuthService:
    auth: AuthService | None = getattr(conn.app.state, "auth", None)
    if auth is None:
        raise Problem(503, "access control is not running")
    return auth


async def get_auth(conn: HTTPConnection) -> AuthService:
    # async: a plain function dependency would run in a worker thread.
    return _auth_of(conn)


AuthDep = Annotated[AuthService, Depends(get_auth)]


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Problem(401, "the Authorization header must be 'Bearer <token>'", _CHALLENGE)
    return value.strip()


async def optional_user(conn: HTTPConnection) -> Principal | None:
    """The caller, or ``None`` when no credential was sent; a bad credential is 401.

    A bearer token wins over a cookie. A cookie-authenticated POST, PUT, PATCH or
    DELETE must carry the session's CSRF token in ``X-CSRF-Token`` (403 otherwise);
    bearer requests are exempt (browsers never add that header on their own).
    """
    token = _bearer(conn)
    if token is not None:
        principal = await _auth_of(conn).authenticate_token(token)
        if principal is None:
            raise Problem(401, "the API token is unknown, expired or revoked", _CHALLENGE)
        return principal
    cookie = conn.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    principal = await _auth_of(conn).authenticate_session(cookie)
    if principal is None:
        raise Problem(401, "your login session has ended; log in again", _CHALLENGE)
    method = conn.scope.get("method", "GET")
    if method not in SAFE_METHODS and not csrf_matches(principal.csrf_token, conn.headers.get(CSRF_HEADER)):
        raise Problem(403, f"missing or wrong {CSRF_HEADER} header (send the csrf_token from the login)")
    return principal


async def current_user(principal: Annotated[Principal | None, Depends(optional_user)]) -> Principal:
    """The authenticated caller; 401 without a valid session cookie or API token."""
    if principal is None:
        raise Problem(401, "log in, or send 'Authorization: Bearer <API token>'", _CHALLENGE)
    return principal


OptionalUser = Annotated[Principal | None, Depends(optional_user)]
CurrentUser = Annotated[Principal, Depends(current_user)]


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency giving the caller when their role grants ``permission``; 403 otherwise."""

    async def permitted(principal: CurrentUser) -> Principal:
        if not principal.can(permission):
            raise Problem(403, f"the role {principal.role} may not do this (needs {permission!r})")
        return principal

    permitted.__name__ = f"require_{permission}"
    return permitted


AdminUser = Annotated[Principal, Depends(require("admin"))]


WatchUser = Annotated[Principal, Depends(require("watch"))]
SnapshotUser = Annotated[Principal, Depends(require("snapshot"))]
PlaybackUser = Annotated[Principal, Depends(require("playback"))]


def visible_camera(config: Config, principal: Principal, camera_id: str) -> Camera:
    """The camera, if it lies in a hall the caller's centre may see.

    A camera outside the caller's centre answers 404, exactly like one that does
    not exist: people of one centre do not learn which cameras another centre has.
    """
    if not principal.may_see_camera(config, camera_id):
        raise Problem(404, f"no camera {camera_id!r}")
    return config.camera(camera_id)
