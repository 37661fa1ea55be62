"""Configuration of a monitoring centre's alarm webhook (``centres[].webhook``).

Kept apart from :mod:`vms.config` so that module stays the site's shape; sent by
:mod:`vms.webhooks`. Same rules as every section: unknown keys are errors, inputs
are never echoed (the URL may hold a token, the secret is ``SecretStr``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from vms.config_checks import invalid, split_url
from vms.config_media import Seconds

MIN_SECRET_CHARS = 16


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _kinds_shape(value: Any) -> str:
    return "all" if isinstance(value, str) else "list"


def alarm_kinds() -> tuple[str, ...]:
    """Every kind of alarm :mod:`vms.alarms` raises, in its order."""
    # Imported here: vms.alarms imports the configuration models.
    from vms.alarms import AlarmKind

    return get_args(AlarmKind)


class WebhookSettings(_Model):
    """Where a centre's alarms are posted, how they are signed, and how hard delivery tries."""

    url: str = Field(description="http:// or https:// address that receives the alarms as JSON POSTs.")
    secret: SecretStr = Field(
        description=f"Shared secret ({MIN_SECRET_CHARS} characters or more) that signs every post "
        "(X-Hallwatch-Signature)."
    )
    kinds: Annotated[
        Annotated[list[str], Tag("list")] | Annotated[Literal["all"], Tag("all")],
        Discriminator(_kinds_shape),
    ] = Field(
        default="all",
        description="Alarm kinds posted: the word all (informational back-online events included), "
        "or a list such as [offline, stalled, recording_failed].",
    )
    acks: bool = Field(
        default=True, description="Also post each acknowledgement, so the receiver can close its page."
    )
    timeout: Seconds = Field(default=5.0, le=120, description="Seconds one attempt may take in all.")
    max_attempts: int = Field(
        default=6, ge=1, le=20, description="Attempts per alarm before it counts as failed."
    )
    backoff_initial: Seconds = Field(
        default=1.0, le=3600, description="Wait before the second attempt; doubles after each failed one."
    )
    backoff_max: Seconds = Field(default=60.0, le=3600, description="Longest wait between two attempts.")
    queue_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Alarms waiting while the receiver is down; beyond it the oldest is dropped "
        "(and counted).",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        check_webhook_url(url)
        return url

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value().strip()) < MIN_SECRET_CHARS:
            raise invalid(
                "webhook_secret",
                f"the secret must be at least {MIN_SECRET_CHARS} characters; "
                "generate one, e.g. with: openssl rand -hex 32",
            )
        return secret

    @field_validator("kinds", mode="before")
    @classmethod
    def _all_or_known(cls, value: object) -> object:
        known = alarm_kinds()
        if isinstance(value, str) and value != "all":
            value = [value]
        if not isinstance(value, str | list):
            raise invalid(
                "webhook_kinds", f"expected the word all or a list of alarm kinds: {', '.join(known)}"
            )
        for kind in value if isinstance(value, list) else ():
            if kind not in known:
                shown = repr(kind[:40]) if isinstance(kind, str) else "a value that is not text"
                raise invalid(
                    "webhook_kinds", f"{shown} is not an alarm kind; use all or some of: {', '.join(known)}"
                )
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.backoff_max < self.backoff_initial:
            raise invalid(
                "webhook_backoff",
                f"backoff_max ({self.backoff_max:g}) is shorter than backoff_initial "
                f"({self.backoff_initial:g}); make backoff_max at least backoff_initial",
            )
        return self

    @property
    def target(self) -> str:
        """``scheme://host:port`` of the URL: safe to show, since a path or query may hold a token."""
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        return f"{parts.scheme.lower()}://{host}:{port}"

    def wants(self, event_type: str, kind: object) -> bool:
        """Whether an event (``alarm`` or ``ack``) of this alarm kind is posted."""
        if event_type == "ack" and not self.acks:
            return False
        return self.kinds == "all" or kind in self.kinds


def check_webhook_url(url: str) -> None:
    """Raise a ``PydanticCustomError`` naming what is wrong with a webhook URL. Never echoes it."""
    parts, port = split_url(url, "webhook_url")
    if parts.scheme.lower() not in ("http", "https"):
        raise invalid(
            "webhook_url", "a webhook URL starts with https:// (or http:// inside a trusted network)"
        )
    if parts.username is not None or parts.password is not None:
        raise invalid(
            "webhook_url",
            "the URL contains a user name or password; remove 'user:password@': "
            "the receiver checks the X-Hallwatch-Signature made with secret instead",
        )
    if not parts.hostname:
        raise invalid("webhook_url", "the URL has no host; write it like https://duty.example.org/hallwatch")
    if port == 0:
        raise invalid("webhook_url", "port 0 is not a port a receiver listens on")
