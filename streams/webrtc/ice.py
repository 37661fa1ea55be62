"""ICE settings of a peer connection: servers and the host addresses it offers.

Two aiortc defaults do not suit a relay:

* With ``iceServers`` unset, aiortc asks a public STUN server. :func:`configuration`
  therefore always passes an explicit list, empty unless configured.
* aioice gathers one host candidate per local address except ``127.0.0.1``, and
  offers no setting to choose them. On a machine where viewers reach the relay
  through one known address (a NAT'd public address forwarded to one interface,
  or loopback in tests) the host candidates should be exactly that list.

:func:`pin_host_addresses` does this for one peer connection only. aioice's
``Connection.gather_candidates`` enumerates the interfaces and then calls the
public ``Connection.get_component_candidates(component, addresses)`` on itself;
we shadow that method **on each ICE connection of this peer connection** (an
instance attribute, never the class) with one that binds the given addresses
instead. STUN and TURN candidates are still gathered as usual from those
sockets. Other peer connections in the process, and aioice's module state, are
untouched. The hook reaches the aioice connection through
``RTCIceGatherer._connection`` (aiortc 1.x); it must run after the transceivers
exist and before ``setLocalDescription``, which is where gathering happens.
:func:`connections` lists those aioice connections for other per-connection
hooks (:mod:`streams.webrtc.remote_candidates`), and :func:`host_addresses`
says which local addresses a peer connection gathers on.

Event loop only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aioice
from aiortc import RTCConfiguration, RTCIceGatherer, RTCIceServer, RTCPeerConnection

log = logging.getLogger(__name__)


def configuration(ice_servers: Sequence[RTCIceServer] | None) -> RTCConfiguration:
    """An RTCConfiguration with an explicit (possibly empty) server list."""
    return RTCConfiguration(iceServers=list(ice_servers or []))


def pin_host_addresses(pc: RTCPeerConnection, addresses: Sequence[str]) -> None:
    """Make every ICE transport of ``pc`` gather host candidates on ``addresses`` only.

    Call it after the transceivers exist (after ``addTransceiver`` for an
    offerer, after ``setRemoteDescription`` for an answerer) and before
    ``setLocalDescription``. Transports that already gathered are left alone.
    """
    pinned = list(addresses)
    if not pinned:
        raise ValueError("no host addresses given")
    for transceiver in pc.getTransceivers():
        gatherer = transceiver.receiver.transport.transport.iceGatherer
        connection = _connection(gatherer)
        if gatherer.state != "new" or "get_component_candidates" in vars(connection):
            continue
        _pin(connection, pinned)


def connections(pc: RTCPeerConnection) -> list[aioice.Connection]:
    """The aioice connection of each transceiver's ICE transport (one per transport)."""
    found: list[aioice.Connection] = []
    for transceiver in pc.getTransceivers():
        connection = _connection(transceiver.receiver.transport.transport.iceGatherer)
        if connection not in found:
            found.append(connection)
    return found


def host_addresses(pinned: Sequence[str]) -> list[str]:
    """The addresses a peer connection gathers host candidates on: ``pinned`` if
    given, else what aioice enumerates (every interface but 127.0.0.1 and ::1)."""
    return list(pinned) or aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)


def _connection(gatherer: RTCIceGatherer) -> aioice.Connection:
    connection = getattr(gatherer, "_connection", None)
    if not isinstance(connection, aioice.Connection):
        raise TypeError("unsupported aiortc version: RTCIceGatherer has no aioice connection")
    return connection


def _pin(connection: aioice.Connection, pinned: list[str]) -> None:
    gather = connection.get_component_candidates  # bound to the class's method

    async def get_component_candidates(
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109 (aioice's own signature)
    ) -> list[aioice.Candidate]:
        log.debug("ICE host candidates pinned to %s (interfaces: %s)", pinned, addresses)
        return await gather(component=component, addresses=pinned, timeout=timeout)

    # Instance attribute: shadows the method for this connection only.
    connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]
