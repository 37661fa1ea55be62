"""Security headers, body limits and request metrics: on the real app and on a small app of test routes.

Body limits are checked over raw sockets, so the test controls exactly what is
sent: a declared 2 MiB body that is never sent must still get its 413, and a
chunked body must be stopped as soon as it passes the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message

from tests.app_fixtures import RunningApp, listening_socket, serve_app
from vms import middleware
from vms.app import dashboard_dir
from vms.metrics import metrics_of
from vms.middleware import CONTENT_SECURITY_POLICY, SECURITY_HEADERS

MIB = 1 << 20


def site(data_dir: Path) -> str:
    return f"""
server:
  data_dir: {data_dir}
pictures:
  mjpeg_max_fps: 10
centres:
  - id: meizhou
    name: 梅州市政务服务中心
halls:
  - id: tax
    name: 税务
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
"""


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with serve_app(site(tmp_path)) as app:
        yield app


def assert_security_headers(headers: httpx.Headers | dict[str, str]) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, value in SECURITY_HEADERS:
        assert lowered.get(name.lower()) == value, name


# -- a small app of test routes, served by uvicorn on a free port ----------------


def probe_app(max_body_bytes: int = MIB) -> FastAPI:
    app = FastAPI()
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @router.post("/size")
    async def size(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @router.get("/endless")
    async def endless() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for n in range(10_000):
                yield b"part %d\n" % n
                await asyncio.sleep(0.05)

        return StreamingResponse(parts(), media_type="text/plain")

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @router.get("/own-policy")
    async def own_policy() -> StreamingResponse:
        async def once() -> AsyncIterator[bytes]:
            yield b"x"

        return StreamingResponse(once(), headers={"Content-Security-Policy": "sandbox"})

    @router.websocket("/echo")
    async def echo(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text(await socket.receive_text())
        await socket.close()

    app.include_router(router, prefix="/v1")
    middleware.install(app, max_body_bytes=max_body_bytes)
    return app


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[int]:
    sock = listening_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert not task.done() and time.monotonic() < deadline, "the server did not start"
            await asyncio.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def write(writer: asyncio.StreamWriter, *parts: bytes) -> None:
    for part in parts:
        writer.write(part)
        await writer.drain()


def request_head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii") + b"\r\n"


async def read_answer(reader: asyncio.StreamReader, within: float = 5) -> Answer:
    """One answer with a Content-Length body, read without waiting for the connection to close."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    status_line, *lines = head.decode("latin-1").strip().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), within)
    return Answer(int(status_line.split()[1]), headers, body)


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5) -> bool:
    return await asyncio.wait_for(reader.read(), within) == b""


def chunked(data: bytes, size: int) -> list[bytes]:
    return [
        b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size)
    ]


# -- security headers --------------------------------------------------------------


async def test_security_headers_on_pages_api_and_errors(running: RunningApp) -> None:
    await running.http.get("/")  # the dashboard, if this checkout has it
    for path in ("/", "/api/v1/halls", "/api/v1/cameras/nope", "/no/such/page", "/healthz", "/metrics"):
        res = await running.http.get(path)
        assert_security_headers(res.headers)
    assert (await running.http.get("/no/such/page")).status_code == 404


