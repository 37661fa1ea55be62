"""Authentication: logins with lockout, browser sessions and API tokens.

``AuthService`` turns credentials into a :class:`~vms.access.Principal`:

- a login checks the password (argon2id, :mod:`vms.passwords`) behind the
  per-user and per-address lockout of :mod:`vms.login_limiter` (shared by every
  instance through :mod:`vms.shared_limiter` on PostgreSQL), then stores a
  session whose cookie token is random and whose row holds only the token's
  SHA-256, with a CSRF token, an absolute expiry and an idle expiry;
- an API token (``hw_...``) is stored as its SHA-256 too; expired, revoked, or
  belonging to a disabled user, it is refused on the very next request (no cache).

Every login, lockout, logout, password change and token change goes to the audit
trail; a change and its record are written in one transaction. A password change
(:meth:`AuthService.change_password`) needs the current password, ends every login
session of the user and gives the changing browser a fresh one. User management
(including an administrator's reset, which also revokes API tokens) lives in
:mod:`vms.users`; the errors and results are in :mod:`vms.auth_types`. Runs on the
event loop; argon2 runs in bounded worker threads.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from vms.access import Principal
from vms.auth_types import (
    Conflict,
    Invalid,
    LoginLocked,
    LoginRefused,
    LoginResult,
    NotFound,
    TokenInfo,
    WrongPassword,
    aware,
    digest,
    principal_of,
)
from vms.config import Config
from vms.config_access import AuthSettings
from vms.login_audit import RefusalAudit, Target
from vms.login_limiter import LoginLimiter
from vms.passwords import MAX_LENGTH, Passwords, password_problem
from vms.rtsp_access import rtsp_ha1
from vms.shared_limiter import login_limiter
from vms.storage import Database
from vms.storage.tables import ApiToken, User, WebSession

if TYPE_CHECKING:
    from vms.audit import AuditLog

log = logging.getLogger(__name__)

TOKEN_PREFIX = "hw_"
MAX_TOKENS_PER_USER = 50
"""Tokens neither revoked nor expired that one user may hold."""
TOUCH_INTERVAL = 60.0
"""At most one write of ``last_seen_at``/``last_used_at`` per credential per minute."""
_MAX_CREDENTIAL_LENGTH = 128


class AuthService:
    """Logins, sessions and API tokens over :class:`~vms.storage.Database`."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        settings: AuthSettings,
        config: Config,
        *,
        passwords: Passwords | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.audit = audit
        self.settings = settings
        self.config = config
        self.passwords = passwords or Passwords()
        self.limiter: LoginLimiter = login_limiter(db, settings)
        self.refusals = RefusalAudit(audit, interval=settings.login_audit_interval)
        """Sums the audit rows of logins refused during a lockout; stopped with the app."""
        self._clock = clock or (lambda: datetime.now(UTC))
        self._touch = timedelta(seconds=min(TOUCH_INTERVAL, settings.session_idle_timeout / 10))

    def now(self) -> datetime:
        return self._clock()

    def centre_name(self, centre_id: str) -> str:
        try:
            return self.config.centre(centre_id).name
        except KeyError:
            return centre_id

    # -- logins ---------------------------------------------------------------

    async def login(self, username: str, password: str, source_addr: str | None) -> LoginResult:
        """Check the credentials and open a session.

        Raises :class:`LoginLocked` while the user or address is locked out (even for
        the right password) and :class:`LoginRefused` for any wrong credential.
        """
        await self.refuse_if_locked(username, source_addr)
        user = await self._account(username)
        if user is None:
            await self.passwords.verify_dummy()
            ok, reason = False, "unknown user"
        else:
            ok = await self.passwords.verify(user.password_hash, password)
            reason = "wrong password" if not ok else "account disabled" if user.disabled else ""
            ok = ok and not user.disabled
        # Checks queued behind the argon2 slots while a lockout began get the lockout's
        # answer whatever their outcome, so a burst learns nothing past the limit; so does
        # a failure that finds the lockout begun meanwhile (by another instance, or while
        # the count went to the shared database).
        await self.refuse_if_locked(username, source_addr)
        if not ok:
            if await self.login_failed(username, user, source_addr, reason):
                await self.refuse_if_locked(username, source_addr)
            raise LoginRefused("wrong username or password")
        assert user is not None
        await self.limiter.arecord_success(username)
        if self.passwords.needs_rehash(user.password_hash) and len(password) <= MAX_LENGTH:
            await self._store_hash(user.id, await self.passwords.hash(password), changed=False)
        result = await self._open_session(user, source_addr)
        await self.audit.record("login_success", principal=result.principal, source_addr=source_addr)
        return result

    async def login_failed(
        self,
        username: str,
        user: User | None,
        source_addr: str | None,
        reason: str,
        *,
        protocol: str | None = None,
    ) -> bool:
        """Count a wrong credential toward the lockout and record it (``protocol``: none for a
        login over HTTP, ``rtsp`` for an RTSP Digest answer); true, with nothing counted or
        recorded, when a lockout had begun meanwhile (the caller refuses it as locked).
        Raises :class:`AuditError` when it cannot be recorded (it is counted all the same)."""
        if await self.limiter.arecord_failure(username, source_addr, known_user=user is not None):
            return True
        await self.audit.record(
            "login_failure",
            username=username[:64],
            centre_id=user.centre_id if user is not None else None,
            source_addr=source_addr,
            protocol=protocol,
            detail=reason,
        )
        return False

    async def refuse_if_locked(
        self, username: str, source_addr: str | None, *, protocol: str | None = None
    ) -> None:
        """Raise :class:`LoginLocked` while the username or the address is locked out, the
        refusal summed into the audit trail (:mod:`vms.login_audit`)."""
        wait = await self.limiter.aretry_after(username, source_addr)
        if wait > 0:
            # Attributed to the targeted account's centre, and summed per address and target.
            user = await self._account(username)
            await self.refusals.refused(
                "login_locked",
                source_addr=source_addr,
                target=Target(user.username, user.centre_id) if user is not None else None,
                typed=username[:64],
                detail=f"{wait:.0f} s left",
                protocol=protocol,
            )
            raise LoginLocked(wait)

    async def _account(self, typed: str) -> User | None:
        """The account a login names, if any."""
        return await self._user_by_name(typed.strip().lower()) if len(typed) <= 64 else None

    async def _open_session(self, user: User, source_addr: str | None) -> LoginResult:
        async with self.db.session() as s, s.begin():
            return await self._add_session(s, user, source_addr)

    async def _add_session(self, s: AsyncSession, user: User, source_addr: str | None) -> LoginResult:
        """Store a new session for ``user`` in the caller's transaction."""
        now = self.now()
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        expires = now + timedelta(seconds=self.settings.session_ttl)
        idle_limit = now - timedelta(seconds=self.settings.session_idle_timeout)
        # Sweep dead sessions (anyone's) at each login, so rows never pile up.
        await s.execute(
            delete(WebSession).where(or_(WebSession.expires_at <= now, WebSession.last_seen_at <= idle_limit))
        )
        s.add(
            WebSession(
                id=digest(token),
                user_id=user.id,
                csrf_token=csrf,
                source_addr=(source_addr or None) and source_addr[:64],
                created_at=now,
                expires_at=expires,
                last_seen_at=now,
            )
        )
        return LoginResult(
            principal_of(user, "session", csrf, self.settings.viewer_permissions), token, expires
        )

    async def logout(self, principal: Principal, session_token: str, source_addr: str | None) -> None:
        """End the session whose cookie holds ``session_token``."""
        async with self.db.session() as s, s.begin():
            await s.execute(delete(WebSession).where(WebSession.id == digest(session_token)))
            await self.audit.add(s, "logout", principal=principal, source_addr=source_addr)

    async def end_sessions(self, user_id: int) -> int:
        """End every session of a user; the number ended."""
        async with self.db.session() as s, s.begin():
            return await end_sessions(s, user_id)

    async def change_password(
        self, principal: Principal, current: str, new: str, source_addr: str | None
    ) -> LoginResult:
        """Change the principal's own password; the current one is required.

        Every login session of the user ends (other browsers are logged out) and the
        caller gets a new session in the same transaction as the change and its audit
        record; API tokens are kept (an administrator's reset revokes them). A wrong
        current password counts as a failed login for the lockout."""
        wait = await self.limiter.aretry_after(principal.username, source_addr)
        if wait > 0:
            raise LoginLocked(wait)
        problem = password_problem(new)
        if problem is not None:
            raise Invalid(problem)
        if new == current:
            raise Invalid("the new password must differ from the current one")
        async with self.db.session() as s:
            user = await s.get(User, principal.user_id)
        if user is None or user.disabled or not await self.passwords.verify(user.password_hash, current):
            await self.limiter.arecord_failure(principal.username, source_addr)
            await self.audit.record(
                "password_change_refused",
                principal=principal,
                source_addr=source_addr,
                detail="wrong current password",
            )
            raise WrongPassword("the current password is wrong")
        encoded = await self.passwords.hash(new)
        async with self.db.session() as s, s.begin():
            user = await s.get(User, principal.user_id, with_for_update=True)
            if user is None:
                raise NotFound("your account no longer exists")
            user.password_hash = encoded
            user.password_changed_at = self.now()
            ended = await end_sessions(s, user.id)
            result = await self._add_session(s, user, source_addr)
            await self.audit.add(
                s,
                "password_changed",
                principal=principal,
                source_addr=source_addr,
                detail=f"own password changed; {ended} login session(s) ended, a new one opened",
            )
        return result

    # -- per-request authentication --------------------------------------------

    async def authenticate_session(self, session_token: str) -> Principal | None:
        """The principal of a live session, or ``None`` (unknown, expired, idle, disabled user)."""
        if not session_token or len(session_token) > _MAX_CREDENTIAL_LENGTH:
            return None
        sid = digest(session_token)
        now = self.now()
        async with self.db.session() as s, s.begin():
            row = (
                await s.execute(
                    select(WebSession, User)
                    .join(User, User.id == WebSession.user_id)
                    .where(WebSession.id == sid)
                )
            ).one_or_none()
            if row is None:
                return None
            ws, user = row
            last_seen = aware(ws.last_seen_at)
            idle = timedelta(seconds=self.settings.session_idle_timeout)
            if user.disabled or aware(ws.expires_at) <= now or last_seen + idle <= now:
                await s.execute(delete(WebSession).where(WebSession.id == sid))
                return None
            if now - last_seen >= self._touch:
                await s.execute(update(WebSession).where(WebSession.id == sid).values(last_seen_at=now))
            return principal_of(user, "session", ws.csrf_token, self.settings.viewer_permissions)

    async def authenticate_token(self, token: str) -> Principal | None:
        """The principal of a valid API token, or ``None`` (unknown, expired, revoked, disabled user)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_CREDENTIAL_LENGTH:
            return None
        now = self.now()
        async with self.db.session() as s, s.begin():
            row = (
                await s.execute(
                    select(ApiToken, User)
                    .join(User, User.id == ApiToken.user_id)
                    .where(ApiToken.token_hash == digest(token))
                )
            ).one_or_none()
            if row is None:
                return None
            tok, user = row
            if user.disabled or tok.revoked_at is not None or aware(tok.expires_at) <= now:
                return None
            if tok.last_used_at is None or now - aware(tok.last_used_at) >= timedelta(seconds=TOUCH_INTERVAL):
                await s.execute(update(ApiToken).where(ApiToken.id == tok.id).values(last_used_at=now))
            return principal_of(user, "token", None, self.settings.viewer_permissions)

    # -- API tokens -------------------------------------------------------------

    async def create_token(self, principal: Principal, name: str, expires_days: int) -> tuple[TokenInfo, str]:
        """A new token for ``principal``; the clear token is returned once and never stored."""
        name = name.strip()
        if not 1 <= len(name) <= 64:
            raise Invalid("a token name needs 1 to 64 characters")
        if not 1 <= expires_days <= self.settings.token_max_days:
            raise Invalid(f"expires_days must be between 1 and {self.settings.token_max_days}")
        now = self.now()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            user_id=principal.user_id,
            name=name,
            token_hash=digest(token),
            prefix=token[:12],
            rtsp_ha1=rtsp_ha1(principal.username, token),
            created_at=now,
            expires_at=now + timedelta(days=expires_days),
        )
        async with self.db.session() as s, s.begin():
            live = await s.scalar(
                select(func.count())
                .select_from(ApiToken)
                .where(
                    ApiToken.user_id == principal.user_id,
                    ApiToken.revoked_at.is_(None),
                    ApiToken.expires_at > now,
                )
            )
            if (live or 0) >= MAX_TOKENS_PER_USER:
                raise Conflict(f"at most {MAX_TOKENS_PER_USER} live tokens per user; revoke one first")
            s.add(row)
            await s.flush()
            info = _token_info(row)
            await self.audit.add(
                s, "token_created", principal=principal, detail=f"token {info.id} {name!r} ({info.prefix}…)"
            )
        return info, token

    async def list_tokens(self, principal: Principal) -> list[TokenInfo]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(ApiToken).where(ApiToken.user_id == principal.user_id).order_by(ApiToken.id)
            )
            return [_token_info(row) for row in rows]

    async def revoke_token(self, principal: Principal, token_id: int) -> TokenInfo:
        """Revoke one of the principal's own tokens; it is refused from the next request on."""
        now = self.now()
        async with self.db.session() as s, s.begin():
            row = await s.scalar(
                select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == principal.user_id)
            )
            if row is None:
                raise NotFound(f"you have no token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = now
                detail = f"token {row.id} {row.name!r} ({row.prefix}…)"
                await self.audit.add(s, "token_revoked", principal=principal, detail=detail)
        return _token_info(row)

    # -- storage helpers ---------------------------------------------------------

    async def _user_by_name(self, username: str) -> User | None:
        async with self.db.session() as s:
            user: User | None = await s.scalar(select(User).where(User.username == username))
            return user

    async def _store_hash(self, user_id: int, encoded: str, *, changed: bool) -> None:
        values: dict[str, object] = {"password_hash": encoded}
        if changed:
            values["password_changed_at"] = self.now()
        async with self.db.session() as s, s.begin():
            await s.execute(update(User).where(User.id == user_id).values(**values))


async def end_sessions(s: AsyncSession, user_id: int) -> int:
    """Delete every login session of a user in the caller's transaction; how many."""
    result = await s.execute(delete(WebSession).where(WebSession.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


async def revoke_tokens(s: AsyncSession, user_id: int, now: datetime) -> int:
    """Revoke every live API token of a user in the caller's transaction; how many.
    A revoked token stays revoked: enabling the user again does not revive it."""
    result = await s.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None), ApiToken.expires_at > now)
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _token_info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=aware(row.created_at),
        expires_at=aware(row.expires_at),
        revoked_at=aware(row.revoked_at) if row.revoked_at else None,
        last_used_at=aware(row.last_used_at) if row.last_used_at else None,
    )
