"""User management for a centre's administrators (their own centre only).

A user of another centre answers 404, as if absent. Changes are audited as
``admin_change`` (see :mod:`vms.users`).
"""

from __future__ import annotations

from fastapi import APIRouter

from vms import users
from vms.deps import AdminUser, AuthDep
from vms.problems import Problem
from vms.routes.auth import auth_problems
from vms.schemas import DbId
from vms.schemas_access import UserIn, UserOut, UserPatch

router = APIRouter(prefix="/users", tags=["users"])


def _out(info: users.UserInfo) -> UserOut:
    return UserOut(
        id=info.id,
        username=info.username,
        centre=info.centre_id,
        role=info.role,
        disabled=info.disabled,
        created_at=info.created_at,
        password_changed_at=info.password_changed_at,
    )


@router.get("")
async def list_users(admin: AdminUser, auth: AuthDep) -> list[UserOut]:
    return [_out(info) for info in await users.list_users(auth, admin.centre_id)]


@router.post("", status_code=201)
async def create_user(body: UserIn, admin: AdminUser, auth: AuthDep) -> UserOut:
    with auth_problems():
        info = await users.create_user(
            auth,
            admin,
            username=body.username,
            centre_id=admin.centre_id,
            role=body.role,
            password=body.password,
        )
    return _out(info)


@router.get("/{user_id}")
async def get_user(user_id: DbId, admin: AdminUser, auth: AuthDep) -> UserOut:
    with auth_problems():
        return _out(await users.get_user(auth, admin, user_id))


@router.patch("/{user_id}")
async def update_user(user_id: DbId, body: UserPatch, admin: AdminUser, auth: AuthDep) -> UserOut:
    if body.role is None and body.disabled is None and body.password is None:
        raise Problem(422, "nothing to change: send role, disabled or password")
    with auth_problems():
        info = await users.update_user(
            auth, admin, user_id, role=body.role, disabled=body.disabled, password=body.password
        )
    return _out(info)
