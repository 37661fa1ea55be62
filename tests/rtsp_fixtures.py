"""A real RTSP server for tests: :class:`RtspTestServer` and the ``rtsp_server`` fixture.

:class:`RtspTestServer` is a plain class (benchmarks use it without pytest) that
runs ``tests/gst_rtsp_server.py`` under the system Python, which has GStreamer's
RTSP server bindings, on a free port of 127.0.0.1. The ``rtsp_server`` fixture is
a factory; every server it started is stopped at teardown.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

import pytest

from streams.packets import MediaPacket

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")
INSTALL_HINT = "run scripts/install-test-deps.sh (as root) to install GStreamer's RTSP server"
_READY_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0


class RtspServerUnavailable(RuntimeError):
    """The system Python cannot load GStreamer's RTSP server."""


_checked: list[str] = []


def check_gstreamer() -> None:
    """Raise RtspServerUnavailable, with the install hint, unless the server can run."""
    if _checked:
        if _checked[0]:
            raise RtspServerUnavailable(_checked[0])
        return
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    problem = ""
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            problem = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "import failed"
    except (OSError, subprocess.TimeoutExpired) as err:
        problem = str(err)
    _checked.append(
        f"{SYSTEM_PYTHON} cannot import GstRtspServer ({problem}); {INSTALL_HINT}" if problem else ""
    )
    if problem:
        raise RtspServerUnavailable(_checked[0])


def write_au_file(path: Path, packets: Sequence[MediaPacket]) -> Path:
    """Write access units in the server's file format: [4-byte big-endian length][Annex-B]..."""
    with path.open("wb") as f:
        for packet in packets:
            f.write(struct.pack(">I", len(packet.data)))
            f.write(packet.data)
    return path


