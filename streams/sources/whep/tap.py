"""The encoded video of one aiortc receiver, taken before aiortc decodes it.

:class:`RTCRtpReceiver` decodes everything it receives: its ``receive()`` starts
a decoder thread, and each frame its jitter buffer completes goes there. A relay
wants the encoded access units, so :class:`ReceiverTap` changes **one receiver
instance** (instance attributes, never the class or aiortc's module state):

* its ``_handle_rtp_packet`` (what the DTLS transport calls with each decrypted
  RTP packet of this receiver) first copies the packet into a bounded queue and
  then lets aiortc handle it as usual, so receiver reports, NACKs and statistics
  still go out;
* its ``receive`` runs aiortc's and then stops the decoder thread at once,
  through ``_handle_disconnect`` (what aiortc itself calls when DTLS goes away),
  before any packet can reach it: nothing is ever decoded.

This was chosen over a pass-through decoder (aiortc looks decoders up through a
module-level function, so replacing one would change every receiver in the
process) and over aiortc's jitter-buffer frames (reachable only through
name-mangled attributes, and completed only when the next frame begins: one
frame of delay). Depacketizing is then ours
(:class:`~streams.sources.rtsp.rtp.H264Depacketizer`), completing each access
unit on the RTP marker bit, as for RTSP. Keyframes are requested with aiortc's
own PLI sender, ``_send_rtcp_pli``. These three names are the only aiortc
internals used (aiortc 1.x); a test of the WHEP source fails if they change.

Event loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtp import RtpPacket as AiortcRtpPacket

from streams.sources.rtsp.rtp import RtpPacket

MAX_QUEUED = 4096
"""RTP packets kept for the reader; beyond it the oldest go (a gap, then a keyframe wait)."""


class ReceiverTap:
    """Queues one receiver's RTP packets and keeps aiortc from decoding them."""

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = receiver
        self.queue: deque[tuple[RtpPacket, float]] = deque(maxlen=MAX_QUEUED)
        """(packet, ``time.monotonic()`` of arrival), oldest first."""
        self.arrived = asyncio.Event()
        """Set when a packet is queued; the reader clears it before waiting."""
        self.ssrc: int | None = None
        """The SSRC of the latest packet: whom a keyframe request goes to."""
        handle = receiver._handle_rtp_packet
        receive = receiver.receive

        async def handle_rtp_packet(packet: AiortcRtpPacket, arrival_time_ms: int) -> None:
            self._take(packet)
            await handle(packet, arrival_time_ms)

        async def receive_undecoded(parameters: RTCRtpReceiveParameters) -> None:
            await receive(parameters)
            receiver._handle_disconnect()

        receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
        receiver.receive = receive_undecoded  # type: ignore[method-assign]

    def _take(self, packet: AiortcRtpPacket) -> None:
        self.ssrc = packet.ssrc
        self.queue.append(
            (
                RtpPacket(
                    payload_type=packet.payload_type,
                    sequence=packet.sequence_number,
                    timestamp=packet.timestamp,
                    ssrc=packet.ssrc,
                    marker=bool(packet.marker),
                    payload=packet.payload,
                ),
                time.monotonic(),
            )
        )
        self.arrived.set()

    async def request_keyframe(self) -> None:
        """Send a picture loss indication (RFC 4585) to the sender; nothing before the first packet."""
        if self.ssrc is not None:
            await self._receiver._send_rtcp_pli(self.ssrc)
