"""The relay benchmark's fixtures: the H.264 clip, the service process, RTSP primers.

* :func:`make_au_file` encodes a moving, noisy clip with PyAV into the access-unit
  file format of ``tests/gst_rtsp_server.py``.
* :class:`Service` runs ``python -m vms serve`` on a generated config, in its own
  process group, and stops it with SIGTERM (SIGKILL after 10 s).
* :class:`Primer` is a minimal RTSP client that PLAYs one path over TCP and
  throws the media away. The test server starts a path's pipeline, and so its
  keyframe phase, when the first client arrives; priming paths one after the
  other spreads their keyframes over the interval, as independent cameras are.

Blocking code for the benchmark's main thread; each open primer has one thread
that drains its socket.
"""

from __future__ import annotations

import contextlib
import fractions
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
FPS = 25
GOP = 100
CENTRE = "bench"


def make_au_file(path: Path, width: int, height: int, kbps: int, frames: int, gop: int = GOP) -> float:
    """Encode ``frames`` of moving, noisy video, a keyframe every ``gop`` frames; returns the real
    bitrate in Mbit/s."""
    import av

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.framerate = fractions.Fraction(FPS, 1)
    ctx.bit_rate = kbps * 1000
    ctx.options = x264_options(kbps, gop)
    total = 0
    with path.open("wb") as out:

        def write(packets: list[Any]) -> None:
            nonlocal total
            for packet in packets:
                data = bytes(packet)
                out.write(struct.pack(">I", len(data)) + data)
                total += len(data)

        for frame in pictures(width, height, frames):
            write(list(ctx.encode(frame)))
        write(list(ctx.encode(None)))
    return total * 8 / (frames / FPS) / 1e6


def make_mp4_file(path: Path, width: int, height: int, kbps: int, frames: int, gop: int) -> float:
    """The same video in an MP4 file, for file cameras; returns the real bitrate in Mbit/s."""
    import av

    total = 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = kbps * 1000
        stream.options = x264_options(kbps, gop)
        for frame in [*pictures(width, height, frames), None]:
            for packet in stream.encode(frame):
                total += packet.size
                container.mux(packet)
    return total * 8 / (frames / FPS) / 1e6


def x264_options(kbps: int, gop: int) -> dict[str, str]:
    """High profile, no B-frames, a keyframe every ``gop`` frames and no other, capped bitrate."""
    return {
        "preset": "veryfast",
        "tune": "zerolatency",
        "profile": "high",
        "g": str(gop),
        "keyint_min": str(gop),
        "sc_threshold": "0",
        "bf": "0",
        "maxrate": f"{kbps}k",
        "bufsize": f"{kbps}k",
    }


