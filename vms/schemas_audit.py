"""Response bodies of the audit API. The audit table holds no secrets by design."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class AuditRecordOut(BaseModel):
    id: int
    at: datetime
    action: str
    user_id: int | None
    username: str | None
    centre_id: str | None
    camera_id: str | None
    protocol: str | None
    source_addr: str | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    bytes: int | None
    detail: str | None
