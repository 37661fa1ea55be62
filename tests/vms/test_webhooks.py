"""Alarm webhooks: real HTTP receivers on 127.0.0.1 that answer as told, hang or are not there at
all; the real alarm centre; the real app with its admin route and /metrics; and the config's messages."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams import IngestState
from tests.app_fixtures import serve_app
from vms.alarms import AlarmCentre
from vms.config_loader import ConfigError, load_config, parse_config
from vms.webhooks import Webhooks

S = IngestState
SECRET = "webhook-secret-of-the-centre-0123"


@dataclass
class Post:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


@dataclass
class Receiver:
    """A real HTTP/1.1 server on 127.0.0.1 that records each post and answers it with the next
    status of ``answers`` (200 when none is left), or never answers while ``silent``."""

    port: int = 0
    answers: list[int] = field(default_factory=list)
    silent: bool = False
    posts: list[Post] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {}
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                assert head[0].startswith("POST /hook?token=t0ken HTTP/1.1")
                self.posts.append(Post(headers, body))
                self._arrived.set()
                if self.silent:
                    await reader.read()  # until the sender gives up and closes
                    return
                status = self.answers.pop(0) if self.answers else 200
                writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Length: 2\r\n\r\nno".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def wait_posts(self, count: int, within: float = 5.0) -> list[Post]:
        deadline = time.monotonic() + within
        while len(self.posts) < count:
            self._arrived.clear()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(self.posts)} posts of {count} arrived within {within} s"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.posts

    def close_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()


@contextlib.asynccontextmanager
async def receiving(answers: list[int] | None = None, *, silent: bool = False) -> AsyncIterator[Receiver]:
    receiver = Receiver(answers=answers or [], silent=silent)
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        receiver.close_connections()
        await server.wait_closed()


def closed_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def hook(port: int, **settings: object) -> str:
    fields = {
        "url": f"http://127.0.0.1:{port}/hook?token=t0ken",
        "secret": SECRET,
        "timeout": 2,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        **settings,
    }
    return "\n".join(f"      {key}: {json.dumps(value)}" for key, value in fields.items())


def site(tax_url: str = "demo://tax-1", **webhooks: str) -> str:
    """Meizhou sees the tax hall, Xingning and the emergency centre both halls; ``webhooks`` gives
    a centre's webhook lines."""

    def webhook(centre: str) -> str:
        lines = webhooks.get(centre)
        return f"    webhook:\n{lines}\n" if lines else ""

    return f"""\
ingest:
  connect_timeout: 1
  read_timeout: 1
  stall_timeout: 1
  offline_after: 1
  backoff_initial: 0.2
  backoff_max: 0.5
centres:
  - id: meizhou
    name: 梅州市政务服务中心
    halls: [tax]
{webhook("meizhou")}  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
{webhook("xingning")}  - id: emergency
    name: 兴宁市应急指挥中心
    halls: all
{webhook("emergency")}halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
  - id: legal-services
    name: 兴宁市公共法律服务中心
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: {tax_url}
  - id: legal-1
    name: 窗口区
    hall: legal-services
    url: demo://legal-1
"""


@contextlib.asynccontextmanager
async def sending(text: str, **centre_options: int) -> AsyncIterator[tuple[AlarmCentre, Webhooks]]:
    centre = AlarmCentre(parse_config(text, "site.yaml"), **centre_options)
    webhooks = Webhooks(centre.config, centre)
    webhooks.start()
    try:
        yield centre, webhooks
    finally:
        await webhooks.stop()
        await centre.stop()


def outage(centre: AlarmCentre, camera: str = "tax-1") -> None:
    """The camera goes offline (one alarm), then comes back (one informational event)."""
    centre.on_state(camera, S.ONLINE, S.OFFLINE, "connection refused")
    centre.on_state(camera, S.STARTING, S.ONLINE, None)


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.01)