class RtspTestServer:
    """One ``gst_rtsp_server.py`` process. See the module docstring.

    ``streams`` maps paths to encoder specs (``"640x360@25,800k,gop=25"``; options
    such as ``codec=h265``, ``bframes=2``, ``clock``, ``scene=FILE`` and ``faults`` are
    described in ``gst_rtsp_server.py``); ``au_files`` maps paths to access-unit files
    (served at 25 fps, or give a full spec like ``"aufile=FILE,fps=30"`` in ``streams``).
    :meth:`fault` turns a mount's picture bad and back while it streams.
    """

    def __init__(
        self,
        streams: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        bind: str = "127.0.0.1",
        user: str | None = None,
        password: str | None = None,
        auth: str = "digest",
        au_files: Mapping[str, Path | str] | None = None,
        session_timeout: int = 0,
    ) -> None:
        self.streams = dict(streams or {})
        for path, file in (au_files or {}).items():
            self.streams[path] = f"aufile={file},fps=25"
        if not self.streams:
            self.streams = {"cam1": "640x360@25,800k,gop=25"}
        self.port = port or 0
        self.bind = bind
        self.user, self.password, self.auth = user, password, auth
        self.session_timeout = session_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._out = b""
        self.frozen = False

    def url(self, path: str = "cam1", *, with_credentials: bool = False) -> str:
        userinfo = f"{self.user}:{self.password}@" if with_credentials and self.user else ""
        return f"rtsp://{userinfo}{self.bind}:{self.port}/{path.strip('/')}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = _READY_TIMEOUT) -> RtspTestServer:
        """Start (or restart, on the same port) and wait until it listens."""
        check_gstreamer()
        self.stop()
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--bind", self.bind]
        for path, spec in self.streams.items():
            cmd += ["--stream", f"{path}:{spec}"]
        if self.user:
            cmd += ["--user", self.user, "--password", self.password or "", "--auth", self.auth]
        if self.session_timeout:
            cmd += ["--session-timeout", str(self.session_timeout)]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop/kill)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self._proc = self._spawn(cmd, env)
        self.frozen = False
        deadline = time.monotonic() + timeout
        # A restart on the same port may find it still held for a moment: retry until the deadline.
        while True:
            line = self._read_ready(deadline)
            if line is not None:
                self.port = int(line.split()[1])
                return self
            if self._proc.poll() is not None and time.monotonic() < deadline and self.port:
                time.sleep(0.1)
                self._proc = self._spawn(cmd, env)
                continue
            log = self._stderr_tail()
            self.kill()
            raise RuntimeError(f"RTSP test server did not start: {log}")

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self._out = b""
        return subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )

    def _read_ready(self, deadline: float) -> str | None:
        line = self._read_line(deadline)
        return line if line is not None and line.startswith("READY ") else None

    def _read_line(self, deadline: float) -> str | None:
        """The server's next line on standard output; None if it ends or the deadline passes."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._out and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
            if ready:
                chunk = os.read(fd, 256)
                if not chunk:
                    return None
                self._out += chunk
            elif self._proc.poll() is not None:
                return None
        if b"\n" not in self._out:
            return None
        line, self._out = self._out.split(b"\n", 1)
        return line.decode()

    def fault(self, path: str, fault: str, timeout: float = 5.0) -> None:
        """Turn the picture of mount ``path`` bad while it streams (``fault`` as listed in
        ``gst_faults.py``, or ``switch`` for an access-unit file with ``alt``); ``none``: back to
        normal. The mount needs the ``faults`` option (or ``alt``). Raises RuntimeError if the
        server refuses or does not answer."""
        self._command(f"fault {path.strip('/')} {fault}", timeout)

    def sessions(self, timeout: float = 5.0) -> dict[str, int]:
        """The RTSP sessions each path has now, as the server counts them: the camera's side."""
        answer = self._command("sessions", timeout)
        return {path: int(count) for path, _, count in (item.partition("=") for item in answer.split())}

    def _command(self, line: str, timeout: float) -> str:
        """Send one command line; its answer after ``OK``. RuntimeError if refused or unanswered."""
        proc = self._proc
        if proc is None or proc.stdin is None or not self.running:
            raise RuntimeError("the RTSP test server is not running")
        proc.stdin.write(f"{line}\n".encode())
        proc.stdin.flush()
        answer = self._read_line(time.monotonic() + timeout)
        if answer is None or not (answer == "OK" or answer.startswith("OK ")):
            raise RuntimeError(f"{line!r}: {answer or 'no answer'}")
        return answer[3:]

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode("utf-8", "replace").strip()

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self._proc is not None and self.frozen:
            self._proc.send_signal(signal.SIGCONT)
            self.frozen = False

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL if it does not exit in time). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._thaw_process(proc)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_pipes(proc)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything itself."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self.frozen = False
        self._close_pipes(proc)

    def _thaw_process(self, proc: subprocess.Popen[bytes]) -> None:
        if self.frozen and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def _close_pipes(self, proc: subprocess.Popen[bytes]) -> None:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> RtspTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RtspServerFactory(Protocol):
    def __call__(
        self,
        streams: Mapping[str, str] | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        au_files: Mapping[str, Path | str] | None = None,
        *,
        auth: str = "digest",
        session_timeout: int = 0,
    ) -> RtspTestServer: ...


@pytest.fixture
def rtsp_server() -> Iterator[RtspServerFactory]:
    """Factory: ``server = rtsp_server(streams={"cam1": "640x360@25,800k,gop=25"})``, started and ready."""
    started: list[RtspTestServer] = []

    def factory(
        streams: Mapping[str, str] | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        au_files: Mapping[str, Path | str] | None = None,
        *,
        auth: str = "digest",
        session_timeout: int = 0,
    ) -> RtspTestServer:
        try:
            check_gstreamer()
        except RtspServerUnavailable as err:
            pytest.fail(str(err), pytrace=False)
        server = RtspTestServer(
            streams,
            port=port,
            user=user,
            password=password,
            auth=auth,
            au_files=au_files,
            session_timeout=session_timeout,
        )
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        with contextlib.suppress(Exception):
            server.stop()


if __name__ == "__main__":  # a quick manual check: python -m tests.rtsp_fixtures
    with RtspTestServer() as srv:
        print(srv.url(), file=sys.stderr)
        time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 5)
