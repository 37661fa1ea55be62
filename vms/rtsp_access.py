"""Who may watch over RTSP: Digest credentials checked against API tokens, visibility, audit.

RTSP clients (VLC, FFmpeg, NVRs) authenticate with HTTP Digest, which never sends
the password: the server must hold ``HA1 = MD5(username:realm:password)`` to check
an answer. Passwords are stored only as argon2id hashes, and keeping an MD5 of each
password beside them would undo argon2 (an MD5 of a human password falls to a
dictionary at once). So the RTSP password is an **API token**: when a token is
created its HA1 under the fixed realm ``Hallwatch`` is stored with it (the token
itself, as before, only as SHA-256). A token carries 256 random bits, so its HA1
gives nothing to guess from; a leaked HA1 admits RTSP for that token only, and
only until it is revoked or expires. The user name is the token owner's. Tokens
created before this existed have no HA1: create a new one for RTSP.

Basic authentication is not offered: RTSP here runs without TLS.

Each answer is checked against the user's live tokens (at most 50); a wrong one
(unknown user, wrong token, disabled account) is a failed login like one over HTTP:
it counts toward the lockout of :mod:`vms.login_limiter` and is a ``login_failure``
row with protocol ``rtsp``, and while the user name or the address is locked out
(by RTSP or HTTP failures alike) even a right answer is refused, summed into
``login_locked`` rows (:mod:`vms.login_audit`). A request without credentials, the
challenge it gets and a stale nonce are no failure: every client starts that way. An
admitted client then needs the ``watch`` permission, and a camera outside its
centre's halls answers 404 as if it did not exist; both are ``view_refused`` rows,
summed like lockouts so that a recorder retrying a wrong camera every few seconds
does not fill the trail. A refusal that cannot be recorded is logged and refused
all the same. Every session is one ``view`` record with
protocol ``rtsp`` (bytes, duration, transport, why it ended), and a viewing that
could be recorded nowhere is not started (503).

In a cluster, another instance pulls a camera for its own viewers as the reserved
user :data:`~vms.cluster.peers.CLUSTER_USER` with the cluster's secret
(:mod:`vms.cluster.peers`). It is admitted only for a camera this instance owns
now (else 404: two instances that do not own a camera never pull it from each
other), takes no viewer seat and leaves no viewing record: its viewers are seated
and recorded on the instance they watch. A wrong answer under that name is a
failed login like any other, but a right one is never refused as locked out, so
nobody can lock the instances out of each other by guessing.

Event loop only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from streams import RtspServer, RtspSettings, StreamManager
from streams.rtsp_server import REALM, AccessRequest, RtspViewing, Verdict, ha1
from vms.access import Principal
from vms.audit import AuditError
from vms.auth_types import LoginLocked, aware, principal_of
from vms.cluster.peers import CLUSTER_USER
from vms.config import Config
from vms.login_audit import Target
from vms.storage.tables import ApiToken, User
from vms.viewing import RecordRefused, Viewer, ViewingRecorder

if TYPE_CHECKING:
    from vms.auth import AuthService
    from vms.cluster.media import ClusterMedia

log = logging.getLogger(__name__)


def rtsp_ha1(username: str, token: str) -> str:
    """The Digest HA1 stored with a new API token."""
    return ha1(username, token, REALM)


class RtspAccess:
    """The RTSP server's authorizer. See the module docstring."""

    def __init__(
        self, auth: AuthService, config: Config, viewing: ViewingRecorder, cluster: ClusterMedia | None
    ) -> None:
        self._auth = auth
        self._config = config
        self._viewing = viewing
        self._cluster = cluster

    async def __call__(self, request: AccessRequest) -> Verdict:
        credentials, peer = request.credentials, request.peer
        username = credentials.username.strip().lower()
        if credentials.realm != REALM or len(username) > 64:
            return Verdict(401)
        if username == CLUSTER_USER and self._cluster is not None:
            return await self._instance(request, self._cluster)
        try:
            await self._auth.refuse_if_locked(username, peer, protocol="rtsp")
        except LoginLocked:
            return Verdict(401, reason="locked out")
        except AuditError as err:
            log.warning("RTSP login from %s refused (locked out), not recorded: %s", peer, err)
            return Verdict(401, reason="locked out")
        user, hashes = await self._tokens(username)
        matched = any(credentials.matches(h) for h in hashes)
        if user is None or user.disabled or not matched:
            reason = "unknown user" if user is None else "wrong token" if not matched else "account disabled"
            try:
                if await self._auth.login_failed(username, user, peer, reason, protocol="rtsp"):
                    await self._auth.refuse_if_locked(username, peer, protocol="rtsp")
            except LoginLocked:
                return Verdict(401, reason="locked out")
            except AuditError as err:
                log.warning("RTSP login failure from %s not recorded: %s", peer, err)
            return Verdict(401)
        principal = principal_of(user, "token", None, self._auth.settings.viewer_permissions)
        if not principal.can("watch"):
            await self._refused(principal, request, f"the role {principal.role} may not watch")
            return Verdict(403)
        if not principal.may_see_camera(self._config, request.camera_id):
            await self._refused(principal, request, f"camera {request.camera_id[:64]} is outside the centre")
            return Verdict(404)
        try:
            self._viewing.check_recordable()
        except RecordRefused:
            return Verdict(503)

        def ended(viewing: RtspViewing) -> None:
            started = datetime.fromtimestamp(viewing.started, UTC)
            viewer = Viewer(principal, viewing.camera_id, "rtsp", viewing.peer, started)
            detail = {"end": viewing.reason, "transport": viewing.transport, "stream": viewing.stream}
            self._viewing.viewing_ended(viewer, viewing.bytes_sent, detail=detail)

        return Verdict(200, user=principal.username, owner=str(principal.user_id), on_end=ended)

    async def _instance(self, request: AccessRequest, cluster: ClusterMedia) -> Verdict:
        """Another instance of the cluster, pulling a camera this one owns."""
        if not request.credentials.matches(cluster.login.ha1):
            try:
                await self._auth.login_failed(
                    CLUSTER_USER, None, request.peer, "wrong cluster secret", protocol="rtsp"
                )
            except AuditError as err:
                log.warning("RTSP login failure from %s not recorded: %s", request.peer, err)
            return Verdict(401)
        if not cluster.owns(request.camera_id):
            return Verdict(404)
        return Verdict(200, user=CLUSTER_USER, seated=False)

    async def _refused(self, principal: Principal, request: AccessRequest, detail: str) -> None:
        try:
            await self._auth.refusals.refused(
                "view_refused",
                source_addr=request.peer,
                target=Target(principal.username, principal.centre_id),
                typed=principal.username,
                detail=detail,
                protocol="rtsp",
            )
        except AuditError as err:
            log.warning("RTSP viewer %s refused, not recorded: %s", principal.username, err)

    async def _tokens(self, username: str) -> tuple[User | None, list[str]]:
        """The user and the HA1 of each of their live tokens."""
        now = self._auth.now()
        async with self._auth.db.session() as s:
            user = await s.scalar(select(User).where(User.username == username))
            if user is None:
                return None, []
            tokens = await s.scalars(
                select(ApiToken).where(
                    ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None), ApiToken.rtsp_ha1.is_not(None)
                )
            )
            return user, [t.rtsp_ha1 for t in tokens if t.rtsp_ha1 and aware(t.expires_at) > now]


def rtsp_server(
    config: Config,
    manager: StreamManager,
    auth: AuthService,
    viewing: ViewingRecorder,
    cluster: ClusterMedia | None = None,
) -> RtspServer:
    """The RTSP server of ``config.rtsp_server``, not yet started; with ``cluster``, the
    other instances may pull the cameras this one owns."""
    section = config.rtsp_server
    settings = RtspSettings(
        host=str(section.bind), port=section.port, session_timeout=section.session_timeout, udp=section.udp
    )
    return RtspServer(manager, RtspAccess(auth, config, viewing, cluster), settings)
