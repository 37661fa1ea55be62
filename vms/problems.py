"""HTTP problem answers (RFC 9457): for the media plane's domain errors, and for
requests that fail validation (422).

A 422 names each problem's location and message but never echoes the input: the
input may be a password, or a number JSON cannot carry back (``NaN``, ``1e400``).
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from streams import (
    CapacityError,
    NegotiationError,
    NoPicture,
    OwnerCapacityError,
    StreamError,
    UnknownCamera,
    WrongOutput,
)


class Problem(Exception):
    """Raise in a route to answer with ``application/problem+json``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def problem_response(
    status: int, detail: str, headers: dict[str, str] | None = None, **members: Any
) -> JSONResponse:
    """A problem answer; ``members`` are extension members (RFC 9457, 3.2), e.g. ``errors``."""
    return JSONResponse(
        {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            **members,
        },
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


_STATUS: list[tuple[type[StreamError], int]] = [
    (UnknownCamera, 404),
    (NegotiationError, 400),
    (WrongOutput, 409),
    (OwnerCapacityError, 429),
    (CapacityError, 503),
    (NoPicture, 503),
]


def install(app: FastAPI) -> None:
    """Map domain errors to problem answers on ``app``."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc.status, exc.detail, exc.headers)

    async def on_stream_error(request: Request, exc: Exception) -> JSONResponse:
        for kind, status in _STATUS:
            if isinstance(exc, kind):
                headers = {"Retry-After": "5"} if status in (429, 503) else None
                return problem_response(status, str(exc), headers)
        return problem_response(503, str(exc) or "the stream is not available")

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_problem(exc.errors())

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StreamError, on_stream_error)
    app.add_exception_handler(RequestValidationError, on_invalid)


def validation_problem(errors: Sequence[Any]) -> JSONResponse:
    """A 422 listing each error's location, message and type, without its input."""
    listed = [_error(error) for error in errors if isinstance(error, dict)]
    first = listed[0] if listed else None
    detail = (
        f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
        if first
        else "the request is not valid"
    )
    return problem_response(422, detail, errors=listed)


def _error(error: dict[str, Any]) -> dict[str, Any]:
    loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}
