"""Who may hold a viewer seat: one count of the relay's viewers, whatever the protocol.

Every live output takes a **seat** here before it serves anyone (WebRTC, MSE,
MJPEG, RTSP re-serve, GB/T 28181 live sessions) and gives it back when the
viewer leaves, so ``max_per_camera`` and ``max_total`` bound the viewers of all
protocols together: a camera at its cap refuses the next viewer whether it asks
over WHEP, a WebSocket, RTSP or SIP, and the refusal names the mix of protocols
that fills it.

A WebRTC session holds a **pending** seat from the moment its offer is admitted
until its connection is up (ICE and DTLS done), then a **live** one; the other
protocols take a live seat at once. The two kinds are counted apart, so that
offers which never connect cannot hold a camera's viewer slots:

* live seats are capped per camera (``max_per_camera``) and for the relay
  (``max_total``); a pending seat is only promoted to a live one if a live slot
  is free when its connection comes up;
* pending seats have caps of their own (per camera, per owner, for the relay);
  their short life is the WebRTC output's to enforce;
* an **owner** (an opaque key the control plane passes in, such as a user id)
  is capped in seats of both kinds and every protocol, in all and per camera, so
  that one account cannot take a camera from everyone else. Seats without an
  owner (a superior platform's cascade session) are capped per camera and in
  total only.

A refusal is a :class:`~streams.errors.CapacityError` (the camera or the relay is
full) or, when the owner's own cap is reached, a
:class:`~streams.errors.OwnerCapacityError`.

Event loop only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal, get_args

from streams.errors import CapacityError, OwnerCapacityError

__all__ = ["PROTOCOL_NAMES", "Seat", "ViewerLedger", "ViewerLimits", "ViewerProtocol"]

ViewerProtocol = Literal["webrtc", "mse", "mjpeg", "rtsp", "gb28181"]

PROTOCOL_NAMES: dict[ViewerProtocol, str] = {
    "webrtc": "WebRTC",
    "mse": "MSE",
    "mjpeg": "MJPEG",
    "rtsp": "RTSP",
    "gb28181": "GB/T 28181",
}
"""How a refusal names each protocol."""


@dataclass(frozen=True, slots=True)
class ViewerLimits:
    """Every cap on viewer seats. See the module docstring."""

    max_per_camera: int = 32
    """Live viewers of one camera, all protocols."""
    max_total: int = 256
    """Live viewers of the whole relay, all protocols."""
    max_per_owner: int = 64
    """Seats (live and pending) of one owner, all cameras."""
    max_per_owner_per_camera: int = 4
    """Seats (live and pending) of one owner on one camera."""
    max_pending_per_camera: int = 8
    """Pending seats (WebRTC sessions answered, not yet connected) of one camera."""
    max_pending_per_owner: int = 32
    """Pending seats of one owner (a whole wall opening at once)."""
    max_pending_total: int = 64
    """Pending seats of the whole relay."""


class Seat:
    """One viewer's place in the ledger: live, or pending until :meth:`ViewerLedger.promote`."""

    __slots__ = ("camera_id", "live", "owner", "protocol")

    def __init__(self, camera_id: str, protocol: ViewerProtocol, owner: str | None, *, live: bool) -> None:
        self.camera_id = camera_id
        self.protocol = protocol
        self.owner = owner
        self.live = live


