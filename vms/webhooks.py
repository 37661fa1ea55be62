"""Alarm webhooks: each centre's alarms posted to its own address, signed, retried, never in the way.

A centre with ``webhook:`` in its configuration (:class:`vms.config_webhook.WebhookSettings`)
gets a :class:`WebhookSender`, so an alarm reaches the centre's duty phone system or
its own platform even when no dashboard is open. Each sender subscribes to the
:class:`~vms.alarms.AlarmCentre` for the centre's halls only and posts every new alarm
(``alarm``) and acknowledgement (``ack``) the settings ask for, one at a time, in order.
When several instances share the alarms (:mod:`vms.alarms_shared`), each event is posted
by the instance that wrote it (raised the alarm, or took the acknowledgement) only, so
the centre gets it once; should that instance die before posting, it is not posted.

The request is ``POST`` with ``Content-Type: application/json`` and this body::

    {"event": "alarm", "event_id": 1761000000123, "delivery": "9f0c...", "centre": "meizhou",
     "hall_name": "...", "camera_name": "...", "alarm": { the alarm as GET /api/v1/alarms gives it }}

``alarm`` is the alarm's JSON as it is, whatever its kind. The headers:

* ``X-Hallwatch-Event``: ``alarm`` or ``ack``;
* ``X-Hallwatch-Delivery``: a unique id, the same on every attempt of one delivery
  (the receiver drops a repeat it has already seen);
* ``X-Hallwatch-Timestamp``: the attempt's time in Unix seconds;
* ``X-Hallwatch-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the
  webhook's ``secret``, of the timestamp, a dot and the raw body.

The receiver checks a post like this (Python)::

    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected, signature) and abs(time.time() - int(timestamp)) < 300

using the body's bytes as received, before parsing them.

An answer 2xx is a delivery. Any other 4xx but 408 and 429 is a refusal, not tried
again; anything else (other answers, no answer within ``timeout``, no connection) is
tried again after ``backoff_initial`` seconds, doubling up to ``backoff_max`` (or the
receiver's ``Retry-After``, within that), ``max_attempts`` times in all. Redirects
are not followed, and no proxy from the environment is used.

Never blocking: the alarm centre only hands each event to the sender's reader, which
moves it at once into the sender's own queue of ``queue_size``; while the receiver is
down that queue fills and its oldest entry is dropped (and counted). A reader that
the alarm centre ends for falling behind (a burst of events in one go) subscribes
again from its last event and replays the missed ones from the centre's log.

Failures are visible: :class:`WebhookStatus` (deliveries, failures, drops, the last
success and the last failure with our own reason, never the receiver's words) is
served to the centre's admins (``GET /api/v1/webhooks``) and to Prometheus
(:class:`vms.metrics.WebhookCollector`); the log says when a failure streak begins
and when it ends, not each attempt. Neither the secret nor the URL's path is logged.

Event loop only. Each sender owns two tasks (its reader and its poster), started with
the service and cancelled by ``stop()``; what is still queued then is not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from vms.alarm_events import AlarmEvent, Subscription
from vms.alarms import AlarmCentre
from vms.config import Camera, Config, Hall
from vms.config_webhook import WebhookSettings

log = logging.getLogger(__name__)
# httpx logs each request's whole URL (a token in its query) and the receiver's reason phrase at INFO.
logging.getLogger("httpx").setLevel(logging.WARNING)

EVENT_HEADER = "X-Hallwatch-Event"
DELIVERY_HEADER = "X-Hallwatch-Delivery"
TIMESTAMP_HEADER = "X-Hallwatch-Timestamp"
SIGNATURE_HEADER = "X-Hallwatch-Signature"
USER_AGENT = "Hallwatch-Webhook/1"

RETRIED_CLIENT_ERRORS = frozenset({408, 429})
"""4xx answers that mean "later", not "never"."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Hallwatch-Signature`` value of a post: see the module docstring."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class WebhookStatus:
    """How a centre's webhook fares since the service started."""

    centre_id: str
    target: str
    """``scheme://host:port`` of the URL, nothing more."""
    delivered: int = 0
    failed: int = 0
    """Events given up: refused (4xx) or still failing after ``max_attempts``."""
    dropped: int = 0
    """Events pushed out of a full queue before their turn."""
    consecutive_failures: int = 0
    """Failed attempts since the last delivery."""
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure: str | None = None
    """Our own words for the last failed attempt (never the receiver's answer)."""


