"""What authentication hands out and refuses with: its errors, results and small helpers.

Shared by :mod:`vms.auth` (logins, sessions, API tokens), :mod:`vms.users` and the
routes, so none of them imports another for a type. Pure data and functions.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from vms.access import Permission, Principal, Role
from vms.storage.tables import User


class AuthError(Exception):
    """A request about credentials that cannot be honoured; the message is safe to show."""


class LoginRefused(AuthError):
    """Wrong username or password (deliberately not saying which)."""


class LoginLocked(AuthError):
    """Too many failed logins for this user or address."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed logins; try again later")
        self.retry_after = retry_after


class NotFound(AuthError):
    """No such user or token within the caller's reach."""


class Conflict(AuthError):
    """The change contradicts the current state (duplicate name, last admin, too many tokens)."""


class Invalid(AuthError):
    """A value is not acceptable (username pattern, role, password policy, lifetime)."""


class WrongPassword(AuthError):
    """The current password given to change it is wrong."""


@dataclass(frozen=True)
class LoginResult:
    principal: Principal
    session_token: str
    """Goes into the cookie; never stored."""
    expires_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def digest(secret: str) -> str:
    """Hex SHA-256: how session and API tokens are stored (they are random, no salt needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def aware(value: datetime) -> datetime:
    """``value`` as aware UTC (SQLite returns naive datetimes for what was stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def principal_of(
    user: User, via: str, csrf_token: str | None, granted: Iterable[Permission] = ()
) -> Principal:
    """The principal of ``user``; ``granted``: what the site's configuration adds to a viewer's role."""
    return Principal(
        user_id=user.id,
        username=user.username,
        centre_id=user.centre_id,
        role=cast(Role, user.role),
        via="session" if via == "session" else "token",
        csrf_token=csrf_token,
        granted=frozenset(granted) if user.role == "viewer" else frozenset(),
    )


def csrf_matches(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the request header."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
