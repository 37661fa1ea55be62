"""Open connections and exhausted resources, counted: what :mod:`vms.server` uses to cap
connections and to say "out of resources" once per interval instead of once per attempt.

* :class:`Connections` counts open connections, in total and per client address
  (trusted proxies excepted), and which of them wait for a request; at a cap, a new
  connection takes the place of the oldest waiting one, or is refused;
* :class:`Exhaustion` logs a condition at once, then at most once per interval with
  a count; :func:`install_exception_handler` routes the event loop's accept errors
  (``EMFILE`` and the like, which the loop retries by itself) to it.

Event loop only (the server's loop).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

__all__ = ["LOG_INTERVAL", "Connections", "Exhaustion", "install_exception_handler"]

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same exhausted resource."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Exhaustion:
    """Logs the first occurrence of a condition at once, then, while it goes on, one line
    per interval with how many times it happened (a timer on the loop, no task)."""

    def __init__(self, interval: float = LOG_INTERVAL, logger: logging.Logger = log) -> None:
        self.interval = interval
        self._log = logger
        self._pending: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    @property
    def summary_due(self) -> bool:
        """Whether a condition is within an interval whose count is still to be logged."""
        return bool(self._pending)

    def note(self, condition: str, level: int = logging.WARNING) -> None:
        self.totals[condition] = self.totals.get(condition, 0) + 1
        if condition in self._pending:
            self._pending[condition] += 1
            return
        self._log.log(level, "%s", condition)
        self._next_interval(condition, level)

    def _next_interval(self, condition: str, level: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to time the interval: every occurrence is logged
            return
        self._pending[condition] = 0
        loop.call_later(self.interval, self._summary, condition, level)

    def _summary(self, condition: str, level: int) -> None:
        count = self._pending.pop(condition, 0)
        if count:
            self._log.log(level, "%s: %d more times in %g s", condition, count, self.interval)
            self._next_interval(condition, level)


_ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def install_exception_handler(loop: asyncio.AbstractEventLoop, exhaustion: Exhaustion) -> None:
    """Accept errors for lack of resources (the loop retries by itself) go to ``exhaustion``;
    every other context goes to the handler that was there before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS:
            exhaustion.note(f"cannot accept connections: {exc.strerror or exc}")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class Connections:
    """Open connections by client address, and which of them wait for a request."""

    def __init__(
        self,
        total: int,
        per_address: int,
        exempt: Sequence[Network] = (),
        exhaustion: Exhaustion | None = None,
    ) -> None:
        self.total = total
        self.per_address = per_address
        self._exempt = tuple(exempt)
        self.exhaustion = exhaustion or Exhaustion()
        self._open: dict[asyncio.BaseTransport, str] = {}
        self._by_address: dict[str, int] = {}
        self._waiting: OrderedDict[asyncio.BaseTransport, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, transport: asyncio.BaseTransport, address: str) -> bool:
        """Count a new connection, making room if it must; False: refuse it."""
        if not self._exempted(address) and self._by_address.get(address, 0) >= self.per_address:
            if not self._evict(address):
                self.exhaustion.note(f"connections from one address at the cap of {self.per_address}")
                return False
            self.exhaustion.note(
                f"connections from one address at the cap of {self.per_address}: "
                "closed the oldest waiting one",
                logging.INFO,
            )
        if len(self._open) >= self.total:
            if not self._evict(None):
                self.exhaustion.note(f"connections at the cap of {self.total}")
                return False
            self.exhaustion.note(
                f"connections at the cap of {self.total}: closed the oldest waiting one", logging.INFO
            )
        self._open[transport] = address
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return True

    @property
    def waiting(self) -> int:
        """How many open connections wait for a request."""
        return len(self._waiting)

    def set_waiting(self, transport: asyncio.BaseTransport, waiting: bool) -> None:
        """Mark a connection as waiting for a request (it may be replaced) or busy."""
        address = self._open.get(transport)
        if address is None:
            return
        if waiting:
            self._waiting[transport] = address
            self._waiting.move_to_end(transport)
        else:
            self._waiting.pop(transport, None)

    def release(self, transport: asyncio.BaseTransport) -> None:
        address = self._open.pop(transport, None)
        self._waiting.pop(transport, None)
        if address is None:
            return
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]

    def _exempted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)

    def _evict(self, address: str | None) -> bool:
        """Close the oldest waiting connection (of ``address``, or any); False if none waits."""
        victim = next((t for t, a in self._waiting.items() if address is None or a == address), None)
        if victim is None:
            return False
        self.release(victim)
        victim.close()
        return True