@dataclass(frozen=True, slots=True)
class _Delivery:
    event: AlarmEvent
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class _Attempt:
    delivered: bool
    retry: bool = False
    reason: str = ""
    retry_after: float | None = None


class WebhookSender:
    """Posts one centre's alarms to its webhook; see the module docstring."""

    def __init__(
        self, alarms: AlarmCentre, config: Config, centre_id: str, settings: WebhookSettings
    ) -> None:
        self.settings = settings
        self.status = WebhookStatus(centre_id, settings.target)
        self._alarms = alarms
        self._config = config
        self._hall_ids = frozenset(hall.id for hall in config.halls_for_centre(centre_id))
        self._queue: deque[_Delivery] = deque(maxlen=settings.queue_size)
        self._wake = asyncio.Event()
        self._dropping = False
        self._given_up_in_streak = 0
        self._client: httpx.AsyncClient | None = None
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def queued(self) -> int:
        """Events waiting for their turn (not counting the one being posted)."""
        return len(self._queue)

    def start(self) -> None:
        """Subscribe and start posting. Idempotent."""
        if self._tasks:
            return
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=self.settings.timeout,
            headers={"User-Agent": USER_AGENT},
        )
        # Subscribed here, not in the task: no event raised from now on is missed.
        sub = self._sub = self._alarms.subscribe(self._hall_ids)
        name = f"webhook-{self.status.centre_id}"
        self._tasks = [
            asyncio.create_task(self._guarded(functools.partial(self._follow, sub)), name=f"{name}-reader"),
            asyncio.create_task(self._guarded(self._post_all), name=f"{name}-poster"),
        ]

    async def stop(self) -> None:
        """Stop at once (a post under way is abandoned) and close the connection. Idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sub is not None:
            self._sub.close()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _guarded(self, work: Callable[[], Awaitable[None]]) -> None:
        # A callable, not a coroutine: a task cancelled before it starts leaves none unawaited.
        try:
            await work()
        except Exception:
            log.exception("the alarm webhook of centre %s stopped on an error", self.status.centre_id)

    # -- reading the centre's events -------------------------------------------------

    async def _follow(self, sub: Subscription) -> None:
        """Move the centre's events into the queue; subscribe again after falling behind."""
        last = sub.position
        while True:
            try:
                if sub.resync:
                    log.warning(
                        "the alarm webhook of centre %s fell too far behind: the events after %d "
                        "are no longer kept and are not sent",
                        self.status.centre_id,
                        last,
                    )
                    last = sub.position
                for missed in sub.replay:
                    self._enqueue(missed)
                    last = missed.seq
                while (event := await sub.get()) is not None:
                    self._enqueue(event)
                    last = event.seq
            finally:
                sub.close()
            if not sub.overflowed:
                return  # the alarm centre stopped
            sub = self._sub = self._alarms.subscribe(self._hall_ids, str(last))

    def _enqueue(self, event: AlarmEvent) -> None:
        if not event.local or not self.settings.wants(event.type, event.data.get("kind")):
            return
        if len(self._queue) == self._queue.maxlen:
            self.status.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "the alarm webhook of centre %s has %d events waiting: dropping the oldest",
                    self.status.centre_id,
                    len(self._queue),
                )
        self._queue.append(_Delivery(event))
        self._wake.set()

    # -- posting ---------------------------------------------------------------------

    async def _post_all(self) -> None:
        while True:
            while not self._queue:
                self._dropping = False
                self._wake.clear()
                await self._wake.wait()
            await self._deliver(self._queue.popleft())

    async def _deliver(self, delivery: _Delivery) -> None:
        body = self._body(delivery)
        for attempt in range(1, self.settings.max_attempts + 1):
            outcome = await self._attempt(delivery, body)
            if outcome.delivered:
                self._succeeded()
                return
            self._attempt_failed(outcome.reason)
            if not outcome.retry or attempt == self.settings.max_attempts:
                break
            await asyncio.sleep(self._backoff(attempt, outcome.retry_after))
        self.status.failed += 1
        self._given_up_in_streak += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        wait = self.settings.backoff_initial * 2.0 ** (attempt - 1)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.settings.backoff_max)

    def _body(self, delivery: _Delivery) -> bytes:
        event = delivery.event
        payload = {
            "event": event.type,
            "event_id": event.seq,
            "delivery": delivery.id,
            "centre": self.status.centre_id,
            "hall_name": _name(self._config.hall, event.hall_id),
            "camera_name": _name(self._config.camera, event.data.get("camera_id")),
            "alarm": event.data,
        }
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    async def _attempt(self, delivery: _Delivery, body: bytes) -> _Attempt:
        assert self._client is not None, "started"
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: delivery.event.type,
            DELIVERY_HEADER: delivery.id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self.settings.secret.get_secret_value().encode(), timestamp, body),
        }
        try:
            async with (
                asyncio.timeout(self.settings.timeout),
                self._client.stream("POST", self.settings.url, content=body, headers=headers) as response,
            ):
                return _judge(response)
        except (TimeoutError, httpx.TimeoutException):
            return _Attempt(False, retry=True, reason=f"no answer within {self.settings.timeout:g} s")
        except httpx.HTTPError as err:
            return _Attempt(False, retry=True, reason=_transport_reason(err))

    def _succeeded(self) -> None:
        status = self.status
        if status.consecutive_failures:
            log.info(
                "the alarm webhook of centre %s delivers again, after %d failed attempts "
                "(%d events not delivered)",
                status.centre_id,
                status.consecutive_failures,
                self._given_up_in_streak,
            )
        status.delivered += 1
        status.consecutive_failures = 0
        status.last_success_at = datetime.now(UTC)
        self._given_up_in_streak = 0

    def _attempt_failed(self, reason: str) -> None:
        status = self.status
        status.consecutive_failures += 1
        status.last_failure_at = datetime.now(UTC)
        status.last_failure = reason
        if status.consecutive_failures == 1:
            log.warning(
                "the alarm webhook of centre %s (%s) fails: %s; trying on, its recovery will be logged",
                status.centre_id,
                status.target,
                reason,
            )


