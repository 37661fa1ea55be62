"""SIPp (Debian ``sip-tester``) as a subprocess: a scenario of ``sipp/`` played in server mode
on a port of 127.0.0.1, bounded in calls (``-m``) and time (``-timeout``), its unexpected
messages and failed checks written to an error file (``-trace_err``) and every message
to a trace (``-trace_msg``) that :meth:`Sipp.messages` reads back.

SIPp's exit code is the verdict: 0 when every call of the scenario passed, 1 when one
failed (an unexpected message, a timeout, or a regexp, ``strcmp`` or ``verifyauth``
check of the scenario).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import socket
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).parent / "sipp"
TIMEOUT = 20
"""Seconds a SIPp run may last before it gives up and fails."""
_TRACED = re.compile(
    rb"-{47} [^\n]*\n(?:UDP|TCP) message (?:received \[(\d+)\] bytes :|sent \((\d+) bytes\):)\n\n"
)
_LISTENING = {"udp": ("/proc/net/udp", "07"), "tcp": ("/proc/net/tcp", "0A")}


def free_port(transport: str, taken: Collection[int] = ()) -> int:
    """A port of 127.0.0.1 free now and below the kernel's ephemeral range, so that no socket
    opened on this machine meanwhile is given it before SIPp binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    for port in random.sample(range(10_000, low), 200):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def listening(transport: str, port: int) -> bool:
    """Whether a socket is bound to 127.0.0.1:``port`` (UDP) or listens there (TCP), read from
    the kernel's table, so that looking never takes the port from SIPp."""
    table, state = _LISTENING[transport]
    address = f"0100007F:{port:04X}"
    rows = (line.split() for line in Path(table).read_text().splitlines()[1:])
    return any(row[1] == address and row[3] == state for row in rows)


@dataclass(frozen=True)
class Traced:
    """One SIP message of SIPp's trace: whether SIPp received it, its head and its body."""

    received: bool
    head: str
    body: bytes

    @property
    def first(self) -> str:
        return self.head.partition("\r\n")[0]

    def header(self, name: str) -> str:
        found = re.search(rf"(?im)^{re.escape(name)}:[ \t]*(.*?)\r?$", self.head)
        return found.group(1) if found else ""


@dataclass
class Sipp:
    """A SIPp process playing a scenario, and the files it writes."""

    process: asyncio.subprocess.Process
    directory: Path

    async def exit_code(self) -> int:
        async with asyncio.timeout(TIMEOUT + 5):
            return await self.process.wait()

    async def passed(self) -> None:
        """Wait for SIPp to end; every call passed and it reported nothing."""
        assert await self.exit_code() == 0, self.report()
        assert self.report() == ""

    def report(self) -> str:
        """What SIPp wrote to stderr and to its error file."""
        paths = (self.directory / "sipp.stderr", self.directory / "sipp-errors.log")
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def messages(self, *, received: bool = True) -> list[Traced]:
        """The messages SIPp received (or sent), in order."""
        path = self.directory / "sipp-messages.log"
        data = path.read_bytes() if path.exists() else b""
        found = []
        for match in _TRACED.finditer(data):
            size = int(match.group(1) or match.group(2))
            head, _, body = data[match.end() : match.end() + size].partition(b"\r\n\r\n")
            if (match.group(1) is not None) == received:
                found.append(Traced(received, head.decode("utf-8", errors="replace"), body))
        return found


@contextlib.asynccontextmanager
async def sipp(
    directory: Path,
    scenario: str,
    transport: str,
    port: int,
    *,
    calls: int,
    keys: dict[str, str],
    variables: dict[str, str] | None = None,
) -> AsyncIterator[Sipp]:
    """SIPp playing ``sipp/<scenario>.xml`` on 127.0.0.1:``port``, ending after ``calls`` calls,
    its files in ``directory``;
    ``keys`` fill its ``[key]`` fields (``-key``), ``variables`` its global ``[$variable]``
    ones (``-set``). Killed on exit if it is still running.

    Entered once SIPp listens, or once it has ended: a platform that keeps trying to register
    can play a short scenario through within milliseconds of SIPp binding, before a look at
    the kernel's table sees the port; whether SIPp failed to start or passed, its exit code
    and report say."""
    if shutil.which("sipp") is None:
        pytest.fail("SIPp is not installed; run scripts/install-test-deps.sh (as root)", pytrace=False)
    args = ["sipp", "-sf", str(SCENARIOS / f"{scenario}.xml"), "-t", "u1" if transport == "udp" else "t1"]
    args += ["-i", "127.0.0.1", "-p", str(port), "-m", str(calls), "-nostdin"]
    args += ["-timeout", f"{TIMEOUT}s", "-timeout_error"]
    args += ["-trace_err", "-error_file", str(directory / "sipp-errors.log")]
    args += ["-trace_msg", "-message_file", str(directory / "sipp-messages.log")]
    for name, value in keys.items():
        args += ["-key", name, value]
    for name, value in (variables or {}).items():
        args += ["-set", name, value]
    with (directory / "sipp.stdout").open("wb") as stdout, (directory / "sipp.stderr").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=directory
        )
    run = Sipp(process, directory)
    try:
        async with asyncio.timeout(5):
            while process.returncode is None and not listening(transport, port):
                await asyncio.sleep(0.02)
        yield run
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
