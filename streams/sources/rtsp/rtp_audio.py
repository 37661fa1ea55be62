"""RTP audio: encoded audio frames out of RTP packets, on the video's timeline.

:func:`audio_depacketizer` makes the :class:`AudioDepacketizer` for a track the
SDP offered (:mod:`streams.sources.rtsp.sdp_audio`); each RTP packet in gives the
audio :class:`~streams.packets.MediaPacket` objects it completes, one per frame:

* G.711 and Opus: one frame per RTP packet (:class:`FrameDepacketizer`);
* AAC (RFC 3640, AAC-hbr/lbr, :class:`AacDepacketizer`): the AU-headers section
  is read and each access unit becomes a packet, ``index × frame duration``
  after the RTP timestamp. An access unit fragmented over several packets is
  reassembled; if a fragment is lost, that access unit is dropped.

Loss drops only what is lost: audio frames are independent, so there is no
waiting for a keyframe. Timestamps are unwrapped like video
(:class:`~streams.sources.rtsp.rtp.RtpTimeline`), to 90 kHz ticks from the first frame.
:class:`AvSync` then moves them onto the video's timeline, so that audio and
video of one instant carry the same pts.

Pure code on bytes; one depacketizer belongs to one reader (the event loop task
iterating an RTSP source).
"""

from __future__ import annotations

import logging

from streams.codecs.bitstream import BitReader, BitstreamError
from streams.packets import CLOCK_RATE, AudioCodec, MediaPacket
from streams.sources.rtsp.rtp import RtpPacket, RtpTimeline
from streams.sources.rtsp.sdp_audio import AacParameters, AudioTrack

log = logging.getLogger(__name__)

_MAX_SYNC_DISAGREEMENT = 5 * CLOCK_RATE
"""Ticks: RTP-Info that places audio further than this from its arrival time is ignored."""


class AudioDepacketizer:
    """RTP packets of one audio track in, audio frames out: the codec-neutral part.

    Filters the payload type, follows SSRC and sequence numbers (counting
    losses and ignoring duplicates and late packets) and keeps the timeline;
    subclasses cut payloads into frames (:meth:`_frames`).
    """

    def __init__(self, track: AudioTrack) -> None:
        self.track = track
        self.codec: AudioCodec = track.info.codec
        self._timeline = RtpTimeline(track.clock_rate)
        self._next_seq: int | None = None
        self._ssrc: int | None = None
        self.lost = 0
        """RTP packets missing from the sequence."""
        self.discarded = 0
        """Frames thrown away, incomplete (a part was lost) or malformed."""

    @property
    def origin(self) -> int | None:
        """The RTP timestamp of the first frame made (its pts is 0), None before."""
        return self._timeline.origin

    def push(self, packet: RtpPacket, received: float) -> list[MediaPacket]:
        """Feed one RTP packet; return the frames it completes."""
        if packet.payload_type != self.track.payload_type:
            return []
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                log.info("audio RTP SSRC changed")
                self._gap()
            self._ssrc = packet.ssrc
            self._next_seq = None
        if self._next_seq is not None and packet.sequence != self._next_seq:
            if (self._next_seq - packet.sequence) & 0xFFFF < 0x8000:
                return []  # duplicate or late packet: already counted as lost
            self.lost += (packet.sequence - self._next_seq) & 0xFFFF
            self._gap()
        self._next_seq = (packet.sequence + 1) & 0xFFFF
        if not packet.payload:
            return []
        return self._frames(packet, received)

    def _frames(self, packet: RtpPacket, received: float) -> list[MediaPacket]:
        raise NotImplementedError

    def _gap(self) -> None:
        """Packets were lost (or the stream restarted): forget any partial frame."""

    def _frame(self, data: bytes, timestamp: int, received: float) -> MediaPacket:
        pts = self._timeline.pts(timestamp & 0xFFFFFFFF)
        return MediaPacket(data=data, pts=pts, keyframe=True, codec=self.codec, received=received)


class FrameDepacketizer(AudioDepacketizer):
    """G.711 (RFC 3551) and Opus (RFC 7587): each RTP payload is one frame."""

    def _frames(self, packet: RtpPacket, received: float) -> list[MediaPacket]:
        return [self._frame(packet.payload, packet.timestamp, received)]


