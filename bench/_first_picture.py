"""First picture: how long one new viewer waits for a decodable picture, per protocol.

* WebRTC: from the WHEP POST until aiortc's decoder hands out the first frame
  (:class:`~_viewers.Viewer` with ``decode=True``: aiortc's jitter buffer and
  decoder get every packet, and complete access units are counted on the way).
* MSE: from opening the WebSocket until the init segment and the first
  fragment are in (it must be a keyframe), and until PyAV has decoded that
  fragment from the init segment's ``avcC`` as a browser's decoder would.

Both report the age of the first access unit by the camera's burnt-in clock: a
new viewer starts on the relay's cached keyframe, so that age is where in the
keyframe interval the viewer joined.

Event loop of a viewer process; the PyAV decode runs in a thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _mse import MseViewer, decode_keyframe
from _viewers import Viewer, _Worker
from av import VideoFrame


async def first_picture(worker: _Worker, protocol: str, camera: str, timeout: float) -> dict[str, Any]:
    """One timed join of ``protocol`` (``webrtc`` or ``mse``); the viewer leaves afterwards."""
    if protocol == "mse":
        return await _mse(worker, camera, timeout)
    return await _webrtc(worker, camera, timeout)


async def _webrtc(worker: _Worker, camera: str, timeout: float) -> dict[str, Any]:
    viewer = Viewer(worker.http, worker.base_url, camera, decode=True)
    receiving: list[asyncio.Task[Any]] = []

    @viewer.pc.on("track")
    def _track(track: Any) -> None:  # during setRemoteDescription, before any packet can come
        receiving.append(asyncio.create_task(track.recv()))

    joining = asyncio.create_task(viewer.join())
    tasks = [joining]
    try:
        async with asyncio.timeout(timeout):
            await joining
            tasks += receiving
            if not receiving:
                raise RuntimeError("the answer gave no video track")
            frame = await receiving[0]
        decoded = time.monotonic()
        if not isinstance(frame, VideoFrame):
            raise TypeError(f"the track gave a {type(frame).__name__}, not a video frame")
        assert viewer.posted is not None
        units = viewer.units
        return {
            "answer": (viewer.answered or viewer.posted) - viewer.posted,
            "connected": (viewer.connected or viewer.posted) - viewer.posted,
            "received": None if units.first_unit is None else units.first_unit - viewer.posted,
            "decoded": decoded - viewer.posted,
            "keyframe": units.first_idr,
            "age_ms": units.series[0][1] if units.series else None,
            "size": (frame.width, frame.height),
            "error": None,
        }
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}
    finally:
        tasks += [t for t in receiving if t not in tasks]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: reported above if it mattered
        await viewer.close()


async def _mse(worker: _Worker, camera: str, timeout: float) -> dict[str, Any]:
    viewer = MseViewer(worker.base_url, camera, worker.ws_headers, deflate=worker.deflate)
    try:
        async with asyncio.timeout(timeout):
            await viewer.join(timeout)
            await viewer.first_fragment(timeout)
            assert viewer.init is not None and viewer.first is not None
            width, height = await asyncio.to_thread(decode_keyframe, viewer.init, viewer.first)
        decoded = time.monotonic()
        assert viewer.opened is not None and viewer.first_at is not None
        opened = viewer.opened
        return {
            "connected": (viewer.connected or opened) - opened,
            "init": None if viewer.init_at is None else viewer.init_at - opened,
            "received": viewer.first_at - opened,
            "decoded": decoded - opened,
            "keyframe": viewer.first_key,
            "age_ms": viewer.units.series[0][1] if viewer.units.series else None,
            "size": (width, height),
            "deflate": viewer.deflate_used,
            "error": None,
        }
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}
    finally:
        await viewer.close()