def verify(post: Post, secret: str = SECRET) -> bool:
    """The receiver's check, exactly as the module docstring and the README give it."""
    timestamp, signature = post.headers["x-hallwatch-timestamp"], post.headers["x-hallwatch-signature"]
    expected = (
        "sha256="
        + hmac.new(secret.encode(), timestamp.encode() + b"." + post.body, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected, signature) and abs(time.time() - int(timestamp)) < 300


# -- what is posted ----------------------------------------------------------------------------


async def test_an_alarm_and_its_acknowledgement_are_posted_signed() -> None:
    async with receiving() as receiver, sending(site(meizhou=hook(receiver.port))) as (centre, _):
        centre.on_state("tax-1", S.ONLINE, S.OFFLINE, "connection refused")
        [alarm] = centre.alarms({"tax"})
        centre.acknowledge(alarm.id, "op-meizhou", {"tax"})
        first, second = await receiver.wait_posts(2)

    for post in (first, second):
        assert verify(post)
        assert not verify(post, secret=SECRET + "x")
        assert post.headers["content-type"] == "application/json"
        assert post.headers["user-agent"].startswith("Hallwatch")
        assert len(post.headers["x-hallwatch-delivery"]) >= 16
    assert first.headers["x-hallwatch-delivery"] != second.headers["x-hallwatch-delivery"]
    assert (first.headers["x-hallwatch-event"], second.headers["x-hallwatch-event"]) == ("alarm", "ack")
    body = first.json
    assert body["event"] == "alarm" and body["centre"] == "meizhou"
    assert body["delivery"] == first.headers["x-hallwatch-delivery"]
    assert (body["hall_name"], body["camera_name"]) == (
        "国家税务总局兴宁市税务局第一税务分厅办税服务厅",
        "大厅全景",
    )
    posted = body["alarm"]
    assert isinstance(posted, dict)
    assert posted["id"] == alarm.id and posted["kind"] == "offline" and posted["acknowledged_by"] is None
    assert posted["message"] == "camera offline: connection refused"
    acked = second.json
    assert isinstance(acked["event_id"], int) and isinstance(body["event_id"], int)
    assert acked["event"] == "ack" and acked["event_id"] > body["event_id"]
    assert isinstance(acked["alarm"], dict) and acked["alarm"]["acknowledged_by"] == "op-meizhou"
    # Tampering with the body breaks the signature.
    assert not verify(Post(first.headers, first.body.replace(b"offline", b"online!")))


async def test_each_centre_gets_its_own_halls_and_the_kinds_it_asked_for() -> None:
    async with receiving() as meizhou, receiving() as xingning:
        text = site(meizhou=hook(meizhou.port, kinds=["offline"], acks=False), xingning=hook(xingning.port))
        async with sending(text) as (centre, _):
            outage(centre, "legal-1")  # not a hall of Meizhou's
            outage(centre, "tax-1")  # offline, then online: Meizhou asked for offline only
            [_, offline] = centre.alarms({"tax"})
            centre.acknowledge(offline.id, "op", {"tax"})  # Meizhou asked for no acks
            centre.on_state("tax-1", S.ONLINE, S.STALLED, "no packet for 1 s")  # not asked for
            centre.on_state("tax-1", S.STALLED, S.OFFLINE, "connection refused")
            everything = await xingning.wait_posts(7)
            # Meizhou's posts go in order: once its last wanted event is in, nothing else is on its way.
            tax = await meizhou.wait_posts(2)
    assert [(p.json["event"], p.json["alarm"]["camera_id"], p.json["alarm"]["kind"]) for p in everything] == [
        ("alarm", "legal-1", "offline"),
        ("alarm", "legal-1", "online"),
        ("alarm", "tax-1", "offline"),
        ("alarm", "tax-1", "online"),
        ("ack", "tax-1", "offline"),
        ("alarm", "tax-1", "stalled"),
        ("alarm", "tax-1", "offline"),
    ]
    assert [(p.json["alarm"]["camera_id"], p.json["alarm"]["kind"]) for p in tax] == [
        ("tax-1", "offline"),
        ("tax-1", "offline"),
    ]
    assert len(meizhou.posts) == 2


# -- retries and refusals ------------------------------------------------------------------------


async def test_a_503_is_tried_again_with_the_same_delivery_and_the_streak_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="vms.webhooks")
    async with (
        receiving(answers=[503, 503, 200]) as receiver,
        sending(site(meizhou=hook(receiver.port))) as (centre, webhooks),
    ):
        sender = webhooks.senders["meizhou"]
        centre.on_state("tax-1", S.ONLINE, S.OFFLINE, None)
        posts = await receiver.wait_posts(3)
        await until(lambda: sender.status.delivered == 1)
        status = sender.status
    assert len({p.headers["x-hallwatch-delivery"] for p in posts}) == 1
    assert len({p.body for p in posts}) == 1 and all(verify(p) for p in posts)
    assert (status.delivered, status.failed, status.dropped, status.consecutive_failures) == (1, 0, 0, 0)
    assert status.last_failure == "HTTP 503"
    assert status.last_failure_at is not None and status.last_success_at is not None
    assert status.last_success_at > status.last_failure_at
    records = [r for r in caplog.records if r.name == "vms.webhooks"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    assert "HTTP 503" in records[0].getMessage() and "http://127.0.0.1:" in records[0].getMessage()
    assert "after 2 failed attempts" in records[1].getMessage()
    assert not any("t0ken" in r.getMessage() or SECRET in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("code", "tried_again"),
    [
        (400, False),
        (401, False),
        (404, False),
        (410, False),
        (408, True),
        (429, True),
        (500, True),
        (302, True),
    ],
)
async def test_which_answers_are_tried_again(code: int, tried_again: bool) -> None:
    delivered, failed, posts = (2, 0, 3) if tried_again else (1, 1, 2)
    async with (
        receiving(answers=[code]) as receiver,
        sending(site(meizhou=hook(receiver.port, kinds=["offline"]))) as (centre, webhooks),
    ):
        status = webhooks.senders["meizhou"].status
        outage(centre)
        outage(centre)
        first, second, *_ = await receiver.wait_posts(posts)
        await until(lambda: status.delivered == delivered)
    same = first.headers["x-hallwatch-delivery"] == second.headers["x-hallwatch-delivery"]
    assert same is tried_again
    assert (status.delivered, status.failed, len(receiver.posts)) == (delivered, failed, posts)
    assert status.last_failure is not None and status.last_failure.startswith(f"HTTP {code}")


async def test_an_event_still_failing_after_every_attempt_is_given_up() -> None:
    async with (
        receiving(answers=[500, 500, 500]) as receiver,
        sending(site(meizhou=hook(receiver.port, max_attempts=3, kinds=["offline"]))) as (centre, webhooks),
    ):
        outage(centre)
        outage(centre)
        posts = await receiver.wait_posts(4)
        await until(lambda: webhooks.senders["meizhou"].status.delivered == 1)
        status = webhooks.senders["meizhou"].status
    assert [p.json["delivery"] for p in posts].count(posts[0].json["delivery"]) == 3
    assert (status.delivered, status.failed, status.consecutive_failures) == (1, 1, 0)


# -- never in the way ----------------------------------------------------------------------------


async def test_a_dead_or_silent_receiver_delays_nothing_and_its_failures_show() -> None:
    async with receiving(silent=True) as silent, receiving() as healthy:
        text = site(
            meizhou=hook(
                closed_port(), queue_size=3, kinds=["offline"], backoff_initial=0.5, backoff_max=0.5
            ),
            xingning=hook(silent.port, timeout=2, max_attempts=1),
            emergency=hook(healthy.port),
        )
        async with sending(text) as (centre, webhooks):
            meizhou = webhooks.senders["meizhou"].status
            xingning = webhooks.senders["xingning"].status
            started = time.monotonic()
            outage(centre)
            assert time.monotonic() - started < 0.05
            await healthy.wait_posts(2, within=1.0)
            await silent.wait_posts(1)
            assert xingning.consecutive_failures == 0  # still waiting for its answer

            await until(lambda: meizhou.consecutive_failures >= 1)
            assert meizhou.last_failure == "cannot connect: Connection refused"
            # Its first alarm waits for the next attempt: five more overflow its queue of three.
            for _ in range(5):
                outage(centre)
            assert meizhou.dropped == 0  # the alarm centre only handed them over
            await until(lambda: meizhou.dropped == 2)
            assert webhooks.senders["meizhou"].queued == 3
            await healthy.wait_posts(12, within=1.0)

            await until(lambda: xingning.failed == 1, within=4)
            assert xingning.last_failure == "no answer within 2 s"
            stopping = time.monotonic()
            await webhooks.stop()  # while the silent receiver holds a post again
            assert time.monotonic() - stopping < 0.5
        assert (meizhou.delivered, xingning.delivered) == (0, 0)
        assert webhooks.senders["emergency"].status.delivered == 12


async def test_a_reader_ended_for_falling_behind_replays_what_it_missed() -> None:
    async with (
        receiving() as receiver,
        sending(site(xingning=hook(receiver.port)), backlog=3) as (centre, webhooks),
    ):
        for _ in range(5):  # ten events in one go, more than the centre lets a subscriber fall behind
            outage(centre, "legal-1")
        posts = await receiver.wait_posts(10)
        assert webhooks.senders["xingning"].status.dropped == 0
    ids = [p.json["event_id"] for p in posts]
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert [p.json["alarm"]["kind"] for p in posts] == ["offline", "online"] * 5


# -- the service ---------------------------------------------------------------------------------


async def test_the_service_posts_its_alarms_and_shows_their_fate_to_the_centres_admins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with receiving(answers=[503]) as receiver:
        # Nothing listens on port 9: the camera never comes up, a real alarm at start-up.
        text = site(meizhou=hook(receiver.port), tax_url="rtsp://127.0.0.1:9/tax")
        async with serve_app(text) as running:
            refused, post = await receiver.wait_posts(2, within=15)
            assert refused.body == post.body and verify(post)
            assert post.json["alarm"]["camera_id"] == "tax-1"
            sender = running.app.state.webhooks.senders["meizhou"]
            await until(lambda: sender.status.delivered == 1)
            admin = await running.admin("meizhou")
            res = await admin.get("/api/v1/webhooks")
            assert res.status_code == 200, res.text
            [shown] = res.json()
            assert shown["centre"] == "meizhou" and shown["target"] == f"http://127.0.0.1:{receiver.port}"
            assert shown["delivered"] == 1 and shown["last_failure"] == "HTTP 503"
            assert shown["kinds"] == "all" and shown["acks"] is True
            assert "t0ken" not in res.text and SECRET not in res.text
            other = await running.admin("xingning")
            assert (await other.get("/api/v1/webhooks")).json() == []
            operator = await running.user("meizhou", "operator")
            assert (await operator.get("/api/v1/webhooks")).status_code == 403
            assert (await running.http.get("/api/v1/webhooks")).status_code == 401
            metrics = (await running.http.get("/metrics")).text
            assert 'hallwatch_webhook_deliveries_total{centre="meizhou",result="delivered"}' in metrics
            assert 'hallwatch_webhook_consecutive_failures{centre="meizhou"} 0.0' in metrics
            ours = [line for line in metrics.splitlines() if line.startswith("hallwatch_webhook")]
            assert ours and not any("xingning" in line for line in ours)
    assert not any(SECRET in r.getMessage() or "t0ken" in r.getMessage() for r in caplog.records)


# -- configuration -------------------------------------------------------------------------------


@pytest.fixture
def site_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield Path("site.yaml")


def problems(site_file: Path, text: str) -> list[str]:
    site_file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(site_file)
    return str(caught.value).splitlines()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            '      url: "http://127.0.0.1:8/hook"',
            "site.yaml:12:5: centres[0].webhook: missing required key 'secret' (Shared secret (16 characters "
            "or more) that signs every post (X-Hallwatch-Signature)); add a 'secret:' line to this entry",
        ),
        (
            '      url: "http://127.0.0.1:8/hook"\n      secret: short-s3cret',
            "site.yaml:14:7: centres[0].webhook.secret: the secret must be at least 16 characters; "
            "generate one, e.g. with: openssl rand -hex 32",
        ),
        (
            f'      url: "ftp://127.0.0.1/t0ken"\n      secret: {SECRET}',
            "site.yaml:13:7: centres[0].webhook.url: a webhook URL starts with https:// (or http:// inside "
            "a trusted network)",
        ),
        (
            f'      url: "https://duty:t0ken@duty.example.org/"\n      secret: {SECRET}',
            "site.yaml:13:7: centres[0].webhook.url: the URL contains a user name or password; remove "
            "'user:password@': the receiver checks the X-Hallwatch-Signature made with secret instead",
        ),
        (
            f'      url: "https://duty.example.org/"\n      secret: {SECRET}\n      kinds: [offline, ofline]',
            "site.yaml:15:7: centres[0].webhook.kinds: 'ofline' is not an alarm kind; use all or some of: "
            "offline, stalled, online, recording_failed, recording_resumed, recording_space, dark, "
            "overexposed, covered, blurred, frozen, moved, colour_cast, noisy, picture_ok",
        ),
        (
            f'      url: "https://duty.example.org/"\n      secret: {SECRET}\n'
            "      backoff_initial: 10\n      backoff_max: 5",
            "site.yaml:12:5: centres[0].webhook: backoff_max (5) is shorter than backoff_initial (10); make "
            "backoff_max at least backoff_initial",
        ),
        (
            f'      url: "https://duty.example.org/"\n      secret: {SECRET}\n      retries: 3',
            "site.yaml:15:7: centres[0].webhook: unknown key 'retries'; allowed keys: url, secret, kinds, "
            "acks, timeout, max_attempts, backoff_initial, backoff_max, queue_size",
        ),
        (
            f'      url: "https://duty.example.org/"\n      secret: {SECRET}\n      max_attempts: 0',
            "site.yaml:15:7: centres[0].webhook.max_attempts: must be at least 1, found 0",
        ),
    ],
)
def test_a_wrong_webhook_is_named_with_its_line(site_file: Path, lines: str, expected: str) -> None:
    found = problems(site_file, site(meizhou=lines))
    assert found == [expected]
    assert not any("t0ken" in line for line in found)


def test_a_webhook_is_optional_and_its_defaults_are_stated() -> None:
    config = parse_config(site(meizhou=f'      url: "https://duty.example.org/p"\n      secret: {SECRET}'))
    settings = config.centre("meizhou").webhook
    assert settings is not None and config.centre("xingning").webhook is None
    assert (settings.kinds, settings.acks, settings.timeout, settings.max_attempts) == ("all", True, 5, 6)
    assert (settings.backoff_initial, settings.backoff_max, settings.queue_size) == (1, 60, 1000)
    assert settings.target == "https://duty.example.org:443"
    assert SECRET not in repr(config) and SECRET not in config.model_dump_json()
