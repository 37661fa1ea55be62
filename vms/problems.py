"""HTTP problem answers (RFC 9457) for the media plane's domain errors."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
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


def problem_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail},
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

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StreamError, on_stream_error)
