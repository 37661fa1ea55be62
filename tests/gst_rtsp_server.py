"""A real RTSP server for tests and benchmarks, built on GStreamer's RTSP server.

Run with the system Python that has PyGObject and ``GstRtspServer`` (not the
project's virtualenv), for example::

    python3 tests/gst_rtsp_server.py --port 8554 --stream cam1:640x360@25,800k,gop=50

Each ``--stream PATH:SPEC`` adds a mount point. SPEC is either

* encoder mode: ``WxH@FPS[,BITRATEk|,qp=N][,gop=N][,profile=baseline|high][,codec=h265]
  [,bframes=N][,clock|,scene=FILE][,faults][,audio=pcmu|pcma|opus|aac|latm]``; a live
  test picture encoded by x264 (or x265) at a constant bitrate or, with ``qp=N``
  (H.264 only), at a constant quantizer, as a camera in fixed-quality mode sends it:
  a still picture is then coded alike at every keyframe, and snow at whatever rate
  it takes.
  ``bframes=N`` (H.264 only) makes x264 use N B-frames (High profile, no
  zero-latency tuning, which would forbid them), so presentation timestamps
  arrive out of order. ``clock`` replaces the test pattern with a grey picture
  and a moving bar whose top-left carries, as a barcode, the Unix time in
  milliseconds at which the frame was made (see ``clock_barcode.py``); raw I420
  frames are fed to the encoder through an ``appsrc`` at the spec's rate.
  ``scene=FILE`` feeds the same way raw I420 pictures of the spec's size read from
  FILE (one after the other, nothing between them), looped: a recorded-looking scene.
  ``faults`` puts GStreamer elements between the picture and the encoder that turn
  it bad on command while it streams (see ``gst_faults.py``).
  ``audio=CODEC`` adds a second track (``pay1``), a live sine tone: G.711 µ-law
  or A-law (8 kHz mono, 20 ms per packet), Opus (48 kHz stereo, 20 ms frames)
  or AAC-LC (``voaacenc``, 48 kHz stereo, RTP per RFC 3640 AAC-hbr; ``latm``:
  the same in MP4A-LATM, RFC 6416, which the relay does not read). Or
* access-unit file mode: ``aufile=FILE[,fps=N][,alt=FILE2]``; pre-encoded H.264 access
  units (repeated 4-byte big-endian length + Annex-B access unit; the first is a
  keyframe with SPS/PPS) looped at real-time pace. Before each access unit goes
  out, an SEI NAL unit (user_data_unregistered, UUID ``HALLWATCH-CLOCK!``) with
  8 bytes of big-endian ``time.time_ns()`` is put in front of its first slice:
  a burnt-in send time that lets a reader measure latency without decoding.
  With ``alt=FILE2`` the fault ``switch`` makes the mount send FILE2 instead (from
  its first access unit, a keyframe), ``none`` FILE again: a switch to another
  scene within the same session.

Commands on standard input, one a line, each answered on standard output by ``OK``
or ``ERR reason``: ``fault PATH NAME`` turns the picture of mount PATH bad (NAME
one of ``gst_faults.FAULTS``, or ``switch`` for an access-unit file with ``alt``)
or, with ``none``, back to normal; ``sessions`` answers ``OK PATH=N ...``, the RTSP
sessions each mount has now (the camera's side of "who pulls this camera"; a session
over TCP ends when its connection closes).

Every client of one path shares one pipeline. Serves RTP over TCP (interleaved)
and UDP. ``--user``/``--password`` enable Basic or Digest authentication
(``--auth``). Prints ``READY <port>`` once listening; exits on SIGTERM/SIGINT.

Threads: the GLib main loop serves RTSP and runs commands; one feeder thread per
access-unit-file, clock or scene pipeline pushes buffers into its ``appsrc``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import re
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
# Run as a script by the system Python, whose sys.path starts with this directory.
from clock_barcode import HEIGHT as BARCODE_HEIGHT  # noqa: E402
from clock_barcode import WIDTH as BARCODE_WIDTH  # noqa: E402
from clock_barcode import barcode_rows  # noqa: E402
from gi.repository import GLib, Gst, GstApp, GstRtsp, GstRtspServer  # noqa: E402
from gst_faults import FaultControl, Freezer, SetFault, fault_chain, watch_commands  # noqa: E402

CLOCK_UUID = b"HALLWATCH-CLOCK!"
_ROLE = "user"


AUDIO_ENCODERS = {
    "pcmu": ("rate=8000,channels=1", 160, "mulawenc ! rtppcmupay"),
    "pcma": ("rate=8000,channels=1", 160, "alawenc ! rtppcmapay"),
    "opus": ("rate=48000,channels=2", 960, "opusenc frame-size=20 ! rtpopuspay"),
    "aac": ("rate=48000,channels=2", 1024, "voaacenc bitrate=64000 ! rtpmp4gpay"),
    "latm": ("rate=48000,channels=2", 1024, "voaacenc bitrate=64000 ! rtpmp4apay"),
}
"""Raw caps, samples per buffer and encoder + payloader of each ``audio=`` codec."""


@dataclass
class EncoderSpec:
    width: int = 640
    height: int = 360
    fps: int = 25
    bitrate_kbps: int = 800
    qp: int = 0
    gop: int = 50
    profile: str = "baseline"
    codec: str = "h264"
    bframes: int = 0
    clock: bool = False
    scene: str = ""
    faults: bool = False
    audio: str = ""

    @property
    def fed(self) -> bool:
        """Whether the server makes the raw pictures itself and feeds them to an ``appsrc``."""
        return self.clock or bool(self.scene)


@dataclass
class AuFileSpec:
    path: str
    fps: int = 25
    alt: str = ""


def parse_spec(spec: str) -> EncoderSpec | AuFileSpec:
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts and parts[0].startswith("aufile="):
        au = AuFileSpec(path=parts[0][len("aufile=") :])
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key == "fps":
                au.fps = int(value)
            elif key == "alt":
                au.alt = value
            else:
                raise ValueError(f"unknown option {part!r} in {spec!r}")
        return au
    enc = EncoderSpec()
    for part in parts:
        size = re.fullmatch(r"(\d+)x(\d+)(?:@(\d+))?", part)
        if size:
            enc.width, enc.height = int(size[1]), int(size[2])
            if size[3]:
                enc.fps = int(size[3])
        elif re.fullmatch(r"\d+k", part):
            enc.bitrate_kbps = int(part[:-1])
        elif part.startswith("qp="):
            enc.qp = int(part[3:])
        elif part.startswith("gop="):
            enc.gop = int(part[4:])
        elif part.startswith("profile="):
            enc.profile = part[8:]
            if enc.profile not in ("baseline", "high"):
                raise ValueError(f"profile must be baseline or high, not {enc.profile!r}")
        elif part.startswith("fps="):
            enc.fps = int(part[4:])
        elif part.startswith("codec="):
            enc.codec = part[6:]
            if enc.codec not in ("h264", "h265"):
                raise ValueError(f"codec must be h264 or h265, not {enc.codec!r}")
        elif part.startswith("bframes="):
            enc.bframes = int(part[8:])
        elif part == "clock":
            enc.clock = True
        elif part.startswith("scene="):
            enc.scene = part[6:]
        elif part == "faults":
            enc.faults = True
        elif part.startswith("audio="):
            enc.audio = part[6:]
            if enc.audio not in AUDIO_ENCODERS:
                raise ValueError(f"audio must be one of {', '.join(AUDIO_ENCODERS)}, not {enc.audio!r}")
        else:
            raise ValueError(f"unknown option {part!r} in {spec!r}")
    if enc.qp and enc.codec != "h264":
        raise ValueError("qp is for H.264 only")
    if enc.clock and enc.scene:
        raise ValueError("clock and scene are two different pictures: choose one")
    if enc.bframes:
        if enc.codec != "h264":
            raise ValueError("bframes is for H.264 only")
        enc.profile = "high"  # Constrained Baseline has no B-frames
    if enc.clock and (
        enc.width < BARCODE_WIDTH or enc.height < BARCODE_HEIGHT or enc.width % 2 or enc.height % 2
    ):
        raise ValueError(f"a clock picture must be even-sized and at least {BARCODE_WIDTH}x{BARCODE_HEIGHT}")
    return enc


def encoder_and_payloader(enc: EncoderSpec) -> str:
    """The launch-line tail that encodes raw video as the spec says and packetizes it as ``pay0``."""
    if enc.codec == "h265":
        return (
            f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={enc.gop} "
            f"bitrate={enc.bitrate_kbps} ! rtph265pay config-interval=-1 name=pay0 pt=96"
        )
    preset = "ultrafast" if enc.profile == "baseline" else "veryfast"
    if enc.bframes:
        # No zerolatency tuning (it forbids B-frames); a short lookahead and sliced threads
        # keep the delay down (about 200 ms at 720p25 with 2 B-frames).
        tuning = (
            f"bframes={enc.bframes} b-adapt=false rc-lookahead={enc.bframes + 1} "
            "sync-lookahead=0 sliced-threads=true"
        )
    else:
        tuning = "tune=zerolatency"
    rate = f"pass=quant quantizer={enc.qp}" if enc.qp else f"bitrate={enc.bitrate_kbps}"
    return (
        f"x264enc {tuning} speed-preset={preset} key-int-max={enc.gop} {rate} "
        f"! video/x-h264,profile={enc.profile} "
        "! rtph264pay config-interval=-1 name=pay0 pt=96"
    )


def audio_launch(codec: str) -> str:
    """The launch-line branch of a live sine tone encoded as ``codec`` and packetized as ``pay1``."""
    caps, samples, encode = AUDIO_ENCODERS[codec]
    return (
        f"audiotestsrc is-live=true wave=sine volume=0.3 samplesperbuffer={samples} "
        f"! audioconvert ! audioresample ! audio/x-raw,{caps} ! {encode} name=pay1"
    )


def encoder_launch(enc: EncoderSpec) -> str:
    size = f"width={enc.width},height={enc.height},framerate={enc.fps}/1"
    if enc.fed:
        source = f"appsrc name=src is-live=true format=time caps=video/x-raw,format=I420,{size} ! queue"
    else:
        source = f"videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,{size}"
    if enc.faults:
        source += f" ! {fault_chain(enc.width, enc.height, enc.fps, Feeder.LATE)}"
    audio = f" {audio_launch(enc.audio)}" if enc.audio else ""
    return f"( {source} ! {encoder_and_payloader(enc)}{audio} )"


def aufile_launch() -> str:
    return (
        "( appsrc name=src is-live=true format=time "
        "caps=video/x-h264,stream-format=byte-stream,alignment=au "
        "! h264parse ! rtph264pay config-interval=-1 name=pay0 pt=96 )"
    )


def read_au_file(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    units, pos = [], 0
    while pos + 4 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 4
        units.append(data[pos : pos + length])
        pos += length
    if not units:
        raise ValueError(f"no access units in {path}")
    return units


def _escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def clock_sei(time_ns: int) -> bytes:
    payload = CLOCK_UUID + struct.pack(">Q", time_ns)
    rbsp = bytes([5, len(payload)]) + payload + b"\x80"
    return b"\x06" + _escape(rbsp)


def with_clock(au: bytes, time_ns: int) -> bytes:
    """The access unit with a clock SEI before its first slice."""
    sei = b"\x00\x00\x00\x01" + clock_sei(time_ns)
    i = au.find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        if start < len(au) and 1 <= (au[start] & 0x1F) <= 5:
            begin = i - 1 if i > 0 and au[i - 1] == 0 else i
            return au[:begin] + sei + au[begin:]
        i = au.find(b"\x00\x00\x01", start)
    return sei + au


class Feeder:
    """Pushes what ``produce`` makes, one buffer per frame, into one appsrc at real-time pace."""

    LATE = 0.5
    """Seconds behind the pace after which the feeder starts again from the clock's now."""

    def __init__(self, appsrc: GstApp.AppSrc, produce: Callable[[], bytes], fps: int) -> None:
        self._appsrc = appsrc
        self._produce = produce
        self._period = 1.0 / fps
        self._duration = Gst.SECOND // fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _running_time(self) -> int:
        clock = self._appsrc.get_clock()
        if clock is None:
            return 0
        return max(0, int(clock.get_time() - self._appsrc.get_base_time()))

    def _run(self) -> None:
        due = time.monotonic()
        pts = self._running_time()
        while not self._stop.is_set():
            buf = Gst.Buffer.new_wrapped(self._produce())
            buf.pts = buf.dts = pts
            buf.duration = self._duration
            if self._appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                return
            due += self._period
            pts += self._duration
            delay = due - time.monotonic()
            if delay < -self.LATE:  # starved, or resumed after SIGSTOP: carry on from now, no burst
                due, pts, delay = time.monotonic(), self._running_time(), 0.0
            if delay > 0 and self._stop.wait(delay):
                return


