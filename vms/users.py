"""User accounts: creation, listing and changes by a centre's administrators.

Functions over an :class:`~vms.auth.AuthService` (its database, audit trail and
password hasher). An administrator reaches only the users of their own centre; a
user of another centre is answered as "not found". Every change is audited as
``admin_change`` with a detail naming what changed, never a password, in the same
transaction as the change: no change without its record, no record without its
change. Disabling a user or resetting their password ends their login sessions and
revokes their API tokens at once; enabling the user again does not revive those
tokens (the user makes new ones). Runs on the event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from vms.access import Principal, is_role
from vms.auth import AuthService, end_sessions, revoke_tokens
from vms.auth_types import Conflict, Invalid, NotFound, aware
from vms.passwords import password_problem
from vms.storage.tables import User

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    centre_id: str
    role: str
    disabled: bool
    created_at: datetime
    password_changed_at: datetime


def _info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        centre_id=user.centre_id,
        role=user.role,
        disabled=user.disabled,
        created_at=aware(user.created_at),
        password_changed_at=aware(user.password_changed_at),
    )


def check_username(username: str) -> str:
    """The normalized (lower-case) username, or :class:`Invalid`."""
    name = username.strip().lower()
    if not USERNAME_PATTERN.match(name):
        raise Invalid(
            "a username has 2 to 64 characters: letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def _check_password(password: str) -> None:
    problem = password_problem(password)
    if problem is not None:
        raise Invalid(problem)


async def centres_without_users(auth: AuthService) -> list[str]:
    """The configured centres that have no user at all, in config order."""
    async with auth.db.session() as s:
        present = set(await s.scalars(select(User.centre_id).distinct()))
    return [c.id for c in auth.config.centres if c.id not in present]


async def create_user(
    auth: AuthService,
    actor: Principal | None,
    *,
    username: str,
    centre_id: str,
    role: str,
    password: str,
    note: str = "",
) -> UserInfo:
    """Create a user; ``actor`` is the administrator (``None`` at start-up, see :mod:`vms.bootstrap`)."""
    name = check_username(username)
    if not is_role(role):
        raise Invalid("role must be viewer, operator or admin")
    _check_password(password)
    encoded = await auth.passwords.hash(password)
    now = auth.now()
    user = User(
        username=name,
        centre_id=centre_id,
        role=role,
        password_hash=encoded,
        disabled=False,
        created_at=now,
        password_changed_at=now,
    )
    detail = f"created user {name} ({role}) in centre {centre_id}{note}"
    try:
        async with auth.db.session() as s, s.begin():
            s.add(user)
            await s.flush()
            await auth.audit.add(s, "admin_change", principal=actor, centre_id=centre_id, detail=detail)
    except IntegrityError as err:
        raise Conflict(f"the username {name!r} is taken") from err
    return _info(user)


async def list_users(auth: AuthService, centre_id: str) -> list[UserInfo]:
    async with auth.db.session() as s:
        rows = await s.scalars(select(User).where(User.centre_id == centre_id).order_by(User.username))
        return [_info(user) for user in rows]


async def get_user(auth: AuthService, actor: Principal, user_id: int) -> UserInfo:
    async with auth.db.session() as s:
        user = await s.get(User, user_id)
    if user is None or user.centre_id != actor.centre_id:
        raise NotFound(f"no user {user_id} in centre {actor.centre_id}")
    return _info(user)


async def update_user(
    auth: AuthService,
    actor: Principal,
    user_id: int,
    *,
    role: str | None = None,
    disabled: bool | None = None,
    password: str | None = None,
) -> UserInfo:
    """Change a user of the actor's centre: role, disabled flag, password (any subset)."""
    if role is not None and not is_role(role):
        raise Invalid("role must be viewer, operator or admin")
    if password is not None:
        _check_password(password)
    encoded = await auth.passwords.hash(password) if password is not None else None
    changes: list[str] = []
    async with auth.db.session() as s, s.begin():
        user = await s.get(User, user_id, with_for_update=True)
        if user is None or user.centre_id != actor.centre_id:
            raise NotFound(f"no user {user_id} in centre {actor.centre_id}")
        stays_admin = (role or user.role) == "admin" and not (user.disabled if disabled is None else disabled)
        if user.role == "admin" and not user.disabled and not stays_admin:
            admins = await s.scalar(
                select(func.count())
                .select_from(User)
                .where(User.centre_id == user.centre_id, User.role == "admin", User.disabled.is_(False))
            )
            if (admins or 0) <= 1:
                raise Conflict(f"{user.username} is the last active administrator of centre {user.centre_id}")
        if role is not None and role != user.role:
            changes.append(f"role {user.role} → {role}")
            user.role = role
        if disabled is not None and disabled != user.disabled:
            changes.append("disabled" if disabled else "enabled")
            user.disabled = disabled
        if encoded is not None:
            changes.append("password reset")
            user.password_hash = encoded
            user.password_changed_at = auth.now()
        if not changes:
            return _info(user)
        if "disabled" in changes or encoded is not None:
            ended = await end_sessions(s, user.id)
            revoked = await revoke_tokens(s, user.id, auth.now())
            changes.append(f"{ended} login session(s) ended, {revoked} API token(s) revoked")
        await auth.audit.add(
            s,
            "admin_change",
            principal=actor,
            centre_id=user.centre_id,
            detail=f"user {user.username} (id {user.id}): " + "; ".join(changes),
        )
    return _info(user)