def _name(lookup: Callable[[str], Hall | Camera], item_id: object) -> str | None:
    """The display name of a hall or camera from the configuration, if it has one."""
    if not isinstance(item_id, str):
        return None
    with contextlib.suppress(KeyError):
        return lookup(item_id).name
    return None


def _judge(response: httpx.Response) -> _Attempt:
    code = response.status_code
    if 200 <= code < 300:
        return _Attempt(True)
    if 400 <= code < 500 and code not in RETRIED_CLIENT_ERRORS:
        return _Attempt(False, reason=f"HTTP {code}: refused, not tried again")
    reason = f"HTTP {code}: redirects are not followed" if 300 <= code < 400 else f"HTTP {code}"
    return _Attempt(
        False, retry=True, reason=reason, retry_after=_seconds(response.headers.get("retry-after"))
    )


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` given in seconds (a date is ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _transport_reason(err: httpx.HTTPError) -> str:
    """Our own words for a failure below HTTP; the exception's text may hold the URL."""
    what = "cannot connect" if isinstance(err, httpx.ConnectError) else "the connection failed"
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "the receiver's TLS certificate is not trusted"
        if isinstance(cause, ssl.SSLError):
            return "the TLS handshake failed"
        if isinstance(cause, OSError) and cause.errno:
            return f"{what}: {os.strerror(cause.errno)}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, httpx.RemoteProtocolError):
        return "the receiver closed the connection or did not answer in HTTP"
    return f"{what} ({type(err).__name__})"


class Webhooks:
    """The senders of every centre that has a webhook: started and stopped together."""

    def __init__(self, config: Config, alarms: AlarmCentre) -> None:
        self.senders = {
            centre.id: WebhookSender(alarms, config, centre.id, centre.webhook)
            for centre in config.centres
            if centre.webhook is not None
        }

    def start(self) -> None:
        for sender in self.senders.values():
            sender.start()

    async def stop(self) -> None:
        await asyncio.gather(*(sender.stop() for sender in self.senders.values()))
