"""What an alarm is: its kinds, the :class:`Alarm` record, and the two changes a rule asks for.

A rule of :class:`~vms.alarms.AlarmCentre` either opens a trouble (:class:`Opening`: a new
alarm unless one that blocks it is still open for the camera) or closes one
(:class:`Closing`: the open alarms of some kinds are resolved, and an informational event
names them). The centre applies them itself in one process; with several instances
:mod:`vms.alarms_shared` applies them in PostgreSQL, so two instances that see the same
fault make one alarm.

Plain data, any thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

AlarmKind = Literal[
    "offline",
    "stalled",
    "online",
    "recording_failed",
    "recording_resumed",
    "recording_space",
    "dark",
    "overexposed",
    "covered",
    "blurred",
    "frozen",
    "moved",
    "colour_cast",
    "noisy",
    "picture_ok",
]
INFORMATIONAL: frozenset[str] = frozenset(("online", "recording_resumed", "picture_ok"))
"""Kinds that report the end of a trouble and need no acknowledgement."""
ONE_OFF: frozenset[str] = frozenset(("recording_space",))
"""Kinds that need an acknowledgement but open no trouble: nothing ever resolves them."""


class UnknownAlarm(LookupError):
    """No such alarm (any more), or it lies in a hall the caller may not see."""


class NotAcknowledgeable(ValueError):
    """The alarm is informational (a camera back online): there is nothing to acknowledge."""


def opens_trouble(kind: str) -> bool:
    """Whether an alarm of this kind stays open until an event resolves it."""
    return kind not in INFORMATIONAL and kind not in ONE_OFF


@dataclass(slots=True)
class Alarm:
    """One alarm; only the acknowledgement fields ever change, once."""

    id: int
    camera_id: str
    hall_id: str
    kind: AlarmKind
    at: datetime
    message: str
    resolves: tuple[int, ...] = ()
    """For an informational event: the alarms of the trouble that just ended."""
    texts: dict[str, str] = field(default_factory=dict)
    """The message by language (``zh-CN``, ``en``): see :mod:`vms.alarm_texts`."""
    picture: bool = False
    """Whether a JPEG of the picture that raised it is kept (:meth:`AlarmCentre.picture`)."""
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None

    @property
    def informational(self) -> bool:
        """Whether the alarm needs no acknowledgement (the end of a trouble: :data:`INFORMATIONAL`)."""
        return self.kind in INFORMATIONAL

    @property
    def unacknowledged(self) -> bool:
        """Whether it still waits for an operator."""
        return not self.informational and self.acknowledged_by is None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "camera_id": self.camera_id,
            "hall_id": self.hall_id,
            "kind": self.kind,
            "at": self.at.isoformat(),
            "message": self.message,
            "texts": self.texts,
            "picture": f"/api/v1/alarms/{self.id}/picture" if self.picture else None,
            "informational": self.informational,
            "resolves": list(self.resolves),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alarm:
        """The alarm :meth:`as_json` described."""
        acked_at = data["acknowledged_at"]
        return cls(
            id=int(data["id"]),
            camera_id=data["camera_id"],
            hall_id=data["hall_id"],
            kind=data["kind"],
            at=datetime.fromisoformat(data["at"]),
            message=data["message"],
            resolves=tuple(int(i) for i in data["resolves"]),
            texts=dict(data["texts"]),
            picture=data["picture"] is not None,
            acknowledged_by=data["acknowledged_by"],
            acknowledged_at=datetime.fromisoformat(acked_at) if acked_at else None,
        )


@dataclass(frozen=True, slots=True)
class Opening:
    """Raise ``kind`` for the camera unless an alarm of a ``blocked_by`` kind is open for it."""

    camera_id: str
    hall_id: str
    kind: AlarmKind
    texts: dict[str, str]
    blocked_by: tuple[str, ...]
    picture: bytes | None = None


@dataclass(frozen=True, slots=True)
class Closing:
    """Resolve the camera's open alarms of ``kinds``; if there were any and ``then`` is set,
    raise that informational event, its text told how long the trouble lasted (and which
    picture condition ``cleared``)."""

    camera_id: str
    hall_id: str
    kinds: tuple[str, ...]
    then: AlarmKind | None
    cleared: str | None = None