class AacDepacketizer(AudioDepacketizer):
    """AAC in RFC 3640 AAC-hbr/lbr: AU-headers section, then the access units."""

    def __init__(self, track: AudioTrack) -> None:
        super().__init__(track)
        assert track.aac is not None
        self.layout: AacParameters = track.aac
        self._partial: bytearray | None = None
        self._partial_size = 0
        self._partial_ts = 0
        self._resync = False
        """After a loss: packets that look like fragments may be continuations; skip them
        until one with the marker bit ends that access unit."""
        self._resync_counted = False

    def _gap(self) -> None:
        self._resync_counted = self._partial is not None
        if self._partial is not None:
            self.discarded += 1
            self._partial = None
        self._resync = True

    def _frames(self, packet: RtpPacket, received: float) -> list[MediaPacket]:
        try:
            entries, data = self._headers(packet.payload)
        except BitstreamError:
            self.discarded += 1
            self._partial = None
            return []
        if self._partial is not None:
            if (
                packet.timestamp == self._partial_ts
                and len(entries) == 1
                and entries[0][0] == self._partial_size
            ):
                return self._continue(data, packet, received)
            self.discarded += 1  # the rest of the fragmented access unit never came
            self._partial = None
        if len(entries) == 1 and entries[0][0] > len(data):  # first fragment (or a lost one's rest)
            if self._resync:
                self._resync = not packet.marker
                self.discarded += 0 if self._resync_counted else 1
                self._resync_counted = True
                return []
            self._partial, self._partial_size = bytearray(data), entries[0][0]
            self._partial_ts = packet.timestamp
            return []
        self._resync = False
        out, pos = [], 0
        for size, position in entries:
            if pos + size > len(data):
                self.discarded += 1
                break
            timestamp = packet.timestamp + position * self.layout.frame_ticks
            out.append(self._frame(data[pos : pos + size], timestamp, received))
            pos += size
        return out

    def _continue(self, data: bytes, packet: RtpPacket, received: float) -> list[MediaPacket]:
        assert self._partial is not None
        self._partial += data
        if len(self._partial) < self._partial_size and not packet.marker:
            return []
        unit, self._partial = bytes(self._partial), None
        if len(unit) != self._partial_size:
            self.discarded += 1
            return []
        return [self._frame(unit, packet.timestamp, received)]

    def _headers(self, payload: bytes) -> tuple[list[tuple[int, int]], bytes]:
        """The (size, position) of every AU header, and the data section that follows them."""
        if len(payload) < 2:
            raise BitstreamError("AAC RTP payload without AU-headers-length")
        header_bits = int.from_bytes(payload[:2], "big")
        end = 2 + (header_bits + 7) // 8
        if end > len(payload):
            raise BitstreamError("AU-headers section longer than the payload")
        layout = self.layout
        reader = BitReader(payload[2:end])
        entries: list[tuple[int, int]] = []
        used, position = 0, 0
        while True:
            index_length = layout.index_length if not entries else layout.index_delta_length
            if used + layout.size_length + index_length > header_bits:
                break
            size = reader.bits(layout.size_length)
            index = reader.bits(index_length)
            # The first AU-Index is a serial number; each AU-Index-delta counts the AUs skipped.
            position = 0 if not entries else position + index + 1
            entries.append((size, position))
            used += layout.size_length + index_length
        if not entries:
            raise BitstreamError("AAC RTP payload without AU headers")
        return entries, payload[end:]


def audio_depacketizer(track: AudioTrack) -> AudioDepacketizer:
    """The depacketizer for the track's codec."""
    if track.aac is not None:
        return AacDepacketizer(track)
    return FrameDepacketizer(track)


def _ticks(delta: int, clock_rate: int) -> int:
    """A signed 32-bit RTP timestamp difference in 90 kHz ticks."""
    delta &= 0xFFFFFFFF
    if delta >= 0x80000000:
        delta -= 0x100000000
    return delta * CLOCK_RATE // clock_rate


class AvSync:
    """Moves audio timestamps onto the video's timeline (both count from their own first frame).

    RTP-Info in the PLAY answer gives, per stream, the RTP timestamp of one
    instant (:meth:`anchor`); from it and each stream's
    first timestamp the offset is exact. Without it (or if it disagrees with
    arrival times by more than 5 s), arrival times place the audio instead,
    which is right to within the network's jitter. Audio from before the first
    video frame is dropped: the viewer's timeline starts with the video.
    """

    def __init__(self, video_clock: int, audio_clock: int) -> None:
        self._video_clock, self._audio_clock = video_clock, audio_clock
        self._video_rtptime: int | None = None
        self._audio_rtptime: int | None = None
        self._video_first: MediaPacket | None = None
        self._video_origin: int | None = None
        self.offset: int | None = None
        """Ticks added to audio pts; None until both streams have started."""
        self.early = 0
        """Audio frames dropped because they came before the video."""

    def anchor(self, video_rtptime: int | None, audio_rtptime: int | None) -> None:
        """The RTP timestamps of one instant in each stream (RTP-Info), if the camera told them."""
        self._video_rtptime, self._audio_rtptime = video_rtptime, audio_rtptime

    def video(self, packets: list[MediaPacket], origin: int | None) -> None:
        """Note the video's first frame and its RTP timestamp (the video depacketizer's ``origin``)."""
        if self._video_first is None and packets:
            self._video_first, self._video_origin = packets[0], origin

    def audio(self, packets: list[MediaPacket], origin: int | None) -> list[MediaPacket]:
        """The audio frames on the video's timeline; ``origin`` is the audio depacketizer's."""
        if not packets:
            return packets
        video = self._video_first
        if video is None:
            self.early += len(packets)
            return []
        if self.offset is None:
            first = packets[0]
            by_arrival = video.pts + round((first.received - video.received) * CLOCK_RATE) - first.pts
            self.offset = by_arrival
            if None not in (self._video_rtptime, self._audio_rtptime, self._video_origin, origin):
                assert self._video_rtptime is not None and self._audio_rtptime is not None
                assert self._video_origin is not None and origin is not None
                by_rtp_info = (
                    video.pts
                    + _ticks(self._video_rtptime - self._video_origin, self._video_clock)
                    + _ticks(origin - self._audio_rtptime, self._audio_clock)
                )
                if abs(by_rtp_info - by_arrival) <= _MAX_SYNC_DISAGREEMENT:
                    self.offset = by_rtp_info
                else:
                    log.debug("RTP-Info disagrees with arrival times by %d ticks", by_rtp_info - by_arrival)
        out = [p.shifted(self.offset) for p in packets]
        kept = [p for p in out if p.pts >= video.pts]
        self.early += len(out) - len(kept)
        return kept
