"""``GET /metrics`` (the Prometheus text format), and who may read the monitoring endpoints.

No login: monitoring systems read ``/metrics`` and the camera probes
(:mod:`vms.routes.probes`) anonymously. But both name every camera and hall, which
a user outside a centre must not learn, so :func:`monitoring_access` lets a
request through only

- from an address in ``metrics.allowed_networks`` (default: loopback), unless it
  came through a proxy (it carries ``Forwarded``, ``X-Forwarded-For`` or
  ``X-Real-IP``: its real sender is not the address we see), or
- with ``Authorization: Bearer <metrics.bearer_token>``, from anywhere.

A wrong token is refused even from an allowed network (401: a mistake to report,
not to paper over). Otherwise the answer is 401 asking for the token when one is
configured, else 403; it is the same for every path and camera id, so it tells
nothing about what exists. ``/healthz`` and ``/readyz`` name nothing and stay
open to all.
"""

from __future__ import annotations

import hmac
from ipaddress import IPv6Address, ip_address

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vms.config_access import MetricsSettings
from vms.deps import ConfigDep
from vms.metrics import metrics_of
from vms.problems import Problem

FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def _token_matches(presented: str, token: str) -> bool:
    scheme, _, value = presented.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _from_allowed_network(request: Request, settings: MetricsSettings) -> bool:
    if request.client is None or any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    try:
        address = ip_address(request.client.host)
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return any(address in network for network in settings.allowed_networks)


async def monitoring_access(request: Request, config: ConfigDep) -> None:
    """Let a monitoring system through; refuse anyone else (see the module docstring)."""
    settings = config.metrics
    token = settings.bearer_token.get_secret_value() if settings.bearer_token is not None else None
    presented = request.headers.get("authorization")
    if token is not None and presented is not None:
        if _token_matches(presented, token):
            return
    elif _from_allowed_network(request, settings):
        return
    if token is not None:
        raise Problem(
            401, "send the metrics token as 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
        )
    raise Problem(403, "the monitoring endpoints answer only the networks in metrics.allowed_networks")


router = APIRouter(tags=["metrics"], dependencies=[Depends(monitoring_access)])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Every camera's state and traffic, viewers, HTTP requests and the process's own figures."""
    registered = metrics_of(request.app.state)
    if registered is None:
        raise Problem(503, "metrics are not set up")
    return Response(generate_latest(registered.registry), media_type=CONTENT_TYPE_LATEST)
