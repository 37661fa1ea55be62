"""WHEP sessions in a cluster: the session's URL says which instance holds it.

A viewer's WebRTC session lives in the process that answered its offer, but its
``DELETE`` may reach any instance behind the load balancer. So in a cluster the
session id in the ``Location`` is ``<instance id>~<id>`` (``~`` is in neither an
instance id nor a session id), and an instance that receives a ``DELETE`` for a session
another live instance holds passes it on to that instance's ``http_url`` with the
caller's own credentials (``Authorization``, ``Cookie``, ``X-CSRF-Token``: sessions and
tokens are in the shared database, so the holder checks them as the first instance
did) and answers what the holder answered. A holder that is gone, or does not answer,
has ended its sessions with its process: 404. A request passed on once is never
passed on again.

Event loop only.
"""

from __future__ import annotations

import logging

import httpx
from fastapi import Request, Response

from vms.cluster.cluster import Cluster
from vms.problems import Problem

log = logging.getLogger(__name__)

SEPARATOR = "~"
PASSED_BY = "X-Hallwatch-Passed-By"
"""Set on a request one instance passes on to another: the id of the instance passing it."""
CREDENTIALS = ("authorization", "cookie", "x-csrf-token")
"""The caller's headers the holder needs to check who asks."""
PASS_TIMEOUT = 5.0
"""Seconds the holder has to answer."""


def public_id(cluster: Cluster | None, session_id: str) -> str:
    """The id a WHEP session's URL carries: prefixed with this instance's in a cluster."""
    return session_id if cluster is None else f"{cluster.instance.id}{SEPARATOR}{session_id}"


def split_id(public: str) -> tuple[str | None, str]:
    """``(holder instance id or None, the holder's own session id)``."""
    holder, separator, session_id = public.rpartition(SEPARATOR)
    return (holder, session_id) if separator else (None, public)


async def pass_on(cluster: Cluster, holder_id: str, request: Request) -> Response:
    """Send ``request`` to the instance ``holder_id`` and answer what it answered."""
    gone = Problem(404, "no such WHEP session: the instance holding it is gone")
    holder = cluster.live(holder_id)
    if holder is None or request.headers.get(PASSED_BY) is not None:
        raise gone
    headers = {name: value for name in CREDENTIALS if (value := request.headers.get(name)) is not None}
    headers[PASSED_BY] = cluster.instance.id
    try:
        async with httpx.AsyncClient(timeout=PASS_TIMEOUT) as client:
            url = f"{holder.http_url}{request.url.path}"
            answer = await client.request(request.method, url, headers=headers)
    except httpx.HTTPError as err:
        log.warning("cluster: %s did not answer a WHEP %s: %s", holder.id, request.method, type(err).__name__)
        raise gone from err
    return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))
