"""Login, logout, who am I, and the caller's own API tokens.

``POST /auth/login`` answers every wrong credential with the same 401 (no hint
whether the user exists) and a locked-out user or address with 429 and
``Retry-After``. The session cookie is HttpOnly, SameSite=Strict, Path=/ (and
Secure when ``auth.secure_cookies``); its CSRF token comes back in the body and
in ``GET /auth/me``. API tokens are created from a login session only, so a
leaked token cannot mint successors.

``POST /auth/password`` changes the caller's own password (from a login session,
with the current password): every session of the user ends, and the answer sets a
new session cookie for this browser, with a new CSRF token in the body.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from vms.access import Principal
from vms.auth import AuthService
from vms.auth_types import (
    AuthError,
    Conflict,
    Invalid,
    LoginLocked,
    LoginRefused,
    LoginResult,
    NotFound,
    TokenInfo,
    WrongPassword,
)
from vms.deps import SESSION_COOKIE, AuthDep, CurrentUser
from vms.passwords import MAX_LENGTH, PasswordCheckBusy
from vms.problems import Problem
from vms.schemas import DbId
from vms.schemas_access import LoginIn, MeOut, TokenCreated, TokenIn, TokenOut

router = APIRouter(prefix="/auth", tags=["auth"])

_STATUS: dict[type[AuthError], int] = {NotFound: 404, Conflict: 409, Invalid: 422, WrongPassword: 403}


class PasswordChangeIn(BaseModel):
    # Passwords never echoed in a validation error.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    current_password: str = Field(max_length=MAX_LENGTH, description="The password in use now.")
    new_password: str = Field(max_length=MAX_LENGTH, description="The new password (at least 12 characters).")


@contextlib.contextmanager
def auth_problems() -> Iterator[None]:
    """Turn the access domain's errors into problem answers."""
    try:
        yield
    except LoginLocked as err:
        raise Problem(429, str(err), {"Retry-After": str(max(1, math.ceil(err.retry_after)))}) from err
    except LoginRefused as err:
        raise Problem(401, "wrong username or password") from err
    except PasswordCheckBusy as err:
        raise Problem(503, str(err), {"Retry-After": "1"}) from err
    except AuthError as err:
        raise Problem(_STATUS.get(type(err), 400), str(err)) from err


def source_addr(request: Request) -> str | None:
    return request.client.host if request.client else None


def me(principal: Principal, auth: AuthService) -> MeOut:
    return MeOut(
        username=principal.username,
        centre=principal.centre_id,
        centre_name=auth.centre_name(principal.centre_id),
        role=principal.role,
        permissions=principal.permissions(),
        via=principal.via,
        csrf_token=principal.csrf_token,
    )


def _token_out(info: TokenInfo) -> TokenOut:
    return TokenOut(
        id=info.id,
        name=info.name,
        prefix=info.prefix,
        created_at=info.created_at,
        expires_at=info.expires_at,
        revoked_at=info.revoked_at,
        last_used_at=info.last_used_at,
    )


def _session_opened(response: Response, result: LoginResult, auth: AuthService) -> MeOut:
    """Hand the browser its new session's cookie (never cached) and say who it is now."""
    response.set_cookie(
        SESSION_COOKIE,
        result.session_token,
        max_age=math.ceil(auth.settings.session_ttl),
        path="/",
        secure=auth.settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"
    return me(result.principal, auth)


@router.post("/login")
async def login(body: LoginIn, request: Request, response: Response, auth: AuthDep) -> MeOut:
    with auth_problems():
        result = await auth.login(body.username, body.password, source_addr(request))
    return _session_opened(response, result, auth)


@router.post("/logout", status_code=204)
async def logout(request: Request, principal: CurrentUser, auth: AuthDep) -> Response:
    if principal.via != "session":
        raise Problem(
            400, "logout ends a login session; revoke an API token with DELETE /api/v1/auth/tokens/{id}"
        )
    await auth.logout(principal, request.cookies[SESSION_COOKIE], source_addr(request))
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=auth.settings.secure_cookies, httponly=True, samesite="strict"
    )
    return response


@router.get("/me")
async def who_am_i(principal: CurrentUser, auth: AuthDep, response: Response) -> MeOut:
    response.headers["Cache-Control"] = "no-store"
    return me(principal, auth)


@router.post("/tokens", status_code=201)
async def create_token(
    body: TokenIn, principal: CurrentUser, auth: AuthDep, response: Response
) -> TokenCreated:
    if principal.via != "session":
        raise Problem(403, "API tokens are created from a login session, not with another token")
    with auth_problems():
        info, token = await auth.create_token(principal, body.name, body.expires_days)
    response.headers["Cache-Control"] = "no-store"
    return TokenCreated(**_token_out(info).model_dump(), token=token)


@router.get("/tokens")
async def list_tokens(principal: CurrentUser, auth: AuthDep) -> list[TokenOut]:
    return [_token_out(info) for info in await auth.list_tokens(principal)]


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: DbId, principal: CurrentUser, auth: AuthDep) -> Response:
    with auth_problems():
        await auth.revoke_token(principal, token_id)
    return Response(status_code=204)


@router.post("/password")
async def change_password(
    body: PasswordChangeIn, request: Request, principal: CurrentUser, auth: AuthDep, response: Response
) -> MeOut:
    """Change your own password. Every login session of yours ends; this browser gets a new one."""
    if principal.via != "session":
        raise Problem(403, "a password is changed from a login session, not with an API token")
    with auth_problems():
        result = await auth.change_password(
            principal, body.current_password, body.new_password, source_addr(request)
        )
    return _session_opened(response, result, auth)
