"""The ingest supervisor: one task per camera that keeps its source flowing into its hub.

Each camera runs a small state machine::

    starting ──▶ online ⇄ stalled
       ▲            │        │
       └─ backoff ◀─ offline ◀┘

* ``starting``: a connection attempt after start-up or after a backoff wait,
  until the first video packet. A camera is not offline merely because its first
  packet is late: the attempt may take ``open_timeout`` seconds to open the
  source (connect and set up; a demo card's first encode or a file's first read
  count as opening too, and on a busy machine, just started, they queue behind
  each other), and then ``first_packet_timeout`` seconds from the source saying
  it is open (:meth:`~streams.sources.base.Source.opened`) to its first packet.
  A source that fails says so at once (refused, login refused, 404...) and is
  offline without waiting; one that never opens is offline after
  ``open_timeout``;
* ``online``: packets are flowing;
* ``stalled``: no packet for ``stall_timeout`` seconds (the watchdog fired; a
  frozen camera keeps its TCP connection open, so we cannot rely on the
  source's own read timeout); the session is torn down and one immediate
  reconnect is tried while the state stays ``stalled``;
* ``offline``: the source failed or ended; the next attempt waits a capped,
  jittered exponential backoff that resets after a long healthy run;
* ``disabled``: configured off; nothing runs;
* ``idle``: an on-demand camera (:attr:`IngestPolicy.on_demand`) that nobody
  needs now: no session is open. Its hub's first subscriber (a viewer, or
  anyone waiting for the stream's description, which counts as demand) opens
  one; the state stays ``idle`` until its first video packet (``online``) or
  its failure (``offline``: someone wanted the camera and did not get it). A
  session that has had no subscriber for ``idle_timeout`` seconds closes and
  the camera is ``idle`` again, its GOP cache emptied so that nobody is served a
  stale picture. Only a healthy session goes idle: a camera that failed keeps
  its retries and backoff, watched or not, until a session gets a packet again;
* ``unowned``: the camera is pulled from nowhere (:meth:`Ingest.repoint` with no
  source): another instance is to own it and none does yet. The supervisor
  waits for the next repoint and opens nothing.

:meth:`Ingest.repoint` changes where the camera is pulled from (its own source,
another instance's re-serve, nowhere) and how (always or on demand): the running
session closes as a reconnect would, the hub and its subscribers stay, and the
counters go on.

What users see of a failure (``last_error``, the listener's error and log lines
at INFO and above) is fixed text of our own (:mod:`streams.sources.failures`),
never the camera's words; the source's detailed message goes to the debug log,
redacted of anything resembling a credential.

Every ingest is its own asyncio task on the event loop, so a dead, frozen or
unreachable camera never delays another. Waiting on the stop event with a
timeout is the backoff sleep, so stopping is immediate.

A source asked for audio yields audio frames among the video; they go to the
camera's audio hub (or nowhere without one). The state machine, the watchdog
and the counters follow the video only: a camera whose picture froze is
stalled even while its sound flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from streams.errors import SourceError
from streams.hub import Hub
from streams.redact import credential_forms, redact_text
from streams.sources.base import Source
from streams.sources.failures import public_reason

log = logging.getLogger(__name__)


class IngestState(enum.StrEnum):
    STARTING = "starting"
    ONLINE = "online"
    STALLED = "stalled"
    OFFLINE = "offline"
    DISABLED = "disabled"
    IDLE = "idle"
    UNOWNED = "unowned"

    @property
    def available(self) -> bool:
        """Online, or idle (pulled on demand: whoever plays it connects it)."""
        return self in (IngestState.ONLINE, IngestState.IDLE)


@dataclass(frozen=True, slots=True)
class IngestPolicy:
    """Timeouts and backoff of one ingest; fields rather than constants so tests tune them."""

    stall_timeout: float = 5.0
    """No video packet for this long after the last one: stalled."""
    first_packet_timeout: float = 10.0
    """No video packet for this long after the source said it is open: offline."""
    open_timeout: float = 20.0
    """A session whose source has neither said it is open nor sent a video packet this
    long after the attempt began: offline. The site's ``connect_timeout + offline_after``
    when that is longer (20 s with the defaults); it only matters for sources that hang
    without failing (an RTSP source bounds each request by its own connect timeout)."""
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    backoff_factor: float = 2.0
    backoff_jitter: float = 0.2
    backoff_reset_after: float = 30.0
    on_demand: bool = False
    """Connect only while the hub has subscribers (see ``idle`` in the module docstring)."""
    idle_timeout: float = 10.0
    """An on-demand session without subscribers for this long is closed."""

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before the ``attempt``-th retry (1-based)."""
        base = min(self.backoff_max, self.backoff_initial * self.backoff_factor ** max(0, attempt - 1))
        return base * (1.0 + rng.uniform(-self.backoff_jitter, self.backoff_jitter))


