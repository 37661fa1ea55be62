"""The SDP of a GB/T 28181 INVITE (live play, playback, download), and our answer.

The superior offers where it wants the stream: ``o=``/``u=`` name the channel,
``c=`` the address, ``m=video <port> RTP/AVP 96`` (UDP) or ``TCP/RTP/AVP 96`` with
``a=setup:active`` (it connects to us) or ``passive`` (it listens, we connect),
``a=rtpmap:96 PS/90000`` and ``y=`` the SSRC. :func:`parse_offer` takes what we can
serve or raises :class:`OfferError` with the SIP status (488 or 415) and the reason;
:func:`answer` writes the ``sendonly`` PS/90000 answer with the same ``y=``.
Pure functions; any thread.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

CONTENT_TYPE = "application/sdp"
DISCARD_PORT = 9
"""The port an active TCP end (it connects; it listens on none) gives by convention: the
discard port, as in RFC 4145 and RFC 6544. Port 0 would reject the stream (RFC 3264, 6)."""
MediaTransport = Literal["udp", "tcp-active", "tcp-passive"]
"""How we send: RTP over UDP; over TCP connecting to the superior (``tcp-active``,
its offer said ``a=setup:passive``) or waiting for it to connect (``tcp-passive``)."""


class OfferError(ValueError):
    """An offer we cannot serve: ``status`` (488 or 415) and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Offer:
    session: str
    """``s=``: Play, Playback or Download."""
    channel_id: str
    host: str
    port: int
    transport: MediaTransport
    payload_type: int
    ssrc: str
    """The 10 digits of ``y=``."""
    times: tuple[int, int] = (0, 0)
    """``t=``: for Playback and Download the range's start and stop in Unix seconds (GB/T
    28181 writes them so, not in the NTP seconds of RFC 4566); ``0 0`` for live."""
    download_speed: float | None = None
    """``a=downloadspeed:`` of a Download, when given."""


def parse_offer(text: str) -> Offer:
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if "=" in line]
    fields: dict[str, list[str]] = {}
    for line in lines:
        fields.setdefault(line[0], []).append(line[2:].strip())
    if "v" not in fields or "m" not in fields:
        raise OfferError(488, "the SDP has no v= or m= line")
    session = (fields.get("s") or [""])[0]
    channel = (fields.get("u") or [""])[0].partition(":")[0] or (fields.get("o") or [""])[0].split(" ")[0]
    video = [m for m in fields["m"] if m.startswith("video ")]
    if not video:
        raise OfferError(488, "the SDP offers no video stream")
    parts = video[0].split()
    if len(parts) < 4 or not parts[1].isdigit():
        raise OfferError(488, "the m=video line is not 'video <port> <proto> <formats>'")
    port, proto, formats = int(parts[1]), parts[2].upper(), parts[3:]
    if not 0 < port < 65536:
        raise OfferError(488, f"the video port {port} is not a port")
    attributes = fields.get("a", [])
    transport = _transport(proto, attributes)
    payload = _ps_payload(formats, attributes)
    host = _connection(fields)
    ssrc = (fields.get("y") or [""])[0]
    if not (ssrc.isdigit() and len(ssrc) == 10):
        raise OfferError(488, "the SDP has no y= line with a 10-digit SSRC")
    return Offer(session, channel, host, port, transport, payload, ssrc, _times(fields), _speed(attributes))


def _times(fields: dict[str, list[str]]) -> tuple[int, int]:
    parts = (fields.get("t") or ["0 0"])[0].split()
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 12 for p in parts):
        raise OfferError(488, "the t= line is not two numbers of seconds")
    return int(parts[0]), int(parts[1])


def _speed(attributes: list[str]) -> float | None:
    for attribute in attributes:
        name, _, value = attribute.partition(":")
        if name.strip().lower() == "downloadspeed":
            try:
                speed = float(value)
            except ValueError:
                raise OfferError(488, "a=downloadspeed is not a number") from None
            if not 0 < speed <= 64:
                raise OfferError(488, f"a=downloadspeed:{value[:8]} is out of range")
            return speed
    return None


def _transport(proto: str, attributes: list[str]) -> MediaTransport:
    if proto == "RTP/AVP":
        return "udp"
    if proto not in ("TCP/RTP/AVP", "RTP/AVP/TCP"):
        raise OfferError(488, f"transport {proto[:20]} is not RTP/AVP or TCP/RTP/AVP")
    setup = next((a.partition(":")[2].strip().lower() for a in attributes if a.startswith("setup:")), "")
    if setup == "passive":
        return "tcp-active"
    if setup == "active":
        return "tcp-passive"
    raise OfferError(488, "TCP/RTP/AVP needs a=setup:active or a=setup:passive")


def _ps_payload(formats: list[str], attributes: list[str]) -> int:
    for attribute in attributes:
        if not attribute.startswith("rtpmap:"):
            continue
        number, _, codec = attribute[len("rtpmap:") :].partition(" ")
        if number in formats and codec.strip().upper().startswith("PS/90000"):
            return int(number)
    if "96" in formats and not any(a.startswith("rtpmap:96 ") for a in attributes):
        return 96
    raise OfferError(415, "the SDP offers no PS/90000 payload; only MPEG-PS is sent")


def _connection(fields: dict[str, list[str]]) -> str:
    for line in fields.get("c", []):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "IN" and parts[1] in ("IP4", "IP6"):
            address = parts[2].split("/")[0]
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise OfferError(488, "the c= address is not an IP address") from None
            return address
    raise OfferError(488, "the SDP has no c=IN IP4 address")


def answer(offer: Offer, *, local_id: str, host: str, port: int) -> str:
    """Our answer: PS over RTP from ``host:port``, sendonly, the offer's SSRC."""
    if offer.transport == "tcp-active" and not port:
        port = DISCARD_PORT
    proto = "RTP/AVP" if offer.transport == "udp" else "TCP/RTP/AVP"
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o={local_id} 0 0 IN {family} {host}",
        f"s={offer.session}",
        f"c=IN {family} {host}",
        f"t={offer.times[0]} {offer.times[1]}",
        f"m=video {port} {proto} {offer.payload_type}",
        f"a=rtpmap:{offer.payload_type} PS/90000",
        "a=sendonly",
    ]
    if offer.transport != "udp":
        lines += [f"a=setup:{'active' if offer.transport == 'tcp-active' else 'passive'}", "a=connection:new"]
    lines += [f"y={offer.ssrc}", "f="]
    return "\r\n".join(lines) + "\r\n"