class AuFileFactory(GstRtspServer.RTSPMediaFactory):  # type: ignore[misc]
    def __init__(self, spec: AuFileSpec) -> None:
        super().__init__()
        self._recordings = {"none": read_au_file(spec.path)}
        if spec.alt:
            self._recordings["switch"] = read_au_file(spec.alt)
        self._units = self._recordings["none"]
        self._fps = spec.fps
        self.set_launch(aufile_launch())
        self.connect("media-configure", self._on_configure)

    def set_fault(self, fault: str) -> None:
        """``switch``: send the ``alt`` recording from its start; ``none``: the first one again."""
        if fault not in self._recordings:
            raise ValueError(f"an access-unit file mount knows {', '.join(self._recordings)}, not {fault!r}")
        self._units = self._recordings[fault]

    def _on_configure(self, _factory: Any, media: GstRtspServer.RTSPMedia) -> None:
        units = self._units
        index = -1

        def produce() -> bytes:
            nonlocal units, index
            if self._units is not units:
                units, index = self._units, -1
            index = (index + 1) % len(units)
            return with_clock(units[index], time.time_ns())

        _feed(media, produce, self._fps)


def _feed(media: GstRtspServer.RTSPMedia, produce: Callable[[], bytes], fps: int) -> None:
    appsrc = media.get_element().get_by_name("src")
    feeder = Feeder(appsrc, produce, fps)
    media.connect("unprepared", lambda _m: feeder.stop())
    feeder.start()


