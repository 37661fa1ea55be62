"""Which remote ICE candidates a viewer session sends connectivity checks to.

A WHEP offer names the addresses the relay's ICE agent then sends STUN checks
to, so an unchecked offer lets a viewer aim UDP traffic at third parties. A
:class:`CandidatePolicy` keeps, per session, at most ``max_candidates`` remote
candidates (distinct transport addresses; the rest are dropped, the offer is
still answered) and only those the relay can reach from its own host addresses
(:func:`refusal`):

* never a multicast, unspecified or reserved address (255.255.255.255 is one),
  nor an IPv4-mapped IPv6 one; a subnet's directed broadcast address needs no
  rule, as the kernel refuses it on sockets without ``SO_BROADCAST`` (aioice's);
* only an address family the relay gathers host candidates in;
* a loopback or link-local address only when the relay itself offers one of
  that scope;
* when ``networks`` is configured, only addresses inside one of them.

:class:`CandidateGuard` applies the policy to one peer connection. It shadows
``_add_remote_candidate`` **on each aioice connection of that peer connection**
(an instance attribute, never the class): aioice 0.10+ passes every remote
candidate through it once its address is known, whether it came in the offer,
by trickle or as an mDNS name resolved later. Peer-reflexive candidates, which
aioice learns from checks that carried the session's own ICE credentials, are
left alone. Other peer connections and aioice's module state are untouched.

Event loop only (the guard); :func:`refusal` is pure.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import aioice
from aiortc import RTCPeerConnection

from streams.webrtc import ice

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class CandidatePolicy:
    """The remote candidates one session may check. See the module docstring."""

    max_candidates: int = 20
    """Distinct remote candidates kept per session; later ones are dropped."""
    networks: Sequence[Network] = ()
    """When not empty, only remote addresses inside these networks are checked."""


def refusal(address: str, local: Sequence[str], networks: Sequence[Network] = ()) -> str | None:
    """Why ``address`` may not be checked from host addresses ``local``, or None if it may."""
    try:
        remote: Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(remote, ipaddress.IPv6Address) and remote.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    if remote.is_multicast:
        return "a multicast address"
    if remote.is_unspecified:
        return "an unspecified address"
    if remote.is_reserved:
        return "a reserved address"
    ours = [_address(a) for a in local]
    mine = [a for a in ours if a is not None and a.version == remote.version]
    if not mine:
        return f"IPv{remote.version}, which the relay does not serve"
    if remote.is_loopback and not any(a.is_loopback for a in mine):
        return "loopback, which the relay does not offer"
    if remote.is_link_local and not any(a.is_link_local for a in mine):
        return "link-local, which the relay does not offer"
    if networks and not any(remote in net for net in networks if net.version == remote.version):
        return "outside the configured networks"
    return None


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


class CandidateGuard:
    """The policy applied to one peer connection's remote candidates, with its counts."""

    def __init__(self, policy: CandidatePolicy, local_addresses: Sequence[str], label: str) -> None:
        self.policy = policy
        self.local = list(local_addresses)
        self.label = label
        self.kept: set[tuple[str, int, int]] = set()
        """(address, port, component) of each candidate let through."""
        self.refused: Counter[str] = Counter()
        """Candidates refused, by reason."""
        self.dropped = 0
        """Candidates beyond ``max_candidates``."""

    def install(self, pc: RTCPeerConnection) -> None:
        """Guard every ICE connection of ``pc``; call it before ``setRemoteDescription``."""
        for connection in ice.connections(pc):
            if "_add_remote_candidate" in vars(connection):
                continue
            if not callable(getattr(connection, "_add_remote_candidate", None)):
                raise TypeError("unsupported aioice version: no Connection._add_remote_candidate")
            self._guard(connection)

    def admit(self, address: str, port: int, component: int) -> bool:
        """Whether a candidate at ``address``:``port`` may be checked (and counts it)."""
        key = (address, port, component)
        if key in self.kept:
            return True  # the same candidate again: aioice ignores it
        reason = refusal(address, self.local, self.policy.networks)
        if reason is not None:
            self.refused[reason] += 1
            log.debug("%s: remote candidate %s:%d refused: %s", self.label, address, port, reason)
            return False
        if len(self.kept) >= self.policy.max_candidates:
            self.dropped += 1
            return False
        self.kept.add(key)
        return True

    def summary(self) -> str | None:
        """One line on what was refused or dropped, or None if nothing was."""
        if not self.refused and not self.dropped:
            return None
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.refused.most_common())
        return (
            f"{len(self.kept)} remote candidates kept, {sum(self.refused.values())} refused"
            f"{f' ({reasons})' if reasons else ''}, {self.dropped} beyond the cap of "
            f"{self.policy.max_candidates} dropped"
        )

    def _guard(self, connection: aioice.Connection) -> None:
        add = connection._add_remote_candidate  # bound to the class's method

        def add_remote_candidate(remote_candidate: aioice.Candidate, network_host: str) -> None:
            if self.admit(network_host, remote_candidate.port, remote_candidate.component):
                add(remote_candidate, network_host)

        # Instance attribute: shadows the method for this connection only.
        connection._add_remote_candidate = add_remote_candidate  # type: ignore[method-assign]
