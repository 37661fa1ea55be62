"""Configuration sections of storage, access, audit and metrics.

Kept apart from :mod:`vms.config` (the site) and :mod:`vms.config_media` (the media
plane) so each module stays one concern. Same rules: unknown keys are errors, secrets are ``SecretStr``.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class DatabaseSettings(_Model):
    """Where users, sessions and the audit trail live."""

    url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of a PostgreSQL database "
        "(postgresql+asyncpg://user:password@host/db); empty: a SQLite file in server.data_dir.",
    )
    sqlite_lock_wait: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds a write to the SQLite file waits while another process holds its write "
        "lock; after that the write fails and its request answers 503.",
    )

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        scheme = value.get_secret_value().split("://", 1)[0]
        if scheme not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
            raise ValueError(
                f"unsupported database URL scheme '{scheme}'; "
                "use postgresql+asyncpg://user:password@host:5432/hallwatch"
            )
        return value


class AuthSettings(_Model):
    """Logins, sessions, API tokens and the first administrators."""

    session_ttl: float = Field(default=12 * 3600, gt=0, description="Seconds a login session lasts.")
    session_idle_timeout: float = Field(
        default=2 * 3600, gt=0, description="Seconds without a request after which a session ends."
    )
    secure_cookies: bool = Field(
        default=False, description="Mark cookies Secure; set true when the service is behind HTTPS."
    )
    max_failed_logins: int = Field(
        default=5, ge=1, description="Failed logins (per user, or per address) before a lockout."
    )
    lockout_seconds: float = Field(default=900, gt=0, description="How long a lockout lasts.")
    failure_window: float = Field(
        default=900, gt=0, description="Seconds over which failed logins are counted."
    )
    login_audit_interval: float = Field(
        default=60,
        gt=0,
        le=86400,
        description="Logins refused during a lockout are audited once per source address and "
        "targeted account at once, then as one row with their count per this many seconds.",
    )
    token_max_days: int = Field(default=365, ge=1, description="Longest lifetime of an API token.")
    viewer_permissions: list[Literal["snapshot", "playback"]] = Field(
        default_factory=list,
        description="What viewers may do besides watching live: take snapshots, play recordings.",
    )
    bootstrap_secrets_file: Path | None = Field(
        default=None,
        description="YAML file mapping centre id to the first admin's password; otherwise "
        "$HALLWATCH_ADMIN_PASSWORD_<CENTRE>, otherwise a generated password printed once.",
    )


class AuditSettings(_Model):
    """The append-only record of who watched what."""

    retention_days: int = Field(default=180, ge=1, description="Days audit records are kept.")


class MetricsSettings(_Model):
    """The Prometheus endpoint and the per-camera probes: they name every camera and hall,
    so only monitoring systems may read them."""

    bearer_token: SecretStr | None = Field(
        default=None,
        description="With 'Authorization: Bearer <token>', /metrics and the camera probes answer "
        "from any address.",
    )
    allowed_networks: tuple[IPvAnyNetwork, ...] = Field(
        default=(IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")),
        max_length=256,
        description="Networks whose requests may read /metrics and the camera probes without the "
        "token (a request that came through a proxy never counts as from these); empty: the token only.",
    )