async def test_headers_on_a_crash_and_a_routes_own_policy_kept() -> None:
    transport = httpx.ASGITransport(app=probe_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        crash = await http.get("/v1/boom")
        assert crash.status_code == 500
        assert crash.headers["content-type"] == "application/problem+json"
        assert "a bug" not in crash.text
        assert_security_headers(crash.headers)
        own = await http.get("/v1/own-policy")
        assert own.headers.get_list("content-security-policy") == ["sandbox"]
        assert own.headers["x-frame-options"] == "DENY"


def test_the_dashboard_satisfies_the_policy() -> None:
    """No inline script, inline style, event-handler attribute or eval: what the CSP would block."""
    assert (
        "script-src 'self';" in CONTENT_SECURITY_POLICY and "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    )
    root = dashboard_dir()
    if root is None:
        pytest.skip("no dashboard in this checkout")

    class Inline(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            names = {name for name, _ in attrs}
            if tag == "script" and "src" not in names:
                self.found.append("inline <script>")
            if tag == "style":
                self.found.append("<style> element")
            self.found += [
                f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on")
            ]
            for name, value in attrs:
                if value and value.strip().lower().startswith("javascript:"):
                    self.found.append(f"javascript: URL in {name}")
                if name in ("src", "href") and value and re.match(r"^(https?:)?//", value):
                    self.found.append(f"another origin in {name}={value}")

    for page in root.glob("*.html"):
        parser = Inline()
        parser.feed(page.read_text(encoding="utf-8"))
        assert parser.found == [], f"{page.name}: {parser.found}"
    for script in root.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        for pattern in (
            r"\beval\(",
            r"new Function\(",
            r"""setAttribute\(\s*["']style""",
            r"""\son\w+\s*=\s*["']""",
            r"""\sstyle\s*=\s*["']""",
            r"""\b(setTimeout|setInterval)\(\s*["'`]""",
            r"https?://",
        ):
            assert not re.search(pattern, text), f"{script.name} matches {pattern}"
    for sheet in root.glob("*.css"):
        text = sheet.read_text(encoding="utf-8")
        assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", text), (
            f"{sheet.name} loads from elsewhere"
        )


# -- body limits -------------------------------------------------------------------


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(running: RunningApp) -> None:
    port = int(running.base_url.rsplit(":", 1)[1])
    head = "POST /api/v1/cameras/tax-1/whep HTTP/1.1\nHost: test\nContent-Type: application/sdp\n"
    async with connection(port) as (reader, writer):
        await write(writer, request_head(head + f"Content-Length: {2 * MIB}\n"))
        answer = await read_answer(reader)  # not one byte of the body has been sent
        assert answer.status == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["connection"] == "close"
        assert b"larger than 1048576 bytes" in answer.body
        assert_security_headers(answer.headers)
        # A client that sends its body anyway has it read and thrown away, then the server closes.
        await write(writer, b"v=0\r\n" * (2 * MIB // 5), b"x" * (2 * MIB % 5))
        assert await closed_by_server(reader)
    async with connection(port) as (reader, writer):
        await write(writer, request_head(head + f"Content-Length: {100 * MIB}\n"))
        assert (await read_answer(reader)).status == 413
        assert await closed_by_server(reader, within=1)  # too long to wait for: closed at once


async def test_a_chunked_body_is_stopped_once_past_the_limit() -> None:
    head = "POST /v1/size HTTP/1.1\nHost: test\nTransfer-Encoding: chunked\n"
    async with serve(probe_app()) as port:
        async with connection(port) as (reader, writer):
            await write(writer, request_head(head), *chunked(b"x" * (MIB + 1), 64 * 1024))
            # Just past the limit and no last chunk: the 413 comes without the end of the body.
            answer = await read_answer(reader)
            assert answer.status == 413
            assert answer.headers["content-type"] == "application/problem+json"
            assert_security_headers(answer.headers)
            await write(writer, b"0\r\n\r\n")
            assert await closed_by_server(reader)

        async with connection(port) as (reader, writer):
            await write(writer, request_head(head), *chunked(b"y" * 300_000, 64 * 1024), b"0\r\n\r\n")
            answer = await read_answer(reader)
            assert (answer.status, answer.body) == (200, b'{"bytes":300000}')

        # An ordinary client, which writes the whole body before it reads, gets the 413 too.
        async def too_much() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b"z" * 64 * 1024

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for content in (b"z" * (2 * MIB), too_much()):
                refused = await http.post("/v1/size", content=content)
                assert refused.status_code == 413
                assert refused.headers["content-type"] == "application/problem+json"


async def test_the_limit_is_configurable() -> None:
    transport = httpx.ASGITransport(app=probe_app(max_body_bytes=1000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.post("/v1/size", content=b"z" * 1000)).json() == {"bytes": 1000}
        assert (await http.post("/v1/size", content=b"z" * 1001)).status_code == 413

        async def stream() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"z" * 300

        refused = await http.post("/v1/size", content=stream())
        assert refused.status_code == 413
        assert refused.headers["content-type"] == "application/problem+json"


# -- streaming and metrics -----------------------------------------------------------


async def test_streams_pass_part_by_part() -> None:
    async with (
        serve(probe_app()) as port,
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", f"http://127.0.0.1:{port}/v1/endless") as res,
    ):
        assert_security_headers(res.headers)
        first = await asyncio.wait_for(anext(res.aiter_raw()), 5)
        assert first.startswith(b"part 0")


async def test_websockets_pass_untouched() -> None:
    """Drive the app with the ASGI WebSocket messages a server would send."""
    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/v1/echo",
        "raw_path": b"/v1/echo",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [],
        "subprotocols": [],
    }
    await asyncio.wait_for(probe_app()(scope, receive, send), 5)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "hello"
    assert "headers" not in sent[0] or sent[0]["headers"] == []


async def test_mjpeg_streams_through_the_middleware(running: RunningApp) -> None:
    await running.wait_online("tax-1")
    viewer = await running.admin("meizhou")
    async with viewer.stream("GET", "/api/v1/cameras/tax-1/stream.mjpeg") as res:
        assert res.status_code == 200
        assert_security_headers(res.headers)
        received = b""

        async def first_jpeg() -> None:
            nonlocal received
            async for data in res.aiter_raw():
                received += data
                start = received.find(b"\xff\xd8")
                if start >= 0 and received.find(b"\xff\xd9", start) > 0:
                    return

        await asyncio.wait_for(first_jpeg(), 10)
    assert received.startswith(b"--")


async def test_http_metrics_labels() -> None:
    app = probe_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        await http.get("/v1/items/private-value")
        await http.get("/v1/items/another-value")
        await http.request("PROPFIND", "/v1/items/third-value")
        await http.get("/private-value")
        await http.post("/v1/size", content=b"z" * (2 * MIB))
    metrics = metrics_of(app.state)
    assert metrics is not None
    text = generate_latest(metrics.registry).decode()
    assert "value" not in text
    counts = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "hallwatch_http_requests_total"
    }
    assert counts == {
        ("/v1/items/{item_id}", "GET", "200"): 2,
        ("/v1/items/{item_id}", "other", "405"): 1,
        ("unmatched", "GET", "404"): 1,
        ("unmatched", "POST", "413"): 1,
    }
