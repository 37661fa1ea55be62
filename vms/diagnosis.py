"""The picture diagnosis seen from the control plane: alarms, reference pictures, health.

:class:`DiagnosisService` hears the analysis outputs' events through
``StreamManager.add_output_listener``: a raised picture condition becomes an alarm of
that kind, with the JPEG of the picture that raised it (:meth:`AlarmCentre.picture_raised`),
and its clearing an informational ``picture_ok`` event resolving it.

Reference pictures: an operator sets a camera's from its current picture
(:meth:`DiagnosisService.set_reference`); the JPEG, who set it and when are stored in
``reference_pictures`` in the same transaction as a ``reference_set`` audit record,
and given back to the camera's analysis at every start, before the cameras start.

:meth:`DiagnosisService.health` is one camera's diagnosis for the API: the last scores,
the conditions raised, the picture alarms not cleared, the reference picture's
metadata. :meth:`DiagnosisService.bad_picture` is what the camera probe answers 503 for.

Event loop only.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from streams import AnalysisOutput, PictureCleared, PictureRaised, StreamManager
from vms.access import Principal
from vms.alarm_texts import describe
from vms.alarms import AlarmCentre
from vms.audit import AuditLog
from vms.auth_types import aware
from vms.storage import Database
from vms.storage.tables import ReferencePicture

log = logging.getLogger(__name__)


class NotDiagnosed(LookupError):
    """The camera's pictures are not diagnosed (disabled by configuration, or the camera is)."""


@dataclass(frozen=True, slots=True)
class ReferenceInfo:
    set_by: str
    set_at: datetime


class DiagnosisService:
    """See the module docstring."""

    def __init__(self, db: Database, manager: StreamManager, alarms: AlarmCentre, audit: AuditLog) -> None:
        self.db, self.manager, self.alarms, self.audit = db, manager, alarms, audit
        self._references: dict[str, ReferenceInfo] = {}

    def on_output_event(self, camera_id: str, event: object) -> None:
        """``StreamManager.add_output_listener``: picture conditions to alarms."""
        if isinstance(event, PictureRaised):
            self.alarms.picture_raised(camera_id, event.condition.value, event.jpeg)
        elif isinstance(event, PictureCleared):
            self.alarms.picture_cleared(camera_id, event.condition.value)

    def output(self, camera_id: str) -> AnalysisOutput:
        """The camera's analysis; :class:`NotDiagnosed` when it has none,
        :class:`~streams.UnknownCamera` for an unknown camera."""
        found = self.manager.output(camera_id, "analysis", AnalysisOutput)
        if found is None:
            raise NotDiagnosed(camera_id)
        return found

    async def load_references(self) -> None:
        """Give every diagnosed camera its stored reference picture (before the cameras start)."""
        async with self.db.session() as s:
            rows = (await s.scalars(select(ReferencePicture))).all()
        for row in rows:
            output = self.manager.output(row.camera_id, "analysis", AnalysisOutput)
            if output is None:
                continue
            try:
                await output.load_reference(row.jpeg)
            except Exception:
                log.exception("the reference picture of camera %s cannot be used", row.camera_id)
                continue
            self._references[row.camera_id] = ReferenceInfo(row.set_by, aware(row.set_at))

    async def set_reference(self, camera_id: str, principal: Principal) -> ReferenceInfo:
        """Take the camera's current picture as its reference, store and audit it. Raises
        :class:`NotDiagnosed`, or :class:`~streams.outputs.decoder.NoPicture` before the
        first analysed picture."""
        output = self.output(camera_id)
        jpeg = await output.set_reference()
        info = ReferenceInfo(principal.username, datetime.now(UTC))
        async with self.db.session() as s, s.begin():
            row = await s.get(ReferencePicture, camera_id)
            if row is None:
                s.add(
                    ReferencePicture(camera_id=camera_id, jpeg=jpeg, set_by=info.set_by, set_at=info.set_at)
                )
            else:
                row.jpeg, row.set_by, row.set_at = jpeg, info.set_by, info.set_at
            await self.audit.add(
                s, "reference_set", principal=principal, camera_id=camera_id, detail={"bytes": len(jpeg)}
            )
        self._references[camera_id] = info
        return info

    async def reference_picture(self, camera_id: str) -> bytes | None:
        """The stored reference JPEG, or None."""
        async with self.db.session() as s:
            row = await s.get(ReferencePicture, camera_id)
            return None if row is None else row.jpeg

    def bad_picture(self, camera_id: str) -> list[str]:
        """The picture conditions raised now for the camera (empty when fine or not diagnosed)."""
        output = self.manager.output(camera_id, "analysis", AnalysisOutput)
        return [] if output is None else sorted(output.raised)

    def health(self, camera_id: str) -> dict[str, Any]:
        """The camera's diagnosis for the API. Raises :class:`~streams.UnknownCamera`."""
        output = self.manager.output(camera_id, "analysis", AnalysisOutput)
        if output is None:
            return {"enabled": False}
        scores = output.scores
        reference = self._references.get(camera_id)
        raised = sorted(output.raised)
        return {
            "enabled": True,
            "stream": output.context.stream,
            "interval": output.spec.interval,
            "analysed": output.analysed,
            "learned": output.learned,
            "last_analysed": _iso(output.last_analysed),
            "scores": None if scores is None else dataclasses.asdict(scores),
            "raised": raised,
            "texts": {c: describe(c) for c in raised},
            "alarms": self.alarms.picture_trouble(camera_id),
            "reference": None
            if reference is None
            else {
                "set_by": reference.set_by,
                "set_at": reference.set_at.isoformat(),
                "picture": f"/api/v1/cameras/{camera_id}/reference.jpg",
            },
        }


def _iso(unix: float | None) -> str | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC).isoformat()