StateListener = Callable[[str, IngestState, IngestState, str | None], None]
"""Called on the event loop with (camera id, old state, new state, last error)."""


class _Stalled(Exception):
    pass


class _Unwatched(Exception):
    pass


class Ingest:
    """Pulls one camera into its hub and keeps doing so. See the module docstring."""

    def __init__(
        self,
        camera_id: str,
        source: Source,
        hub: Hub,
        policy: IngestPolicy,
        *,
        enabled: bool = True,
        listener: StateListener | None = None,
        secrets: list[str] | None = None,
        audio_hub: Hub | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.source: Source | None = source
        """Where packets come from; None while the camera is pulled from nowhere (``unowned``)."""
        self.hub = hub
        self.audio_hub = audio_hub
        self.policy = policy
        self.enabled = enabled
        self._listener = listener
        self._extra_secrets = [s for s in (secrets or []) if s]
        self._secrets = self._secrets_of(source)
        self._rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.state = IngestState.STARTING if enabled else IngestState.DISABLED
        self._wanted = asyncio.Event()
        """Set while the hub has subscribers (on-demand cameras only)."""
        self._unwatched_since: float | None = None
        """Since when (monotonic) the hub has had no subscriber; None while it has some."""
        self._follow_demand()
        if policy.on_demand and enabled:
            self.state = IngestState.IDLE
        self.state_since = time.time()
        self.reconnects = 0
        self.sessions_opened = 0
        self.stalls = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.next_attempt_at: float | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name=f"ingest:{self.camera_id}")

    async def stop(self) -> None:
        """Stop reading; idempotent. Returns once the source is closed."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def repoint(self, source: Source | None, policy: IngestPolicy) -> None:
        """Pull from ``source`` under ``policy`` from now on; ``None``: from nowhere (``unowned``).

        The open session, if any, is closed first (as a reconnect closes it). The hub's GOP
        cache is emptied at once, so that no new subscriber is served a picture of the old
        source, and the next session's packets continue its timeline
        (:meth:`~streams.hub.Hub.discontinuity`). A running supervisor restarts at once
        on the new source; one not started yet (or stopped) stays so.
        """
        running = self._task is not None
        await self.stop()
        self.source, self.policy = source, policy
        self._secrets = self._secrets_of(source)
        self._unwatched_since = None
        self._follow_demand()
        self.next_attempt_at = None
        self.hub.discontinuity()
        if self.audio_hub is not None:
            self.audio_hub.discontinuity()
        if self.enabled:
            if source is None:
                self._set_state(IngestState.UNOWNED)
            else:
                self._set_state(IngestState.IDLE if policy.on_demand else IngestState.STARTING)
        if running:
            self.start()

    def _secrets_of(self, source: Source | None) -> list[str]:
        """What to redact from this ingest's log lines: longest first."""
        found = set(self._extra_secrets)
        if source is not None:
            found |= set(credential_forms(source.options.username, source.options.password))
        return sorted(found, key=len, reverse=True)

    # -- the loop -----------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            source = self.source
            if source is None:  # unowned: nothing to pull until repointed (which restarts this task)
                await self._stop.wait()
                return
            if self.state is IngestState.IDLE:
                failures = 0
                await self._wanted.wait()
            started = time.monotonic()
            was_online = await self._session(source)
            healthy_for = time.monotonic() - started
            if self._stop.is_set():
                return
            if self.state is IngestState.IDLE:
                continue
            self.reconnects += 1
            if was_online and healthy_for >= self.policy.backoff_reset_after:
                failures = 0
            if self.state is IngestState.STALLED and was_online:
                continue  # one immediate retry after a stall, state stays "stalled"
            if was_online and failures == 0:
                failures = 1
                continue  # a healthy stream ended: retry at once
            failures += 1
            delay = self.policy.backoff(failures, self._rng)
            self.next_attempt_at = time.time() + delay
            log.info("%s: retrying in %.1f s (attempt %d)", self.camera_id, delay, failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            self.next_attempt_at = None
            if not self._stop.is_set():
                self._set_state(IngestState.STARTING)

    async def _session(self, source: Source) -> bool:
        """One connection: returns whether any video packet arrived."""
        got_packet = opened = False
        self.sessions_opened += 1
        self.hub.discontinuity()
        audio_hub = self.audio_hub
        if audio_hub is not None:
            audio_hub.discontinuity()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.open_timeout
        watchdog: asyncio.Timeout | None = None

        def on_open() -> None:  # the source calls this from inside anext(), on this task
            nonlocal opened, deadline
            if not opened and not got_packet:
                opened = True
                deadline = loop.time() + self.policy.first_packet_timeout
                if watchdog is not None and not watchdog.expired():
                    watchdog.reschedule(deadline)

        source.open_listener = on_open
        packets = source.packets()
        try:
            while True:
                try:
                    if loop.time() >= deadline:  # only audio came since the last video
                        raise TimeoutError
                    async with asyncio.timeout_at(deadline) as watchdog:
                        packet = await anext(packets)
                    watchdog = None
                except TimeoutError:
                    raise _Stalled from None
                if packet.is_audio:
                    if audio_hub is not None:
                        if audio_hub.audio is not source.audio_info:
                            audio_hub.audio = source.audio_info
                        audio_hub.publish(packet)
                    continue
                deadline = loop.time() + self.policy.stall_timeout
                if not got_packet:
                    got_packet = True
                    if audio_hub is not None:  # the source knows by now whether there is audio
                        audio_hub.audio = source.audio_info
                    self._set_state(IngestState.ONLINE)
                    log.info("%s: online", self.camera_id)
                self.hub.publish(packet)
                if self._unwatched():
                    raise _Unwatched
        except _Unwatched:
            self._go_idle()
        except StopAsyncIteration:
            self._fail(IngestState.OFFLINE, "the stream ended")
        except _Stalled:
            if got_packet:
                self.stalls += 1
                self._fail(IngestState.STALLED, f"no packet for {self.policy.stall_timeout:g} s")
            elif opened:
                self._fail(IngestState.OFFLINE, f"no packet within {self.policy.first_packet_timeout:g} s")
            else:
                self._fail(IngestState.OFFLINE, f"not connected within {self.policy.open_timeout:g} s")
        except SourceError as err:
            self._fail(IngestState.OFFLINE, public_reason(err), detail=str(err))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug in a source must not kill the supervisor
            # The message may quote the camera: the traceback's frames at ERROR, the message at DEBUG.
            log.error(
                "%s: unexpected %s from the source:\n%s",
                self.camera_id,
                type(err).__name__,
                "".join(traceback.format_tb(err.__traceback__)).rstrip(),
            )
            self._fail(IngestState.OFFLINE, public_reason(err), detail=str(err))
        finally:
            source.open_listener = None
            with contextlib.suppress(Exception):
                await packets.aclose()
        return got_packet

    # -- demand (on-demand cameras) ---------------------------------------------------

    def _follow_demand(self) -> None:
        """Watch the hub's subscribers if the policy pulls on demand, and stop watching if not."""
        if self.policy.on_demand:
            self.hub.on_subscribers = self._on_subscribers
            self._on_subscribers(self.hub.subscriber_count)
        elif self.hub.on_subscribers == self._on_subscribers:
            self.hub.on_subscribers = None

    def _on_subscribers(self, count: int) -> None:
        """The hub's subscriber count changed: called on the event loop, kept cheap."""
        if count:
            self._unwatched_since = None
            self._wanted.set()
        elif self._unwatched_since is None:
            self._unwatched_since = time.monotonic()
            self._wanted.clear()

    def _unwatched(self) -> bool:
        """Whether the hub has had no subscriber for ``idle_timeout`` (never when not on demand)."""
        since = self._unwatched_since
        return since is not None and time.monotonic() - since >= self.policy.idle_timeout

    def _go_idle(self) -> None:
        log.info("%s: nobody watched for %g s, disconnected", self.camera_id, self.policy.idle_timeout)
        self.hub.discontinuity()
        if self.audio_hub is not None:
            self.audio_hub.discontinuity()
        self._set_state(IngestState.IDLE)

    # -- state ---------------------------------------------------------------------

    def _fail(self, state: IngestState, error: str, *, detail: str | None = None) -> None:
        """Record a failure: ``error`` is our own text for users; ``detail`` may quote the
        camera and goes to the debug log only, redacted."""
        if detail:
            log.debug("%s: %s", self.camera_id, redact_text(detail, self._secrets))
        self.last_error = error
        self.last_error_at = time.time()
        if state is not self.state:
            log.warning("%s: %s (%s)", self.camera_id, state.value, error)
        self._set_state(state)

    def _set_state(self, state: IngestState) -> None:
        old = self.state
        if state is old:
            return
        self.state = state
        self.state_since = time.time()
        if self._listener is not None:
            try:
                self._listener(self.camera_id, old, state, self.last_error)
            except Exception:
                log.exception("%s: state listener failed", self.camera_id)
