"""Response bodies of ``GET /api/v1/cluster``: the instances and the cameras each pulls."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class InstanceOut(BaseModel):
    id: str
    http_url: str | None = Field(description="Base URL of its inter-instance path; none alone.")
    rtsp_url: str | None = Field(description="Base URL of its RTSP re-serve, if any.")
    this: bool = Field(description="The instance that answered.")
    live: bool = Field(description="Its heartbeat is younger than the lease timeout.")
    ready: bool = Field(description="It takes cameras.")
    started_at: datetime | None
    heartbeat_age: float | None = Field(description="Seconds since its last heartbeat (database clock).")
    cameras: list[str] = Field(description="The cameras it pulls (those the caller's centre may see).")


class ClusterOut(BaseModel):
    clustered: bool = Field(
        description="False: one instance owns every camera (no cluster: section, or a SQLite database)."
    )
    lease_timeout: float | None = Field(description="Seconds a lease lasts without renewal.")
    instances: list[InstanceOut]
