"""Request and response bodies of the login, token and user routes.

Responses never carry a password or a password hash; a clear API token appears
exactly once, in :class:`TokenCreated`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from vms.access import Permission, Role
from vms.passwords import MAX_LENGTH


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class LoginIn(_In):
    username: str = Field(max_length=256)
    password: str = Field(max_length=MAX_LENGTH)


class MeOut(BaseModel):
    username: str
    centre: str
    centre_name: str
    role: Role
    permissions: list[Permission]
    via: str
    """``session`` or ``token``."""
    csrf_token: str | None
    """Send it back in ``X-CSRF-Token`` on every POST, PUT, PATCH and DELETE of this session."""


class TokenIn(_In):
    name: str = Field(
        min_length=1, max_length=64, description="What the token is for, e.g. 'nightly export'."
    )
    expires_days: int = Field(default=90, ge=1, description="Lifetime in days (at most auth.token_max_days).")


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    """The first characters of the token, to recognise it."""
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str
    """The token itself: shown this once, stored only as a hash."""


class UserIn(_In):
    username: str = Field(max_length=64)
    role: Role
    password: str = Field(max_length=MAX_LENGTH)


class UserPatch(_In):
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, max_length=MAX_LENGTH)
    """A new password set by the administrator; the user's login sessions end."""


class UserOut(BaseModel):
    id: int
    username: str
    centre: str
    role: str
    disabled: bool
    created_at: datetime
    password_changed_at: datetime
