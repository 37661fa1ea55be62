"""The alarm webhook's health for a centre's administrators: ``GET /api/v1/webhooks``.

An admin sees the webhook of their own centre only (an empty list when it has none),
with how its deliveries fare: counts, the last success, the last failure in our own
words. The URL is shown as ``scheme://host:port`` (its path or query may hold a token)
and the secret never.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from vms.deps import AdminUser
from vms.problems import Problem
from vms.webhooks import Webhooks

router = APIRouter(tags=["webhooks"])


class WebhookOut(BaseModel):
    centre: str
    target: str
    """``scheme://host:port`` of the configured URL."""
    kinds: list[str] | Literal["all"]
    acks: bool
    queued: int
    """Events waiting for their turn."""
    delivered: int
    failed: int
    """Events given up: refused by the receiver (4xx) or failing after every attempt."""
    dropped: int
    """Events pushed out of the full queue while the receiver was down."""
    consecutive_failures: int
    """Failed attempts since the last delivery: 0 when all is well."""
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure: str | None


@router.get("/webhooks")
async def list_webhooks(request: Request, admin: AdminUser) -> list[WebhookOut]:
    """The alarm webhook of the caller's centre and how its deliveries fare (admins)."""
    webhooks: Webhooks | None = getattr(request.app.state, "webhooks", None)
    if webhooks is None:
        raise Problem(503, "the service is starting or stopping")
    sender = webhooks.senders.get(admin.centre_id)
    if sender is None:
        return []
    status = sender.status
    return [
        WebhookOut(
            centre=status.centre_id,
            target=status.target,
            kinds=sender.settings.kinds,
            acks=sender.settings.acks,
            queued=sender.queued,
            delivered=status.delivered,
            failed=status.failed,
            dropped=status.dropped,
            consecutive_failures=status.consecutive_failures,
            last_success_at=status.last_success_at,
            last_failure_at=status.last_failure_at,
            last_failure=status.last_failure,
        )
    ]
