"""``bench/record.py --playback``: how long until a recorded moment shows its first picture.

A service runs 16 file cameras (the clip of ``--overhead``, recording on, as a site
runs). Once it is up, its index gets 16 cameras x ``--days`` of 5-minute segments
(the synthetic rows of ``--index``; added while it runs, since at start-up it
drops rows whose file is missing). For ``--moments`` random moments, one per
segment, that segment's row is replaced by a real file: 5 minutes of the clip
written by the recorder's segmenter and writer with that segment's start as its
wall clock (:mod:`bench._record_segments`).

Each moment is asked for through the real route,
``GET /api/v1/cameras/{id}/playback.mp4?start=...``, twice in a row: **cold**,
after the file was evicted from the page cache (as a recording of last week
would be), then **warm**. A client reads the streamed body box by box and times,
from sending the request: the response headers, the init segment, the first
``moof`` + ``mdat``, and PyAV's first decoded picture of that fragment (decoded
from the init segment's ``avcC`` as a browser's decoder would get it). It also
notes how far before the moment the picture is (``X-Playback-Start``: the
keyframe at or before it).

Blocking code for the benchmark's main thread; the service is a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import linear_regression, median, quantiles
from typing import Any, cast

import httpx

from bench._fixtures import Service, free_port
from bench._mse import decode_keyframe
from bench._record_index import synthetic_rows
from bench._record_overhead import cached_clip
from bench._record_segments import clip_units, drop_from_cache, info_row, insert_rows, write_recording
from vms.recordings import from_ms

SEGMENT_SECONDS = 300


@dataclass
class Moment:
    camera: str
    at: datetime
    path: Path
    offset: float
    """Seconds from the segment's start to the moment."""


def _boxes(buf: bytearray, pos: int) -> tuple[list[tuple[bytes, int, int]], int]:
    """The complete top-level boxes from ``pos`` on: (type, start, end); and where the next begins."""
    found = []
    while pos + 8 <= len(buf):
        size = int.from_bytes(buf[pos : pos + 4], "big")
        if size < 8 or pos + size > len(buf):
            break
        found.append((bytes(buf[pos + 4 : pos + 8]), pos, pos + size))
        pos += size
    return found, pos


def first_picture(http: httpx.Client, service: Service, moment: Moment) -> dict[str, Any]:
    """One timed request (see the module docstring); seconds from sending it."""
    params = {"start": moment.at.isoformat().replace("+00:00", "Z"), "duration": "60"}
    url = f"/api/v1/cameras/{moment.camera}/playback.mp4"
    sent = time.perf_counter()
    times: dict[str, Any] = {}
    with http.stream("GET", url, params=params, headers=service.headers) as response:
        times["headers"] = time.perf_counter() - sent
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.read()[:200]!r}")
        shown = datetime.fromisoformat(response.headers["X-Playback-Start"])
        buf, pos = bytearray(), 0
        init: bytes | None = None
        moof: int | None = None
        for chunk in response.iter_raw():
            buf += chunk
            boxes, pos = _boxes(buf, pos)
            for kind, start, end in boxes:
                if kind == b"moov":
                    init = bytes(buf[:end])
                    times["init"] = time.perf_counter() - sent
                elif kind == b"moof" and moof is None:
                    moof = start
                elif kind == b"mdat" and moof is not None and init is not None:
                    times["fragment"] = time.perf_counter() - sent
                    decode_keyframe(init, bytes(buf[moof:end]))
                    times["decoded"] = time.perf_counter() - sent
                    times["before"] = (moment.at - shown).total_seconds()
                    return times
    raise RuntimeError(f"{url}: the body ended before a whole fragment")