class ClockPicture:
    """Raw I420 frames: grey, a white bar sweeping across, the clock barcode at the top-left."""

    BAR = 32

    def __init__(self, width: int, height: int, fps: int) -> None:
        self.width, self.height, self.fps = width, height, fps
        luma = width * height
        self._blank = bytes([96]) * luma + bytes([128]) * (luma // 2)
        self._frame = 0

    def __call__(self) -> bytes:
        width, bar = self.width, self.BAR
        data = bytearray(self._blank)
        x = (self._frame * 8) % (width - bar)
        self._frame += 1
        white = b"\xeb" * bar
        for y in range(BARCODE_HEIGHT + 8, self.height - 8):
            data[y * width + x : y * width + x + bar] = white
        for y, row in enumerate(barcode_rows(time.time_ns() // 1_000_000)):
            data[y * width : y * width + BARCODE_WIDTH] = row
        return bytes(data)


@functools.cache
def read_scene(path: str, frame_size: int) -> tuple[bytes, ...]:
    """The raw pictures of a ``scene=`` file, read once however many mounts show it."""
    with open(path, "rb") as f:
        data = f.read()
    if not data or len(data) % frame_size:
        raise ValueError(f"{path} does not hold whole pictures of {frame_size} bytes")
    return tuple(data[i : i + frame_size] for i in range(0, len(data), frame_size))


class EncoderFactory(GstRtspServer.RTSPMediaFactory):  # type: ignore[misc]
    """An encoder-mode mount: feeds its ``appsrc`` (clock, scene) and takes faults on command."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self._spec = spec
        self._scene = read_scene(spec.scene, spec.width * spec.height * 3 // 2) if spec.scene else ()
        self._faults = FaultControl(spec.width, spec.height) if spec.faults else None
        self.set_launch(encoder_launch(spec))
        self.connect("media-configure", self._on_configure)

    def set_fault(self, fault: str) -> None:
        if self._faults is None:
            raise ValueError("this mount was started without the faults option")
        self._faults.set(fault, can_freeze=self._spec.fed)

    def _on_configure(self, _factory: Any, media: GstRtspServer.RTSPMedia) -> None:
        spec = self._spec
        freezer = None
        if spec.fed:
            picture = (
                itertools.cycle(self._scene).__next__
                if spec.scene
                else ClockPicture(spec.width, spec.height, spec.fps)
            )
            freezer = Freezer(picture)
            _feed(media, freezer, spec.fps)
        if self._faults is not None:
            self._faults.attach(media, freezer)


def build_server(args: argparse.Namespace) -> tuple[GstRtspServer.RTSPServer, dict[str, SetFault]]:
    """The server, and what turns each mount's picture bad (``set_fault`` by path)."""
    server = GstRtspServer.RTSPServer()
    server.set_address(args.bind)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    faults: dict[str, SetFault] = {}
    for item in args.stream:
        path, sep, spec_text = item.partition(":")
        if not sep or not path:
            raise SystemExit(f"--stream wants PATH:SPEC, got {item!r}")
        spec = parse_spec(spec_text)
        factory = AuFileFactory(spec) if isinstance(spec, AuFileSpec) else EncoderFactory(spec)
        faults[path.strip("/")] = factory.set_fault
        factory.set_shared(True)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
        if args.user:
            factory.add_role_from_structure(
                Gst.Structure.from_string(
                    f"{_ROLE}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
                )[0]
            )
        mounts.add_factory("/" + path.strip("/"), factory)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", _ROLE)
        if args.auth == "basic":
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        else:
            auth.add_digest(args.user, args.password, token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        server.set_auth(auth)
    if args.session_timeout:
        timeout = args.session_timeout

        def on_client(_server: Any, client: GstRtspServer.RTSPClient) -> None:
            client.connect("new-session", lambda _c, session: session.set_timeout(timeout))

        server.connect("client-connected", on_client)
    return server, faults


def session_counts(pool: GstRtspServer.RTSPSessionPool, paths: list[str]) -> str:
    """``PATH=N`` for every mount: the sessions of ``pool`` that hold a media of that path."""
    counts = dict.fromkeys(paths, 0)
    for session in pool.filter(None, None):
        for path in paths:
            media, _ = session.get_media("/" + path)
            if media is not None:
                counts[path] += 1
    return " ".join(f"{path}={count}" for path, count in counts.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8554, help="0 picks a free port")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--stream", action="append", required=True, metavar="PATH:SPEC")
    parser.add_argument("--user")
    parser.add_argument("--password", default="")
    parser.add_argument("--auth", choices=("basic", "digest"), default="digest")
    parser.add_argument("--session-timeout", type=int, default=0, help="seconds; 0 keeps the default (60)")
    args = parser.parse_args(argv)

    Gst.init(None)
    server, faults = build_server(args)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"cannot listen on {args.bind}:{args.port}", file=sys.stderr)
        return 1
    pool = server.get_session_pool()
    GLib.timeout_add(250, lambda: pool.cleanup() >= 0)  # expire timed-out sessions promptly
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda: loop.quit() or False)
    watch_commands(faults, {"sessions": functools.partial(session_counts, pool, list(faults))})
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
