"""RTP fan-out: packetize each access unit once per camera, send it to many viewers.

With aiortc's own sender every viewer re-packetizes every access unit and
builds every RTP packet through several Python layers (header-extension
objects, NTP clock conversions, transport wrappers): about 1.8 % of a core per
viewer of a 1080p25 4 Mbps stream on the project's 2-core machines. Here:

* :class:`~streams.webrtc.packetizer.SharedPacketizer` (one per camera)
  turns an access unit into RTP payloads once (single NAL units, STAP-A, FU-A)
  and caches the result for the other viewers of that camera. Every FU-A
  fragment of a NAL unit but the last has the same size, so runs of
  equal-size packets can leave in one system call (below);
* :class:`FastRtpSender` (one per viewer) prefixes each shared payload with a
  12-byte RTP header of its own (sequence number, timestamp from its
  :class:`~streams.timeline.LiveTimeline`, the SSRC aiortc announced in the
  answer) and the negotiated header extensions (``sdes:mid``,
  ``abs-send-time``), SRTP-protects it with the session's keys and sends it
  straight on the UDP socket of the ICE pair that was nominated. On Linux a
  run of equal-size packets goes out in one ``sendmsg`` with UDP
  segmentation offload (``UDP_SEGMENT``, "GSO"): the kernel splits the buffer
  into datagrams (SRTP adds the same number of bytes to every packet, so
  equal-size payloads make equal-size datagrams). Where the kernel or the route refuses GSO, or the socket
  would block, the sender falls back to one ``sendto`` per packet through the
  asyncio transport, which buffers instead of blocking.

aiortc keeps running everything else: ICE, DTLS, the RTCP task of the sender
(sender reports, whose packet counts then stay at zero) and the handling of
the viewer's RTCP (receiver reports feed the statistics; PLI cannot be
honoured in passthrough anyway). NACKs for the fast path's packets are
answered here, from a short history of the protected packets sent, by
sending them again unchanged; :meth:`FastRtpSender.release` drops that history
when the viewer has gone. The sender's own RTP loop idles on an
:class:`IdleTrack`, which yields no frame unless it is handed a real track to
fall back on.

This relies on four internals of aiortc 1.x / aioice 0.x, bound once when
sending starts: the DTLS transport's SRTP session (``_tx_srtp``), the ICE
transport's aioice connection (``_connection``), that connection's nominated
candidate pair (``_nominated``: its asyncio datagram transport and the
viewer's address), and ``RTCRtpSender._handle_rtcp_packet``, where aiortc
delivers the viewer's RTCP: it is shadowed on that one sender instance to take
NACKs first. :meth:`FastRtpSender.from_transceiver` checks them and raises
:class:`FastPathUnavailable` when they are missing; the output then falls back
to aiortc's own sender for that viewer. The socket for GSO is a duplicate of
the transport's own (``get_extra_info("socket").dup()``), owned and closed by
:meth:`FastRtpSender.run`.

Event loop only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import aioice
from aiortc import RTCRtpTransceiver, clock
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtp import RTCP_RTPFB_NACK, AnyRtcpPacket, RtcpRtpfbPacket

from streams.hub import Hub, HubClosed, Subscription
from streams.packets import MediaPacket
from streams.timeline import LiveTimeline
from streams.webrtc.packetizer import MAX_EXTENSION, SharedPacketizer

__all__ = ["FastPathUnavailable", "FastRtpSender", "IdleTrack", "SharedPacketizer"]

log = logging.getLogger(__name__)

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

_HISTORY = 512  # a power of two: slots are ``seq & (_HISTORY - 1)``

# UDP GSO (Linux 4.18+): one sendmsg, many datagrams of ``segment`` bytes each.
_UDP_SEGMENT = 103
_GSO_REFUSED = {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
_U16 = struct.Struct("=H")


class FastPathUnavailable(Exception):
    """aiortc does not expose what the fast path needs (unexpected aiortc version)."""


class IdleTrack(MediaStreamTrack):
    """A video track for aiortc's sender while the fast path sends instead.

    ``recv`` waits until the track is stopped, or until :meth:`fall_back` hands
    it a real track, whose frames it then passes on.
    """

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._wake = asyncio.Event()
        self._delegate: MediaStreamTrack | None = None

    def fall_back(self, track: MediaStreamTrack) -> None:
        self._delegate = track
        self._wake.set()

    async def recv(self) -> Any:
        await self._wake.wait()
        if self._delegate is None or self.readyState != "live":
            raise MediaStreamError
        return await self._delegate.recv()

    def stop(self) -> None:
        if self._delegate is not None:
            self._delegate.stop()
        self._wake.set()
        super().stop()


def _extension_block(
    extensions: list[RTCRtpHeaderExtensionParameters], mid: str | None
) -> tuple[bytes, int | None]:
    """The constant part of the one-byte header-extension block, and where abs-send-time goes."""
    ids = {ext.uri: ext.id for ext in extensions}
    body = b""
    abs_offset = None
    if MID_URI in ids and mid:
        value = mid.encode()
        body += bytes([(ids[MID_URI] << 4) | (len(value) - 1)]) + value
    if ABS_SEND_TIME_URI in ids:
        body += bytes([(ids[ABS_SEND_TIME_URI] << 4) | 2])
        abs_offset = 4 + len(body)
        body += b"\x00\x00\x00"
    if not body:
        return b"", None
    body += b"\x00" * (-len(body) % 4)
    return b"\xbe\xde" + struct.pack("!H", len(body) // 4) + body, abs_offset


class FastRtpSender:
    """Sends one viewer its camera's access units. See the module docstring.

    ``gso=False`` sends one datagram per system call, as on a kernel without GSO.
    """

    def __init__(
        self,
        *,
        hub: Hub,
        packetizer: SharedPacketizer,
        payload_type: int,
        ssrc: int,
        extensions: list[RTCRtpHeaderExtensionParameters],
        mid: str | None,
        protect: Callable[[bytes], bytes],
        transport: asyncio.DatagramTransport,
        address: tuple[str, int],
        gso: bool = True,
    ) -> None:
        self._hub = hub
        self._packetizer = packetizer
        self._payload_type = payload_type
        self._ssrc = ssrc
        self._extension, self._abs_offset = _extension_block(extensions, mid)
        if len(self._extension) > MAX_EXTENSION:
            raise FastPathUnavailable(f"the RTP header extensions for mid {mid!r} do not fit")
        self._header = struct.Struct(f"!BBHII{len(self._extension)}s")
        self._protect = protect
        self._transport = transport
        # Direct sends would overtake what the transport has buffered: only while it is empty.
        self._buffered: Callable[[], int] | None = getattr(transport, "get_write_buffer_size", None)
        self._address = address
        self._gso = gso and sys.platform == "linux"
        self._socket: socket.socket | None = None
        self._sequence = random.randrange(32768)
        self._ts_origin = random.getrandbits(32)
        self._timeline = LiveTimeline()
        self._subscription: Subscription | None = None
        self.frames = 0
        self.bytes = 0
        self._history_seq = [-1] * _HISTORY
        self._history_packet = [b""] * _HISTORY
        self.rtp_packets = 0
        self.gso_sends = 0
        """System calls that sent several RTP packets at once."""
        self.retransmitted = 0
        self.last_sent: float | None = None
        self._shadowed: Any = None
        """The aiortc sender whose RTCP handler is shadowed (see :meth:`from_transceiver`)."""

    @classmethod
    def from_transceiver(
        cls, transceiver: RTCRtpTransceiver, hub: Hub, packetizer: SharedPacketizer, *, gso: bool = True
    ) -> FastRtpSender:
        """Bind to a connected transceiver's negotiated codec, SSRC and transports."""
        sender = transceiver.sender
        dtls = sender.transport
        srtp = getattr(dtls, "_tx_srtp", None)
        connection = getattr(dtls.transport, "_connection", None)
        if srtp is None or not isinstance(connection, aioice.Connection):
            raise FastPathUnavailable("aiortc exposes no SRTP session or ICE connection")
        pair = getattr(connection, "_nominated", {}).get(1)
        transport = getattr(getattr(pair, "protocol", None), "transport", None)
        address = getattr(pair, "remote_addr", None)
        # asyncio's selector datagram transport does not subclass DatagramTransport.
        if not callable(getattr(transport, "sendto", None)) or not isinstance(address, tuple):
            raise FastPathUnavailable("aioice exposes no nominated candidate pair")
        handle_rtcp = getattr(sender, "_handle_rtcp_packet", None)
        if handle_rtcp is None:
            raise FastPathUnavailable("aiortc's sender has no RTCP handler")
        codec = transceiver._codecs[0]
        fanout = cls(
            hub=hub,
            packetizer=packetizer,
            payload_type=int(codec.payloadType or 0),
            ssrc=sender._ssrc,
            extensions=list(transceiver._headerExtensions),
            mid=transceiver.mid,
            protect=srtp.protect,
            transport=cast(asyncio.DatagramTransport, transport),
            address=address,
            gso=gso,
        )

        async def handle_rtcp_packet(packet: AnyRtcpPacket) -> None:
            if (
                isinstance(packet, RtcpRtpfbPacket)
                and packet.fmt == RTCP_RTPFB_NACK
                and packet.media_ssrc == fanout._ssrc
            ):
                fanout.retransmit(packet.lost)
                return
            await handle_rtcp(packet)

        # Instance attribute: this sender only; :meth:`release` takes it away again.
        sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
        fanout._shadowed = sender
        return fanout

    @property
    def dropped(self) -> int:
        return self._subscription.dropped if self._subscription is not None else 0

    @property
    def backlog_frames(self) -> int:
        return self._timeline.compressed

    async def run(self) -> None:
        """Send until the hub closes, the transport fails, or the task is cancelled."""
        try:
            self._subscription = self._hub.subscribe()
        except HubClosed:
            return
        self._socket = self._gso_socket() if self._gso else None
        try:
            async for media in self._subscription:
                if self._transport.is_closing():
                    log.debug("RTP fan-out stopped: the ICE transport closed")
                    return
                self._send_unit(media)
                if self._subscription.pending():
                    await asyncio.sleep(0)  # a GOP backlog must not hold the loop
        finally:
            self._subscription.close()
            self._drop_socket()

    def release(self) -> None:
        """Once the viewer has gone: drop the packets kept for NACKs and un-shadow the
        aiortc sender's RTCP handler. That handler and the sender made a reference
        cycle holding this object (and its history, about 600 kB at 1080p 4 Mbit/s),
        which only a full garbage collection, rare in a long-running service, would
        have freed. Counters stay readable. Idempotent; call it after :meth:`run` ended."""
        self._history_seq = []
        self._history_packet = []
        sender, self._shadowed = self._shadowed, None
        if sender is not None:
            vars(sender).pop("_handle_rtcp_packet", None)

    def retransmit(self, lost: list[int]) -> None:
        """Send again the packets a NACK reports lost, if still in the history."""
        if self._transport.is_closing() or not self._history_seq:
            return
        for seq in lost:
            slot = seq & (_HISTORY - 1)
            if self._history_seq[slot] == seq:
                self._transport.sendto(self._history_packet[slot], self._address)
                self.retransmitted += 1

    def _send_unit(self, media: MediaPacket) -> None:
        now = time.monotonic()
        timestamp = (self._ts_origin + self._timeline.next_pts(media, now)) & 0xFFFFFFFF
        unit = self._packetizer.unit(media)
        payloads = unit.payloads
        extension = self._extension
        if self._abs_offset is not None:
            abs_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
            at = self._abs_offset
            extension = extension[:at] + abs_time.to_bytes(3, "big") + extension[at + 3 :]
        first = 0x90 if extension else 0x80
        pack, protect = self._header.pack, self._protect
        seq, pt, ssrc = self._sequence, self._payload_type, self._ssrc
        history_seq, history_packet = self._history_seq, self._history_packet
        packets: list[bytes] = []
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            packet = protect(
                pack(first, pt | 0x80 if i == last else pt, seq, timestamp, ssrc, extension) + payload
            )
            packets.append(packet)
            slot = seq & (_HISTORY - 1)
            history_seq[slot] = seq
            history_packet[slot] = packet
            seq = (seq + 1) & 0xFFFF
        if self._socket is not None and self._buffered is not None and not self._buffered():
            self._send_runs(self._socket, packets, unit.runs)
        else:
            sendto, address = self._transport.sendto, self._address
            for packet in packets:
                sendto(packet, address)
        self.rtp_packets += len(payloads)
        self._sequence = seq
        self.frames += 1
        self.bytes += len(media.data)
        self.last_sent = now

    def _send_runs(self, sock: socket.socket, packets: list[bytes], runs: list[tuple[int, int]]) -> None:
        """Send each run in one system call; from the first failure on, through the transport."""
        address = self._address
        for start, stop in runs:
            try:
                if stop - start == 1:
                    sock.sendto(packets[start], address)
                    continue
                segment = [(socket.IPPROTO_UDP, _UDP_SEGMENT, _U16.pack(len(packets[start])))]
                sock.sendmsg(packets[start:stop], segment, 0, address)
                self.gso_sends += 1
                continue
            except BlockingIOError:
                pass  # the transport buffers what the socket cannot take now
            except OSError as err:
                if err.errno in _GSO_REFUSED and stop - start > 1:
                    log.info("UDP GSO refused (%s); sending one datagram per packet", err)
                    self._drop_socket()
            sendto = self._transport.sendto
            for packet in packets[start:]:
                sendto(packet, address)
            return

    def _gso_socket(self) -> socket.socket | None:
        """A duplicate of the transport's UDP socket, when GSO can be tried on it."""
        raw = self._transport.get_extra_info("socket")
        if raw is None or self._buffered is None or self._transport.get_extra_info("peername") is not None:
            return None
        if raw.type != socket.SOCK_DGRAM or raw.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        try:
            sock = cast(socket.socket, raw.dup())
        except OSError as err:
            log.debug("no socket for UDP GSO: %s", err)
            return None
        sock.setblocking(False)
        return sock

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
