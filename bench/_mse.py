"""MSE viewers for the playback benchmark: WebSocket clients of ``mse.ws`` that decode nothing.

A :class:`MseViewer` connects to ``/api/v1/cameras/{id}/mse.ws`` as the
dashboard does (the session cookie of a login, or a bearer token, and an
``Origin`` of the service itself; permessage-deflate offered as browsers offer
it), reads every message, and counts one access unit per ``moof`` + ``mdat``
message. It reads the test camera's burnt-in clock out of the fragment's
``mdat``, where the NAL units are length-prefixed (:func:`fragment_facts`), and
the decode time out of ``tfdt``, whose jumps tell the access units the relay
skipped for this viewer. It keeps the init segment and the first fragment, so
that :func:`decode_keyframe` can decode that keyframe with PyAV, to time a
decodable picture.

Event loop of a viewer process; each viewer owns one reader task, which
:meth:`MseViewer.close` cancels and awaits. :func:`decode_keyframe` blocks: run
it in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from _units import UnitTracker, read_clock

_MAX_MESSAGE = 16 * 2**20
_NALS_SCANNED = 16
"""NAL units looked at per sample: the clock SEI comes before the first slice."""
_SEI, _IDR = 6, 5
_TICKS_PER_FRAME = 90_000 // 25


def fragment_facts(data: bytes) -> tuple[int | None, bool, int | None]:
    """(burnt-in clock in ns, holds an IDR slice, ``tfdt`` decode time) of one ``moof`` + ``mdat``."""
    clock: int | None = None
    idr = False
    decode_time: int | None = None
    at = 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        if size < 8:
            break
        if kind == b"moof":
            t = data.find(b"tfdt", at, at + size)
            if t >= 0:
                wide = data[t + 4] == 1
                decode_time = int.from_bytes(data[t + 8 : t + (16 if wide else 12)], "big")
        elif kind == b"mdat":
            clock, idr = _scan_sample(data, at + 8, min(at + size, len(data)))
        at += size
    return clock, idr, decode_time


def _scan_sample(data: bytes, at: int, end: int) -> tuple[int | None, bool]:
    """Walk the sample's 4-byte length-prefixed NAL units up to the first slice."""
    clock = None
    for _ in range(_NALS_SCANNED):
        if at + 5 > end:
            break
        size = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4] & 0x1F
        if kind == _SEI and clock is None:
            clock = read_clock(data[at + 4 : at + 4 + min(size, 64)])
        elif 1 <= kind <= 5:
            return clock, kind == _IDR
        at += 4 + size
    return clock, False


def _avcc(init: bytes) -> bytes:
    """The ``avcC`` box's payload (decoder configuration) of an init segment."""
    at = init.find(b"avcC")
    if at < 4:
        raise ValueError("the init segment has no avcC box")
    size = int.from_bytes(init[at - 4 : at], "big")
    return init[at + 4 : at - 4 + size]


def _mdat(fragment: bytes) -> bytes:
    at = 0
    while at + 8 <= len(fragment):
        size = int.from_bytes(fragment[at : at + 4], "big")
        if size < 8:
            break
        if fragment[at + 4 : at + 8] == b"mdat":
            return fragment[at + 8 : at + size]
        at += size
    raise ValueError("the fragment has no mdat box")


def decode_keyframe(init: bytes, fragment: bytes) -> tuple[int, int]:
    """Decode one fragment's sample with PyAV as a browser's decoder would get it; (width, height).

    Blocking: call it in a thread. Raises ValueError when no picture comes out.
    """
    import av

    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = _avcc(init)
    frames = list(ctx.decode(av.Packet(_mdat(fragment))))
    frames += ctx.decode(None)  # a decoder with frame threads holds the picture until flushed
    if not frames:
        raise ValueError("the first fragment decoded to no picture")
    return frames[0].width, frames[0].height


class MseViewer:
    """One WebSocket client of ``mse.ws`` (see the module docstring)."""

    def __init__(self, base_url: str, camera: str, headers: dict[str, str], *, deflate: bool) -> None:
        self.camera = camera
        self.units = UnitTracker()
        self.url = "ws" + base_url.removeprefix("http") + f"/api/v1/cameras/{camera}/mse.ws"
        self._origin = base_url
        self._headers = headers
        self._deflate = deflate
        self.opened: float | None = None
        """``time.monotonic()`` just before connecting."""
        self.connected: float | None = None
        self.init_at: float | None = None
        self.first_at: float | None = None
        """When the first fragment (after the init segment) arrived."""
        self.deflate_used = False
        self.init: bytes | None = None
        self.first: bytes | None = None
        self.first_key: bool | None = None
        self.first_clock: int | None = None
        self.error: str | None = None
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self._got_first = asyncio.Event()
        self._init_next = False
        self._last_dts: int | None = None

    async def join(self, timeout: float) -> None:
        """Connect and start reading; returns once the handshake is done."""
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

        self.opened = time.monotonic()
        self._ws = await connect(
            self.url,
            origin=Origin(self._origin),
            additional_headers=self._headers,
            compression="deflate" if self._deflate else None,
            max_size=_MAX_MESSAGE,
            open_timeout=timeout,
            close_timeout=2.0,
            ping_interval=None,
            proxy=None,
        )
        self.connected = time.monotonic()
        extensions = self._ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        self.deflate_used = "permessage-deflate" in extensions
        self._task = asyncio.create_task(self._read(), name=f"mse viewer {self.camera}")

    async def first_fragment(self, timeout: float) -> None:
        """Until the first fragment has arrived; raises TimeoutError, or RuntimeError if the socket ended."""
        async with asyncio.timeout(timeout):
            await self._got_first.wait()
        if self.first is None:
            raise RuntimeError(self.error or "the socket closed before the first fragment")

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self._ws:
                now, wall = time.monotonic(), time.time_ns()
                if isinstance(message, str):
                    if json.loads(message).get("type") == "init":
                        self._init_next = True
                    continue
                if self._init_next:
                    self._init_next = False
                    if self.init is None:
                        self.init, self.init_at = message, now
                    continue
                self._fragment(message, now, wall)
            self.error = "the service closed the socket"
        except ConnectionClosed as err:
            self.error = f"closed: {err}"
        except Exception as err:  # reported with the viewer's figures
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self._got_first.set()

    def _fragment(self, data: bytes, now: float, wall: int) -> None:
        clock, idr, dts = fragment_facts(data)
        if self.first is None:
            self.first, self.first_at, self.first_key, self.first_clock = data, now, idr, clock
            self._got_first.set()
        if dts is not None:
            if self._last_dts is not None and dts - self._last_dts > _TICKS_PER_FRAME * 3 // 2:
                self.units.lost += round((dts - self._last_dts) / _TICKS_PER_FRAME) - 1
            self._last_dts = dts
        self.units.unit(clock, idr, now, wall)

    async def close(self) -> None:
        """Leave: close the socket and end the reader. Idempotent."""
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3.0):
                    await ws.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
