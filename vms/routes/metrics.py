"""``GET /metrics``: the Prometheus text format, behind an optional bearer token.

No login otherwise: the figures name cameras and halls by id and hold no video,
URL or credential. When ``metrics.bearer_token`` is set the scraper must send
``Authorization: Bearer <token>``; anything else gets 401.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vms.deps import ConfigDep
from vms.metrics import metrics_of
from vms.problems import Problem

router = APIRouter(tags=["metrics"])


def _authorized(request: Request, token: str) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, config: ConfigDep) -> Response:
    """Every camera's state and traffic, viewers, HTTP requests and the process's own figures."""
    token = config.metrics.bearer_token
    if token is not None and not _authorized(request, token.get_secret_value()):
        raise Problem(
            401, "send the metrics token as 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
        )
    registered = metrics_of(request.app.state)
    if registered is None:
        raise Problem(503, "metrics are not set up")
    return Response(generate_latest(registered.registry), media_type=CONTENT_TYPE_LATEST)
