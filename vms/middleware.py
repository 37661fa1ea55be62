"""HTTP middleware: security headers, request body limits and request metrics.

Plain ASGI middleware (not ``BaseHTTPMiddleware``), so streamed answers (MJPEG)
pass through part by part and are never buffered. :func:`install` stacks them on
an app, outermost first:

* :class:`RequestMetrics` counts every answer under its route template (the
  matched route's path with ``{placeholders}``, never the raw path) and times it;
* :class:`SecurityHeaders` adds the security headers to every answer, error
  answers included (an exception that escapes the app gets a 500 problem answer
  with the headers, then goes on to the server, which logs it);
* :class:`BodyLimit` refuses a request body above the limit with 413: at once when
  ``Content-Length`` says so, before a byte of the body is read, or as soon as a
  chunked body grows past it.

WebSocket and lifespan traffic passes through untouched. Event loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence

import fastapi.routing
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vms import metrics as metrics_module
from vms.metrics import UNMATCHED, HttpMetrics
from vms.problems import problem_response

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_MAX_BODY_BYTES",
    "SECURITY_HEADERS",
    "BodyLimit",
    "RequestMetrics",
    "RouteTemplates",
    "SecurityHeaders",
    "install",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1 << 20

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "style-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
"""Only the service's own scripts, styles and media; no inline code, no framing."""

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)


def install(app: FastAPI, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """Stack the three middlewares on ``app``; also gives it its metrics (see :func:`vms.metrics.install`)."""
    metrics = metrics_module.install(app)
    # add_middleware puts each new one outside the previous ones.
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics, metrics=metrics.http, templates=RouteTemplates(app))


class RouteTemplates:
    """Finds the path template of the route that answered a request, for metric labels.

    The router leaves the chosen route in ``scope["route"]`` (a mount leaves its app
    in ``scope["endpoint"]``). A route of an included router carries only its own
    path there, so the table maps each route, by identity, to its full template
    (prefix included) as FastAPI lists them; it is rebuilt when routes are added.
    """

    def __init__(self, app: Starlette) -> None:
        self._app = app
        self._table: dict[int, str] = {}
        self._built_for = -1

    def _rebuild(self) -> None:
        table: dict[int, str] = {}
        for original, template in routes_with_templates(self._app.routes):
            if not template:
                continue
            table.setdefault(id(original), template)
            if isinstance(original, Mount):
                table.setdefault(id(original.app), template)
        self._table = table
        self._built_for = len(self._app.routes)

    def __call__(self, scope: Scope) -> str:
        """The template, e.g. ``/api/v1/cameras/{camera_id}``, or ``unmatched``; call after the app ran."""
        if self._built_for != len(self._app.routes):
            self._rebuild()
        for key in ("route", "endpoint"):
            found = scope.get(key)
            if found is not None and id(found) in self._table:
                return self._table[id(found)]
        return UNMATCHED


def routes_with_templates(routes: Sequence[BaseRoute]) -> Iterator[tuple[BaseRoute, str | None]]:
    """Each route with its full path template; FastAPI's included routers are walked through."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # FastAPI versions that copy included routes with their prefix
        for route in routes:
            yield route, getattr(route, "path_format", None)
        return
    for context in contexts(routes):
        yield context.original_route, context.path_format


class RequestMetrics:
    """Counts and times every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, templates: RouteTemplates) -> None:
        self.app = app
        self._metrics = metrics
        self._templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status: int | None = None

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            # No answer at all: the server answers 500 (or the client has gone).
            self._metrics.observe(
                self._templates(scope), scope["method"], status or 500, time.perf_counter() - began
            )


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer that does not set them itself."""

    def __init__(self, app: ASGIApp, headers: Sequence[tuple[str, str]] = SECURITY_HEADERS) -> None:
        self.app = app
        self._headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self._headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception:
            if not started:
                # The server closes the connection after an exception: say so, so the
                # client does not send its next request into a closed connection.
                answer = problem_response(
                    500, "the server failed to answer this request", headers={"Connection": "close"}
                )
                await answer(scope, receive, with_headers)
            raise


class BodyLimit:
    """Answers 413 to a request body larger than ``max_body_bytes``.

    A declared ``Content-Length`` above the limit is refused before the app runs. A
    chunked body is counted as the app reads it; once past the limit the 413 goes
    out, the app is told the client disconnected, and whatever it sends after that
    is dropped.

    The 413 closes the connection. A client that writes its whole body before it
    reads (many do) would see a reset instead of the 413 if the connection closed
    with its body unread, so, as web servers do with a lingering close, up to
    ``linger_bytes`` more are read and thrown away, for at most ``linger_seconds``,
    before the answer ends. A declared body longer than that is not waited for.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        *,
        linger_bytes: int = 4 << 20,
        linger_seconds: float = 2.0,
    ) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be 0 or more")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.linger_bytes = linger_bytes
        self.linger_seconds = linger_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._start_refusal(send)
            await self._end_refusal(receive, send, declared if declared <= self.linger_bytes else 0)
            return

        received = 0
        started = False
        refused = False
        body_done = False

        async def counting_receive() -> Message:
            nonlocal received, refused, body_done
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_body_bytes and not started:
                    refused = True
                    await self._start_refusal(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception as err:
            if not refused:
                raise
            # The app saw the disconnect it was told of.
            log.debug("request body over the limit; the app stopped with %s", type(err).__name__)
        if refused:
            await self._end_refusal(receive, send, 0 if body_done else self.linger_bytes)

    async def _start_refusal(self, send: Send) -> None:
        answer = problem_response(
            413,
            f"the request body is larger than {self.max_body_bytes} bytes",
            headers={"Connection": "close"},
        )
        await send({"type": "http.response.start", "status": 413, "headers": answer.raw_headers})
        await send({"type": "http.response.body", "body": answer.body, "more_body": True})

    async def _end_refusal(self, receive: Receive, send: Send, budget: int) -> None:
        """Throw away up to ``budget`` more bytes of the body, briefly, then end the 413."""
        try:
            async with asyncio.timeout(self.linger_seconds):
                while budget > 0:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    budget -= len(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            pass
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