def pictures(width: int, height: int, frames: int) -> Iterator[Any]:
    """A scrolling noise texture with a moving block of fresh noise: a real bitrate's worth."""
    import av
    import numpy as np

    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (height + 64, 2 * width), dtype=np.uint8).astype(np.uint16)
    blurred = noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, (1, 1), (0, 1))
    texture = (blurred // 4).astype(np.uint8)
    cb = np.full((height // 4, width), 128, np.uint8)
    block_w, block_h = width // 6, height // 6
    for i in range(frames):
        x, y = (i * 7) % width, int(32 + 30 * np.sin(i / 15))
        luma = texture[y : y + height, x : x + width].copy()
        bx = (i * 23) % (width - block_w)
        luma[height // 3 : height // 3 + block_h, bx : bx + block_w] = rng.integers(
            0, 256, (block_h, block_w), dtype=np.uint8
        )
        cr = ((np.arange(width // 2)[None, :] + i * 3) % 256).astype(np.uint8).repeat(height // 2, 0)
        picture = np.concatenate([luma, cb, cr.reshape(height // 4, width)])
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = i
        yield frame


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, so a benchmark stops every process it started
    the same way on a kill as on Ctrl-C."""

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)


def run_bench(
    args: Any,
    run: Callable[[Any, TextIO], Any],
    report: Callable[[Any, Any], str],
    raw: Callable[[Any], Any] = lambda results: results,
) -> int:
    """A benchmark's ``main``: ``run(args, stderr)`` (progress on stderr; SIGTERM or Ctrl-C
    stop every process it started), print ``report(results, args)``, and write
    ``raw(results)`` as JSON to ``args.json`` when given. The exit status."""
    interrupt_on_sigterm()
    try:
        results = run(args, sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; every process was stopped", file=sys.stderr)
        return 130
    print(report(results, args), flush=True)
    if args.json:
        args.json.write_text(json.dumps(raw(results), indent=1, default=str))
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """``python -m vms serve`` in its own process group, on a generated config."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        rtsp_port: int,
        cameras: int,
        max_viewers: int,
        *,
        urls: list[str] | None = None,
        extra: dict[str, Any] | None = None,
        label: str | None = None,
        password: str | None = None,
    ) -> None:
        """``urls``: one per camera (default: the RTSP test server's paths); ``extra``: more
        config sections; ``label`` names the files and data directory (default: the camera count);
        ``password``: the first administrator's (default: a random one; services that share a
        database must share it)."""
        import yaml

        self.port = port
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cameras = [f"cam{i:02d}" for i in range(cameras)]
        urls = urls or [f"rtsp://127.0.0.1:{rtsp_port}/{cam}" for cam in self.cameras]
        label = label or str(cameras)
        self.data_dir = workdir / f"data-{label}"
        config = {
            "server": {
                "host": "127.0.0.1",
                "port": self.port,
                # One per service: each starts with an empty user store and its own admin password.
                "data_dir": str(self.data_dir),
            },
            "webrtc": {
                "ice_host_addresses": ["127.0.0.1"],
                "max_viewers_per_camera": max_viewers,
                "max_viewers_total": max_viewers * cameras + 8,
                # Every bench viewer is the same user: its caps are the service's.
                "max_viewers_per_user": max_viewers * cameras + 8,
                "max_viewers_per_user_per_camera": max_viewers,
                "max_pending_per_camera": max_viewers,
                "max_pending_per_user": max_viewers * cameras + 8,
                "max_pending_total": max_viewers * cameras + 8,
            },
            "centres": [{"id": CENTRE, "name": "Bench centre", "halls": "all"}],
            "halls": [{"id": "bench-hall", "name": "Bench hall"}],
            "cameras": [
                {"id": cam, "name": cam, "hall": "bench-hall", "url": url}
                for cam, url in zip(self.cameras, urls, strict=True)
            ],
            **(extra or {}),
        }
        self.config_path = workdir / f"service-{label}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.log_path = workdir / f"service-{label}.log"
        self.command = [sys.executable, "-m", "vms", "serve", "--config", str(self.config_path)]
        self._password = password or secrets.token_urlsafe(18)
        self.headers: dict[str, str] = {}
        """What every API request must carry: a bearer token once logged in, else nothing."""
        self.session_cookie: str | None = None
        """The login's session cookie (``name=value``), as a browser holds it, once logged in."""
        self.not_ready: str | None = None
        """``/readyz``'s answer when it was not 200 although every camera was online."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.launches = 0

    def start(self, timeout: float = 40.0, request_timeout: float = 2.0) -> None:
        """Start; wait until every camera is online. Logs in first if the API asks for it
        (on a busy machine the login's password hash can take longer than ``request_timeout``)."""
        self.launch()
        self.wait(timeout, request_timeout)

    def launch(self) -> None:
        """Start the process; :meth:`wait` for it to be up. A restart appends to the same log."""
        env = dict(os.environ)
        env[f"HALLWATCH_ADMIN_PASSWORD_{CENTRE.upper()}"] = self._password
        with self.log_path.open("ab" if self.launches else "wb") as log:
            self.launches += 1
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )

    def wait(self, timeout: float = 40.0, request_timeout: float = 2.0, *, online: bool = True) -> None:
        """Until the API answers, logged in if it asks for it, and every camera is online (or,
        ``online=False``, until ``/readyz`` says ready: an instance of a cluster pulls only some)."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(base_url=self.base_url, timeout=request_timeout) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the service exited ({self.proc.returncode}): {self.log_tail()}")
                try:
                    response = http.get(f"/api/v1/cameras/{self.cameras[0]}", headers=self.headers)
                    if response.status_code == 401 and not self.headers:
                        self.headers = self._log_in(http)
                        continue
                    last = f"{response.status_code} {response.text[:200]}"
                    if response.status_code == 200 and not online:
                        ready = http.get("/readyz")
                        last = f"/readyz {ready.status_code} {ready.text[:200]}"
                        if ready.status_code == 200:
                            return
                    elif response.status_code == 200 and all(
                        self.camera(cam, http)["live"]["state"] == "online" for cam in self.cameras
                    ):
                        ready = http.get("/readyz")
                        self.not_ready = None if ready.status_code == 200 else ready.text[:300]
                        return
                except httpx.HTTPError as err:
                    last = f"{type(err).__name__}: {err}"
                time.sleep(0.2)
        raise RuntimeError(
            f"the service was not up in {timeout:.0f} s (last answer: {last}); "
            f"its log ends with: {self.log_tail()}"
        )

    def _log_in(self, http: httpx.Client) -> dict[str, str]:
        """Log in as the first administrator and make an API token: the bearer header to use."""
        response = http.post(
            "/api/v1/auth/login", json={"username": f"admin-{CENTRE}", "password": self._password}
        )
        response.raise_for_status()
        self.session_cookie = "; ".join(f"{name}={value}" for name, value in response.cookies.items()) or None
        csrf = response.json().get("csrf_token") or ""
        response = http.post(
            "/api/v1/auth/tokens",
            json={"name": "relay benchmark", "expires_days": 1},
            headers={"X-CSRF-Token": csrf},
        )
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['token']}"}

    @property
    def browser_headers(self) -> dict[str, str]:
        """What the dashboard's WebSocket handshake carries: its session cookie (else the bearer token)."""
        return {"Cookie": self.session_cookie} if self.session_cookie else dict(self.headers)

    def camera(self, cam: str, http: httpx.Client) -> dict[str, Any]:
        response = http.get(f"/api/v1/cameras/{cam}", headers=self.headers)
        response.raise_for_status()
        return dict(response.json())

    @property
    def psutil(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def log_problems(self, keep: int = 5) -> tuple[int, list[str]]:
        """How many WARNING/ERROR/CRITICAL lines the service logged, and the first few distinct ones."""
        count, seen = 0, list[str]()
        for line in self.log_path.read_text("utf-8", "replace").splitlines():
            if any(f" {level} " in line for level in ("WARNING", "ERROR", "CRITICAL")) or line.startswith(
                "Traceback"
            ):
                count += 1
                text = line.split(" ", 2)[-1][:200]
                if text not in seen and len(seen) < keep:
                    seen.append(text)
        return count, seen

    def log_tail(self, chars: int = 1500) -> str:
        return self.log_path.read_bytes()[-chars:].decode("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL to the process group: the service vanishes without closing anything itself."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 10 s. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Primer:
    """PLAY one RTSP path over TCP and throw the media away (see the module docstring).

    A drain thread reads and discards the interleaved data until :meth:`close`.
    """

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._drain: threading.Thread | None = None
        self._cseq = 0

    def open(self) -> None:
        host_port = self.url.split("/")[2]
        host, _, port = host_port.partition(":")
        self._sock = socket.create_connection((host, int(port or 554)), timeout=self._timeout)
        reply = self._request("DESCRIBE", self.url, "Accept: application/sdp\r\n")
        base = _header(reply, "Content-Base") or self.url
        # The server's SDP has one video stream; its last control attribute is the stream's.
        controls = [line[len("a=control:") :] for line in reply.splitlines() if line.startswith("a=control:")]
        control = controls[-1] if controls else ""
        track = control if control.startswith("rtsp://") else base.rstrip("/") + "/" + control
        reply = self._request("SETUP", track, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        session = (_header(reply, "Session") or "").split(";")[0]
        self._request("PLAY", base, f"Session: {session}\r\nRange: npt=0.000-\r\n")
        self._drain = threading.Thread(target=self._discard, args=(self._sock,), name="primer", daemon=True)
        self._drain.start()

    @staticmethod
    def _discard(sock: socket.socket) -> None:
        sock.settimeout(None)
        with contextlib.suppress(OSError):
            while sock.recv(1 << 16):
                pass

    def _request(self, method: str, url: str, headers: str) -> str:
        assert self._sock is not None
        self._cseq += 1
        self._sock.sendall(f"{method} {url} RTSP/1.0\r\nCSeq: {self._cseq}\r\n{headers}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"RTSP {method}: connection closed")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        text = head.decode("utf-8", "replace")
        length = int(_header(text, "Content-Length") or 0)
        while len(body) < length:
            chunk = self._sock.recv(4096)
            if not chunk:
                break
            body += chunk
        if " 200 " not in text.split("\r\n", 1)[0] + " ":
            raise ConnectionError(f"RTSP {method} answered {text.splitlines()[0]!r}")
        return text + "\r\n" + body[:length].decode("utf-8", "replace")

    def close(self) -> None:
        """Drop the connection (the server ends the session with it). Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._drain is not None:
            self._drain.join(5.0)
            self._drain = None


def _header(text: str, name: str) -> str | None:
    prefix = name.lower() + ":"
    for line in text.split("\r\n"):
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip()
    return None
