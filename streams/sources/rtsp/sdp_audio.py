"""What an RTSP camera's SDP says about its audio, and whether we can relay it.

:func:`parse_audio_sdp` picks, from the audio ``m=`` sections in order, the first
format the relay can pass on without transcoding: G.711 µ-law or A-law (PCMU,
payload type 0 or ``PCMU/8000``; PCMA, 8 or ``PCMA/8000``), Opus
(``OPUS/48000/2``, RFC 7587) or AAC in RFC 3640's AAC-hbr or AAC-lbr mode
(``MPEG4-GENERIC`` with ``sizelength``/``indexlength``/``indexdeltalength`` and
the AudioSpecificConfig in ``config=``). It answers an :class:`AudioTrack`, an
:class:`UnsupportedAudio` naming what was offered instead (MPEG4-LATM, G.726, …:
the video plays without sound, never an error), or None without audio.

Pure code on text, any thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.codecs.bitstream import BitReader, BitstreamError
from streams.packets import AudioCodec, AudioInfo
from streams.sources.rtsp.sdp import sdp_attribute, sdp_sections

AAC_FRAME_SAMPLES = 1024
"""Samples per AAC access unit (AAC-LC; the core of HE-AAC)."""

_STATIC: dict[int, tuple[str, int, int]] = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1)}
"""Static payload types (RFC 3551) that need no ``a=rtpmap``."""

_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AAC_MODES = ("aac-hbr", "aac-lbr")


@dataclass(frozen=True, slots=True)
class AacParameters:
    """RFC 3640 AU-header layout (bits per field) and the duration of one access unit."""

    size_length: int
    index_length: int
    index_delta_length: int
    frame_ticks: int = AAC_FRAME_SAMPLES
    """RTP clock ticks per access unit."""


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """The audio media chosen from the SDP."""

    control: str
    payload_type: int
    clock_rate: int
    channels: int
    info: AudioInfo
    aac: AacParameters | None = None
    """AAC only: how its RTP payloads are laid out."""


@dataclass(frozen=True, slots=True)
class UnsupportedAudio:
    """The camera offers audio, but in no format we relay."""

    formats: tuple[str, ...]
    """What was offered, for example ``("MPEG4-LATM/16000",)``."""


@dataclass(frozen=True, slots=True)
class _Format:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int
    params: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.encoding}/{self.clock_rate}" if self.encoding else f"payload type {self.payload_type}"


def parse_audio_sdp(sdp: str) -> AudioTrack | UnsupportedAudio | None:
    """The first relayable audio format of an SDP answer to DESCRIBE. See the module docstring."""
    _, media = sdp_sections(sdp)
    offered: list[str] = []
    for section in media:
        if not section[0].startswith("m=audio"):
            continue
        controls = sdp_attribute(section, "control")
        for fmt in _formats(section):
            track = _track(fmt, controls[0] if controls else "*")
            if track is not None:
                return track
            offered.append(fmt.name)
    return UnsupportedAudio(tuple(offered)) if offered else None


def _formats(section: list[str]) -> list[_Format]:
    rtpmap: dict[int, tuple[str, int, int]] = dict(_STATIC)
    for value in sdp_attribute(section, "rtpmap"):
        pt_text, _, encoding = value.partition(" ")
        name, _, rest = encoding.partition("/")
        rate, _, channels = rest.partition("/")
        if pt_text.isdigit() and rate.strip().isdigit():
            count = int(channels) if channels.strip().isdigit() else 1
            rtpmap[int(pt_text)] = (name.strip().upper(), int(rate), count)
    fmtp: dict[int, dict[str, str]] = {}
    for value in sdp_attribute(section, "fmtp"):
        pt_text, _, text = value.partition(" ")
        if pt_text.isdigit():
            pairs = (item.strip().partition("=") for item in text.split(";") if item.strip())
            fmtp[int(pt_text)] = {k.strip().lower(): v.strip() for k, _, v in pairs}
    out = []
    for item in section[0].split()[3:]:
        if item.isdigit():
            pt = int(item)
            encoding, clock_rate, count = rtpmap.get(pt, ("", 0, 1))
            out.append(_Format(pt, encoding, clock_rate, count, fmtp.get(pt, {})))
    return out


def _track(fmt: _Format, control: str) -> AudioTrack | None:
    codec: AudioCodec
    if fmt.encoding in ("PCMU", "PCMA") and fmt.clock_rate == 8000:
        codec = "pcmu" if fmt.encoding == "PCMU" else "pcma"
        info = AudioInfo(codec, 8000, fmt.channels)
        return AudioTrack(control, fmt.payload_type, 8000, fmt.channels, info)
    if fmt.encoding == "OPUS" and fmt.clock_rate == 48000:
        # RFC 7587: always OPUS/48000/2; sprop-stereo says whether the sender sends stereo.
        channels = 2 if fmt.params.get("sprop-stereo") == "1" else 1
        return AudioTrack(control, fmt.payload_type, 48000, 2, AudioInfo("opus", 48000, channels))
    if fmt.encoding == "MPEG4-GENERIC" and fmt.clock_rate > 0:
        return _aac_track(fmt, control)
    return None


def _int_param(params: dict[str, str], name: str) -> int:
    value = params.get(name, "0")
    return int(value) if value.isdigit() else -1


def _aac_track(fmt: _Format, control: str) -> AudioTrack | None:
    params = fmt.params
    if params.get("mode", "").lower() not in _AAC_MODES:
        return None
    size_length = _int_param(params, "sizelength")
    index_length = _int_param(params, "indexlength")
    delta_length = _int_param(params, "indexdeltalength")
    if not 0 < size_length <= 16 or not 0 <= index_length <= 8 or not 0 <= delta_length <= 8:
        return None
    if any(_int_param(params, name) != 0 for name in ("ctsdeltalength", "dtsdeltalength")):
        return None  # AAC modes carry no CTS/DTS deltas; anything else is not AAC-hbr/lbr
    try:
        config = bytes.fromhex(params.get("config", ""))
        core_rate, config_channels = audio_specific_config(config)
    except (ValueError, BitstreamError):
        return None
    channels = config_channels or fmt.channels
    frame_ticks = _int_param(params, "constantduration")
    if frame_ticks <= 0:
        # HE-AAC: the RTP clock runs at the output rate, twice the core rate of 1024-sample frames.
        frame_ticks = AAC_FRAME_SAMPLES * fmt.clock_rate // core_rate
    return AudioTrack(
        control,
        fmt.payload_type,
        fmt.clock_rate,
        channels,
        AudioInfo("aac", fmt.clock_rate, channels, config),
        AacParameters(size_length, index_length, delta_length, frame_ticks),
    )


def audio_specific_config(config: bytes) -> tuple[int, int]:
    """Sampling rate and channel count (0: not stated) of an AAC AudioSpecificConfig
    (ISO 14496-3 1.6.2.1); BitstreamError if it is truncated or names no rate."""
    reader = BitReader(config)
    if reader.bits(5) == 31:  # escaped audio object type
        reader.skip(6)
    index = reader.bits(4)
    if index == 15:
        rate = reader.bits(24)
    elif index < len(_AAC_RATES):
        rate = _AAC_RATES[index]
    else:
        raise BitstreamError(f"reserved AAC sampling frequency index {index}")
    if rate <= 0:
        raise BitstreamError("AAC sampling rate 0")
    channel_config = reader.bits(4)
    channels = 8 if channel_config == 7 else channel_config if channel_config < 7 else 0
    return rate, channels


def describe_refusal(audio: UnsupportedAudio) -> str:
    """One line for the log: what the camera offers and what we relay."""
    return f"audio {', '.join(audio.formats)} is not relayed (PCMU, PCMA, Opus or AAC-hbr only)"
