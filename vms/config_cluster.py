"""Configuration of running several instances as one system (``cluster:``).

With this section and a PostgreSQL ``database.url``, the instances that share the
database share the cameras: each camera is pulled by one live instance holding a lease
on it (:mod:`vms.cluster`). Without it, or on SQLite, one instance owns everything.

The section says who this instance is (its id and the addresses the other instances
reach it at: those differ per instance) and the lease timing (which must be equal on
all instances: it is part of the shared configuration's hash). Same rules as every
section: unknown keys are errors, inputs never echoed. Pure data; any thread.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from vms.config_checks import invalid, split_url
from vms.config_media import Seconds

InstanceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
"""An instance id: 1-128 letters, digits, ``.``, ``-`` or ``_`` (a host name fits)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _checked_url(url: str | None, schemes: tuple[str, ...], key: str) -> str | None:
    if url is None:
        return None
    parts, _ = split_url(url, f"cluster_{key}")
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise invalid(
            f"cluster_{key}",
            f"{key} must be a {' or '.join(s + '://' for s in schemes)} URL with a host, "
            f"e.g. {schemes[0]}://10.0.0.11:{8000 if key == 'http_url' else 8554}",
        )
    if "@" in parts.netloc:
        raise invalid(f"cluster_{key}", f"{key} must not carry a user name or password")
    return url.rstrip("/")


class ClusterSettings(_Model):
    """This instance's place among the instances sharing the database, and the lease timing."""

    instance_id: InstanceId | None = Field(
        default=None,
        description="This instance's id, unique among the live instances; empty: <host name>-<process id>.",
    )
    http_url: str | None = Field(
        default=None,
        description="HTTP base URL the other instances reach this one at (the inter-instance path), "
        "e.g. http://10.0.0.11:8000; empty: http://<host name>:<server.port>.",
    )
    rtsp_url: str | None = Field(
        default=None,
        description="RTSP re-serve base URL of this instance, e.g. rtsp://10.0.0.11:8554; empty: "
        "rtsp://<host name>:<rtsp_server.port> when the RTSP server is enabled, else none.",
    )
    lease_timeout: Seconds = Field(
        default=6.0,
        le=300,
        description="Seconds a camera lease (and an instance's heartbeat) lasts without renewal: a dead "
        "instance's cameras are taken over after this.",
    )
    renew_interval: Seconds | None = Field(
        default=None, description="Seconds between lease renewals; empty: lease_timeout / 3."
    )
    fence_margin: Seconds | None = Field(
        default=None,
        description="An instance whose last renewal is older than lease_timeout minus this drops all "
        "its cameras, before the database could give them to another; empty: lease_timeout / 6.",
    )
    rebalance_interval: Seconds = Field(
        default=5.0,
        le=3600,
        description="Seconds between two rounds of handing cameras to less loaded instances.",
    )
    max_moves: int = Field(
        default=4, ge=1, le=1000, description="Cameras this instance hands over per rebalance round at most."
    )

    @field_validator("http_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        return _checked_url(url, ("http", "https"), "http_url")

    @field_validator("rtsp_url")
    @classmethod
    def _rtsp(cls, url: str | None) -> str | None:
        return _checked_url(url, ("rtsp", "rtsps"), "rtsp_url")

    @model_validator(mode="after")
    def _timing(self) -> Self:
        if self.renew_every >= self.fence_after:
            raise invalid(
                "cluster_timing",
                f"renew_interval ({self.renew_every:g} s) must be shorter than lease_timeout minus "
                f"fence_margin ({self.fence_after:g} s), or every lease is dropped before it is renewed",
            )
        return self

    @property
    def renew_every(self) -> float:
        """Seconds between renewals."""
        return self.renew_interval if self.renew_interval is not None else self.lease_timeout / 3

    @property
    def fence_after(self) -> float:
        """Seconds after the last renewal's start at which this instance drops its leases."""
        margin = self.fence_margin if self.fence_margin is not None else self.lease_timeout / 6
        return self.lease_timeout - margin
