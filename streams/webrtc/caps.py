"""Who may hold a WebRTC viewer slot: the caps on WHEP sessions, and their ledger.

A session holds a **pending** seat from the moment its offer is admitted until
its connection is up (ICE and DTLS done), then a **live** seat until it ends.
The two are counted apart, so that offers which never connect cannot hold a
camera's viewer slots:

* live seats are capped per camera (``max_per_camera``) and for the relay
  (``max_total``); a pending seat is only promoted to a live one if a live slot
  is free when its connection comes up;
* pending seats have caps of their own (per camera, per owner, for the relay)
  and a short life (``pending_timeout``, enforced by the WebRTC output);
* an **owner** (an opaque key the control plane passes in, such as a user id)
  is capped in seats of both kinds, in all and per camera, so that one account
  cannot take a camera from everyone else. Sessions without an owner are capped
  per camera and in total only.

A refusal is a :class:`~streams.errors.CapacityError` (the camera or the relay is
full) or, when the owner's own cap is reached, a
:class:`~streams.errors.OwnerCapacityError`.

Event loop only.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.errors import CapacityError, OwnerCapacityError


@dataclass(frozen=True, slots=True)
class WhepLimits:
    """Every cap on WHEP sessions. See the module docstring."""

    max_per_camera: int = 32
    """Connected viewers of one camera."""
    max_total: int = 256
    """Connected viewers of the whole relay."""
    max_per_owner: int = 64
    """Sessions (connected and pending) of one owner, all cameras."""
    max_per_owner_per_camera: int = 4
    """Sessions (connected and pending) of one owner on one camera."""
    max_pending_per_camera: int = 8
    """Sessions of one camera answered but not yet connected."""
    max_pending_per_owner: int = 32
    """Sessions of one owner answered but not yet connected (a whole wall opening at once)."""
    max_pending_total: int = 64
    """Sessions of the whole relay answered but not yet connected."""
    pending_timeout: float = 5.0
    """Seconds a session may take from its offer to a connected state before it is closed."""


class Seat:
    """One session's place in the ledger: pending until :meth:`Ledger.promote`."""

    __slots__ = ("camera_id", "live", "owner")

    def __init__(self, camera_id: str, owner: str | None) -> None:
        self.camera_id = camera_id
        self.owner = owner
        self.live = False


class Ledger:
    """The seats held by every WHEP session, and the caps that admit them."""

    def __init__(self, limits: WhepLimits) -> None:
        self.limits = limits
        self._seats: set[Seat] = set()

    def count(self, *, live: bool, camera_id: str | None = None, owner: str | None = None) -> int:
        """Seats of one kind, of one camera and/or one owner when given."""
        return sum(
            1
            for s in self._seats
            if s.live is live
            and (camera_id is None or s.camera_id == camera_id)
            and (owner is None or s.owner == owner)
        )

    def _held(self, owner: str, camera_id: str | None = None) -> int:
        return sum(
            1 for s in self._seats if s.owner == owner and (camera_id is None or s.camera_id == camera_id)
        )

    def admit(self, camera_id: str, owner: str | None) -> Seat:
        """A pending seat for a new offer, or the cap that refuses it."""
        limits = self.limits
        if self.count(live=True) >= limits.max_total:
            raise CapacityError(f"the relay already serves {limits.max_total} WebRTC viewers")
        if self.count(live=True, camera_id=camera_id) >= limits.max_per_camera:
            raise CapacityError(f"camera {camera_id} already has {limits.max_per_camera} WebRTC viewers")
        if owner is not None:
            if self._held(owner, camera_id) >= limits.max_per_owner_per_camera:
                raise OwnerCapacityError(
                    f"you already have {limits.max_per_owner_per_camera} WebRTC sessions of camera "
                    f"{camera_id}; close one first"
                )
            if self._held(owner) >= limits.max_per_owner:
                raise OwnerCapacityError(
                    f"you already have {limits.max_per_owner} WebRTC sessions; close one first"
                )
            if self.count(live=False, owner=owner) >= limits.max_pending_per_owner:
                raise OwnerCapacityError(
                    f"you already have {limits.max_pending_per_owner} WebRTC sessions still connecting; "
                    "wait for them to connect or end"
                )
        if self.count(live=False, camera_id=camera_id) >= limits.max_pending_per_camera:
            raise CapacityError(
                f"camera {camera_id} already has {limits.max_pending_per_camera} WebRTC viewers connecting"
            )
        if self.count(live=False) >= limits.max_pending_total:
            raise CapacityError(f"the relay already has {limits.max_pending_total} WebRTC viewers connecting")
        seat = Seat(camera_id, owner)
        self._seats.add(seat)
        return seat

    def promote(self, seat: Seat) -> str | None:
        """Make a pending seat live; the reason it cannot be (a live cap is full), or None."""
        if seat.live or seat not in self._seats:
            return None
        if self.count(live=True) >= self.limits.max_total:
            return f"the relay reached {self.limits.max_total} WebRTC viewers while this one connected"
        if self.count(live=True, camera_id=seat.camera_id) >= self.limits.max_per_camera:
            return (
                f"camera {seat.camera_id} reached {self.limits.max_per_camera} WebRTC viewers "
                "while this one connected"
            )
        seat.live = True
        return None

    def release(self, seat: Seat) -> None:
        """Free a seat; idempotent."""
        self._seats.discard(seat)