def _populate(service: Service, args: Any, clip: Path, say: Any) -> list[Moment]:
    """The synthetic index, and real files for the moments' segments (see the module docstring)."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    rows = [row for cam in service.cameras for row in synthetic_rows(cam, args.days, SEGMENT_SECONDS, now)]
    rng = random.Random(args.seed)
    latest = (now - timedelta(hours=1)).timestamp() * 1000
    picked = rng.sample([r for r in rows if cast(int, r["start_ms"]) < latest], args.moments)
    root = service.data_dir / "recordings"
    units = clip_units(clip)
    say(f"writing {len(picked)} real segments of {SEGMENT_SECONDS} s for the moments ...")
    moments, real = [], []
    for row in picked:
        camera, start = str(row["camera_id"]), from_ms(cast(int, row["start_ms"]))
        infos = asyncio.run(write_recording(root, camera, start, SEGMENT_SECONDS, SEGMENT_SECONDS, units))
        real += [info_row(info, root) for info in infos]
        offset = rng.uniform(0, SEGMENT_SECONDS - 1)
        moments.append(Moment(camera, start + timedelta(seconds=offset), infos[0].path, offset))
    say(f"indexing {len(rows)} segments ({len(service.cameras)} cameras x {args.days} days) ...")
    asyncio.run(insert_rows(service.data_dir, rows))
    asyncio.run(insert_rows(service.data_dir, real, replaced=[str(r["path"]) for r in picked]))
    return moments


def run_playback(args: Any, say: Any) -> str:
    width, height = (int(v) for v in args.size.split("x"))
    clip, mbps = cached_clip(width, height, args.kbps, say)
    results: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="record-playback-")))
        service = Service(
            workdir,
            free_port(),
            0,
            args.cameras,
            1,
            urls=[clip.as_uri()] * args.cameras,
            extra={"recording": {"record": True, "retention_days": args.days + 10}},
            label="playback",
        )
        stack.callback(service.stop)
        say(f"starting the service ({args.cameras} file cameras, recording on) ...")
        service.start()
        moments = _populate(service, args, clip, say)
        say(f"asking for {len(moments)} moments, cold then warm ...")
        with httpx.Client(base_url=service.base_url, timeout=30.0) as http:
            for moment in moments:
                drop_from_cache(moment.path)
                for kind in ("cold", "warm"):
                    times = first_picture(http, service, moment)
                    times["offset"] = moment.offset
                    results[kind].append(times)
                say(
                    f"{moment.camera} {moment.at:%m-%d %H:%M:%S} (+{moment.offset:3.0f} s in its segment): "
                    f"cold {results['cold'][-1]['decoded'] * 1000:.0f} ms, "
                    f"warm {results['warm'][-1]['decoded'] * 1000:.0f} ms"
                )
        count, seen = service.log_problems()
    return _report(args, mbps, results, count, seen)


def _ms(values: list[float]) -> str:
    p90 = quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
    return f"{median(values) * 1000:7.0f} {p90 * 1000:7.0f} {max(values) * 1000:7.0f}"


def _report(
    args: Any, mbps: float, results: dict[str, list[dict[str, Any]]], count: int, seen: list[str]
) -> str:
    lines = [
        "",
        f"Playback, first picture: {args.moments} random moments of {args.cameras} cameras x {args.days} "
        f"days of {SEGMENT_SECONDS}-s segments ({args.size}, {mbps:.2f} Mbit/s, keyframe every 2 s); "
        "ms from sending GET playback.mp4",
        f"{'':<6} {'step':<10} {'median':>7} {'p90':>7} {'max':>7}",
    ]
    for kind, rows in results.items():
        for step in ("headers", "init", "fragment", "decoded"):
            lines.append(f"{kind:<6} {step:<10} {_ms([r[step] for r in rows])}")
        early = [r["decoded"] for r in rows if r["offset"] < SEGMENT_SECONDS / 2]
        late = [r["decoded"] for r in rows if r["offset"] >= SEGMENT_SECONDS / 2]
        if early and late:
            lines.append(
                f"{kind:<6} decoded, moment in the first half of its segment: median "
                f"{median(early) * 1000:.0f} ms ({len(early)}); second half {median(late) * 1000:.0f} ms "
                f"({len(late)})"
            )
        if len(rows) > 2:
            fit = linear_regression([r["offset"] for r in rows], [r["decoded"] * 1000 for r in rows])
            lines.append(
                f"{kind:<6} decoded = {fit.intercept:.0f} ms + {fit.slope:.2f} ms per second of the "
                "moment into its segment (least squares)"
            )
    before = [r["before"] for r in results["cold"]]
    lines.append(
        f"picture shown before the moment asked (its keyframe): median {median(before):.2f} s, "
        f"max {max(before):.2f} s  (target for 'decoded': under 500 ms)"
    )
    if count:
        lines.append(f"the service logged {count} warnings/errors, e.g. {seen[0]}")
    return "\n".join(lines)