class ViewerLedger:
    """The seats held by every viewer of the relay, and the caps that admit them."""

    def __init__(self, limits: ViewerLimits | None = None) -> None:
        self.limits = limits or ViewerLimits()
        self._seats: set[Seat] = set()

    def _matching(
        self,
        *,
        live: bool | None,
        camera_id: str | None = None,
        owner: str | None = None,
        protocol: ViewerProtocol | None = None,
    ) -> list[Seat]:
        return [
            s
            for s in self._seats
            if (live is None or s.live is live)
            and (camera_id is None or s.camera_id == camera_id)
            and (owner is None or s.owner == owner)
            and (protocol is None or s.protocol == protocol)
        ]

    def count(
        self,
        *,
        live: bool | None = True,
        camera_id: str | None = None,
        owner: str | None = None,
        protocol: ViewerProtocol | None = None,
    ) -> int:
        """Seats of one kind (live by default; None: both), narrowed to one camera, owner
        and protocol when given."""
        return len(self._matching(live=live, camera_id=camera_id, owner=owner, protocol=protocol))

    def admit(
        self, camera_id: str, protocol: ViewerProtocol, owner: str | None = None, *, pending: bool = False
    ) -> Seat:
        """A seat for a new viewer (a pending one for a WebRTC offer), or the cap that refuses it."""
        limits = self.limits
        full = self._full(camera_id)
        if full is not None:
            who, verb, viewers = full
            raise CapacityError(f"{who} already {verb} {viewers}")
        if owner is not None:
            self._check_owner(camera_id, owner, pending=pending)
        if pending:
            if self.count(live=False, camera_id=camera_id) >= limits.max_pending_per_camera:
                raise CapacityError(
                    f"camera {camera_id} already has {limits.max_pending_per_camera} "
                    "WebRTC viewers connecting"
                )
            if self.count(live=False) >= limits.max_pending_total:
                raise CapacityError(
                    f"the relay already has {limits.max_pending_total} WebRTC viewers connecting"
                )
        seat = Seat(camera_id, protocol, owner, live=not pending)
        self._seats.add(seat)
        return seat

    def promote(self, seat: Seat) -> str | None:
        """Make a pending seat live; the reason it cannot be (a live cap is full), or None."""
        if seat.live or seat not in self._seats:
            return None
        full = self._full(seat.camera_id)
        if full is not None:
            who, _, viewers = full
            return f"{who} reached {viewers} while this one connected"
        seat.live = True
        return None

    def release(self, seat: Seat) -> None:
        """Free a seat; idempotent."""
        self._seats.discard(seat)

    def _full(self, camera_id: str) -> tuple[str, str, str] | None:
        """The live cap a new viewer of ``camera_id`` would pass, as words: ``("the relay",
        "serves", "256 viewers (WebRTC 200, MSE 56)")``; None when both have room."""
        limits = self.limits
        everyone = self._matching(live=True)
        if len(everyone) >= limits.max_total:
            return "the relay", "serves", _viewers(limits.max_total, everyone)
        mine = [s for s in everyone if s.camera_id == camera_id]
        if len(mine) >= limits.max_per_camera:
            return f"camera {camera_id}", "has", _viewers(limits.max_per_camera, mine)
        return None

    def _check_owner(self, camera_id: str, owner: str, *, pending: bool) -> None:
        limits = self.limits
        here = self._matching(live=None, camera_id=camera_id, owner=owner)
        if len(here) >= limits.max_per_owner_per_camera:
            raise OwnerCapacityError(
                f"you already have {_sessions(limits.max_per_owner_per_camera, here)} of camera "
                f"{camera_id}; close one first"
            )
        everywhere = self._matching(live=None, owner=owner)
        if len(everywhere) >= limits.max_per_owner:
            raise OwnerCapacityError(
                f"you already have {_sessions(limits.max_per_owner, everywhere)}; close one first"
            )
        if pending and self.count(live=False, owner=owner) >= limits.max_pending_per_owner:
            raise OwnerCapacityError(
                f"you already have {limits.max_pending_per_owner} WebRTC sessions still connecting; "
                "wait for them to connect or end"
            )


def _mix(seats: list[Seat]) -> str:
    """``WebRTC 20, RTSP 12``: the protocols of ``seats``, most first."""
    counts = Counter(s.protocol for s in seats)
    order = list(get_args(ViewerProtocol))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], order.index(item[0])))
    return ", ".join(f"{PROTOCOL_NAMES[protocol]} {n}" for protocol, n in ranked)


def _viewers(cap: int, seats: list[Seat]) -> str:
    return f"{cap} viewers ({_mix(seats)})"


def _sessions(cap: int, seats: list[Seat]) -> str:
    return f"{cap} viewer sessions ({_mix(seats)})"
