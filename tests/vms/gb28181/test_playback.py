"""GB/T 28181 playback end to end: the whole service records a demo camera in 2-second segments
and cascades it to a superior platform on 127.0.0.1, which asks RecordInfo, plays a range back
and downloads one over UDP (MPEG-PS over RTP, demuxed and decoded by PyAV), pauses a playback,
ends one with BYE, asks for a range with no recording, and reads the cascade's metrics before
and after a playback, a refused INVITE and a malformed query of their own."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import pytest
import pytest_asyncio

from tests.app_fixtures import RunningApp, serve_app
from tests.streams.formats import ps_checks
from tests.vms.gb28181.superior import PASSWORD, REALM, SERVER_ID, Msg, Superior, build
from tests.vms.gb28181.test_live_media import RtpReceiver, ps_payload
from vms.gb28181 import Cascade

pytestmark = pytest.mark.asyncio(loop_scope="module")

LOCAL_ID = "44148100002000000001"
FPS = 25


def site(port: int) -> str:
    return f"""
recording:
  record: true
  segment_seconds: 2
centres:
  - {{id: meizhou, name: 梅州市政务服务中心, halls: all}}
halls:
  - {{id: tax, name: 兴宁市税务服务大厅}}
cameras:
  - {{id: tax-1, name: 大厅全景, hall: tax, url: "demo://tax-1?size=320x180&gop=25"}}
gb28181:
  platforms:
    - name: meizhou
      server_id: "{SERVER_ID}"
      domain: "{REALM}"
      host: 127.0.0.1
      port: {port}
      transport: udp
      local_id: "{LOCAL_ID}"
      local_host: 127.0.0.1
      local_port: 0
      password: {PASSWORD}
      keepalive_interval: 1
      transaction_timeout: 1
      centre: meizhou
"""


class Site:
    def __init__(self, app: RunningApp, superior: Superior) -> None:
        self.app, self.superior = app, superior
        cascade: Cascade = app.app.state.gb28181
        self.cascade = cascade
        node = cascade.directory(cascade.platforms[0]).camera_node("tax-1")
        assert node is not None
        self.channel = node.gb_id
        self.recorded: tuple[datetime, datetime] = (datetime.now(UTC), datetime.now(UTC))

    def in_dialog(self, method: str, call_id: str, answer: Msg, cseq: int, body: bytes = b"") -> None:
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.superior.port};branch=z9hG4bK{secrets.token_hex(6)}"),
            ("From", answer.h("From")),
            ("To", answer.h("To")),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if body:
            headers.append(("Content-Type", "Application/MANSRTSP"))
        self.superior.send(build(f"{method} sip:{LOCAL_ID}@{REALM} SIP/2.0", headers, body))

    async def invite(
        self, session: str, start: int, stop: int, port: int, extra: str = ""
    ) -> tuple[str, Msg]:
        lines = [
            "v=0",
            f"o={SERVER_ID} 0 0 IN IP4 127.0.0.1",
            f"s={session}",
            f"u={self.channel}:0",
            "c=IN IP4 127.0.0.1",
            f"t={start} {stop}",
            f"m=video {port} RTP/AVP 96",
            "a=recvonly",
            "a=rtpmap:96 PS/90000",
            *([extra] if extra else []),
            "y=1100000001",
        ]
        body = ("\r\n".join(lines) + "\r\n").encode()
        uri = f"sip:{self.channel}@{REALM}"
        call_id = self.superior.request("INVITE", uri, body, content_type="application/sdp")
        return call_id, await self.superior.next_response(call_id)

    async def play_six_seconds(self, port: int) -> tuple[str, Msg]:
        """A playback of the recording's first whole six seconds, answered and acknowledged."""
        begin = math.ceil(self.recorded[0].timestamp())
        call_id, answer = await self.invite("Playback", begin, begin + 6, port)
        assert answer.status == 200, answer.first
        self.in_dialog("ACK", call_id, answer, 1)
        return call_id, answer

    async def no_sessions(self) -> None:
        for _ in range(250):
            if not self.cascade.live.count():
                return
            await asyncio.sleep(0.02)
        dialogs = self.cascade.live.dialogs.values()
        raise AssertionError([(d.kind, d.ended, d.end_reason, d.task) for d in dialogs])

    async def media_status(self, within: float) -> Msg:
        async with asyncio.timeout(within):
            while True:
                msg = await self.superior.next_request("MESSAGE", within)
                if b"<CmdType>MediaStatus</CmdType>" in msg.body:
                    return msg


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recorded() -> AsyncIterator[Site]:
    superior = Superior("udp")
    await superior.start()
    try:
        async with serve_app(site(superior.port)) as app:
            s = Site(app, superior)
            index = app.app.state.recordings
            async with asyncio.timeout(30):
                while True:
                    now = datetime.now(UTC)
                    spans = (await index.spans("tax-1", "main", now - timedelta(minutes=5), now)).spans
                    if spans and (spans[0].end - spans[0].start).total_seconds() >= 6.5:
                        break
                    await asyncio.sleep(0.1)
                while not s.cascade.platforms[0].status.registered:
                    await asyncio.sleep(0.05)
            s.recorded = (spans[0].start, spans[0].end)
            yield s
    finally:
        await superior.stop()


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def no_session_left_behind(recorded: Site) -> AsyncIterator[None]:
    """Ends the sessions a failed test left open (its BYE never sent), so that the next test's
    media and counters are its own."""
    yield
    for dialog in list(recorded.cascade.live.dialogs.values()):
        await recorded.cascade.live.end(dialog, "the test ended")


async def receiver() -> tuple[asyncio.DatagramTransport, RtpReceiver, int]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        RtpReceiver, local_addr=("127.0.0.1", 0)
    )
    return transport, protocol, transport.get_extra_info("sockname")[1]


def decoded(packets: list[bytes], tmp_path: Path) -> list[Any]:
    stream = tmp_path / f"{secrets.token_hex(4)}.ps"
    stream.write_bytes(ps_payload(packets, 1100000001))
    with av.open(str(stream), format="mpeg") as container:
        return list(container.decode(video=0))


def local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


async def test_record_info_lists_the_recorded_span(recorded: Site) -> None:
    start, end = recorded.recorded
    body = (
        '<?xml version="1.0" encoding="GB2312"?>\n<Query><CmdType>RecordInfo</CmdType><SN>31</SN>'
        f"<DeviceID>{recorded.channel}</DeviceID><StartTime>{local(start - timedelta(hours=1))}</StartTime>"
        f"<EndTime>{local(end + timedelta(hours=1))}</EndTime><Type>all</Type></Query>"
    ).encode("gb2312")
    call_id = recorded.superior.request("MESSAGE", f"sip:{LOCAL_ID}@{REALM}", body)
    assert (await recorded.superior.next_response(call_id)).status == 200
    async with asyncio.timeout(5):
        while True:
            text = (await recorded.superior.next_request("MESSAGE")).body.decode("gb2312")
            if "<CmdType>RecordInfo</CmdType>" in text:
                break
    assert "<SN>31</SN>" in text and "<SumNum>1</SumNum>" in text and 'RecordList Num="1"' in text
    assert f"<DeviceID>{recorded.channel}</DeviceID>" in text and "<Type>time</Type>" in text
    found = re.search(r"<StartTime>(.+?)</StartTime>\s*<EndTime>(.+?)</EndTime>", text)
    assert found is not None
    assert found.group(1) == local(start)
    assert (
        datetime.fromisoformat(found.group(2)).astimezone() >= datetime.fromisoformat(local(end)).astimezone()
    )


async def test_playback_sends_the_range_then_media_status(recorded: Site, tmp_path: Path) -> None:
    begin = math.ceil(recorded.recorded[0].timestamp()) + 1
    transport, rtp, port = await receiver()
    try:
        call_id, answer = await recorded.invite("Playback", begin, begin + 3, port)
        assert answer.status == 200, answer.first
        assert "y=1100000001" in answer.body.decode() and f"t={begin} {begin + 3}" in answer.body.decode()
        acked = time.monotonic()
        recorded.in_dialog("ACK", call_id, answer, 1)
        status = await recorded.media_status(15)
        took = time.monotonic() - acked
        assert f"<DeviceID>{recorded.channel}</DeviceID>" in status.body.decode()
        assert b"<NotifyType>121</NotifyType>" in status.body
        recorded.in_dialog("BYE", call_id, answer, 2)
        assert (await recorded.superior.next_response(call_id)).status == 200
        await recorded.no_sessions()
        frames = decoded(rtp.packets, tmp_path)
    finally:
        transport.close()
    # 3 s at real time, from the keyframe up to 1 s before the start
    assert 2.8 <= took <= 5.0
    assert frames[0].key_frame and (frames[0].width, frames[0].height) == (320, 180)
    assert 3 * FPS - 2 <= len(frames) <= 4 * FPS + 2
    assert frames[-1].time - frames[0].time == pytest.approx((len(frames) - 1) / FPS, abs=0.05)


async def test_download_goes_faster_than_real_time(recorded: Site, tmp_path: Path) -> None:
    begin = math.ceil(recorded.recorded[0].timestamp())
    transport, rtp, port = await receiver()
    try:
        call_id, answer = await recorded.invite("Download", begin, begin + 6, port, "a=downloadspeed:4")
        assert answer.status == 200, answer.first
        acked = time.monotonic()
        recorded.in_dialog("ACK", call_id, answer, 1)
        await recorded.media_status(10)
        took = time.monotonic() - acked
        recorded.in_dialog("BYE", call_id, answer, 2)
        assert (await recorded.superior.next_response(call_id)).status == 200
        await recorded.no_sessions()
        frames = decoded(rtp.packets, tmp_path)
    finally:
        transport.close()
    assert took < 3.0, "6 s of recording at 4 times real time"
    assert 6 * FPS - 2 <= len(frames) <= 7 * FPS + 2


async def test_pause_resume_and_bye_mid_playback(recorded: Site, tmp_path: Path) -> None:
    transport, rtp, port = await receiver()
    try:
        call_id, answer = await recorded.play_six_seconds(port)
        await asyncio.sleep(0.8)
        recorded.in_dialog("INFO", call_id, answer, 2, b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n")
        assert (await recorded.superior.next_response(call_id)).status == 200
        await asyncio.sleep(0.2)
        paused = len(rtp.packets)
        await asyncio.sleep(0.6)
        assert len(rtp.packets) == paused and paused > 0
        play = b"PLAY RTSP/1.0\r\nCSeq: 2\r\nScale: 2.0\r\nRange: npt=now-\r\n"
        recorded.in_dialog("INFO", call_id, answer, 3, play)
        assert (await recorded.superior.next_response(call_id)).status == 200
        seek = b"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=100-\r\n"
        recorded.in_dialog("INFO", call_id, answer, 4, seek)
        refused = await recorded.superior.next_response(call_id)
        assert refused.status == 457 and "outside the playback's 6 s" in refused.h("Warning")
        assert refused.body.startswith(b"RTSP/1.0 457 Invalid Range\r\nCSeq: 3\r\n")
        await asyncio.sleep(0.5)
        assert len(rtp.packets) > paused
        recorded.in_dialog("BYE", call_id, answer, 5)
        assert (await recorded.superior.next_response(call_id)).status == 200
        await recorded.no_sessions()
        ended = len(rtp.packets)
        await asyncio.sleep(0.5)
        assert len(rtp.packets) == ended
        assert recorded.superior.requests.empty() or all(
            b"MediaStatus" not in m.body
            for m in list(recorded.superior.requests._queue)  # type: ignore[attr-defined]
        )
    finally:
        transport.close()


def video_units(packets: list[bytes]) -> list[tuple[int, bool]]:
    """``(pts, keyframe)`` of each video PES with a PTS, keyframe when a PSM came before it."""
    units, mapped = [], False
    for sid, packet in ps_checks.ps_packets(ps_payload(packets, 1100000001)):
        if sid == ps_checks.PSM:
            mapped = True
        elif sid == ps_checks.VIDEO and (pts := ps_checks.pes_times(packet)[0]) is not None:
            units.append((pts, mapped))
            mapped = False
    return units


async def test_seeking_goes_on_from_the_keyframe_before_the_point(recorded: Site, tmp_path: Path) -> None:
    transport, rtp, port = await receiver()
    try:
        call_id, answer = await recorded.play_six_seconds(port)
        await asyncio.sleep(0.6)
        seek = b"PLAY RTSP/1.0\r\nCSeq: 7\r\nRange: npt=4.5-\r\n"
        recorded.in_dialog("INFO", call_id, answer, 2, seek)
        seeked = await recorded.superior.next_response(call_id)
        sought = time.monotonic()
        assert seeked.status == 200 and seeked.h("Content-Type") == "Application/MANSRTSP"
        found = re.fullmatch(r"RTSP/1.0 200 OK\r\nCSeq: 7\r\nRange: npt=([\d.]+)-\r\n", seeked.body.decode())
        assert found is not None, seeked.body
        position = float(found.group(1))
        assert 3.4 <= position <= 4.5, "the keyframe at or before 4.5 s, keyframes every second"
        await recorded.media_status(5)
        took = time.monotonic() - sought
        recorded.in_dialog("BYE", call_id, answer, 3)
        assert (await recorded.superior.next_response(call_id)).status == 200
        await recorded.no_sessions()
        units = video_units(rtp.packets)
        frames = decoded(rtp.packets, tmp_path)
    finally:
        transport.close()
    assert 6 - position - 0.3 <= took <= 6 - position + 1.0, "the rest of the range at real time"
    jump = next(i for i, (a, b) in enumerate(itertools.pairwise(units), 1) if b[0] - a[0] > 0.5 * 90_000)
    before, (pts, keyframe) = units[jump - 1][0], units[jump]
    assert units[0] == (0, True) and 0.4 * 90_000 <= before <= 1.5 * 90_000
    assert keyframe and pts == pytest.approx(position * 90_000, abs=90)
    assert all(b[0] - a[0] == 3600 for a, b in itertools.pairwise(units[jump:])), "paced on from there"
    assert len(units) - jump == pytest.approx((6 - position) * FPS, abs=2)
    assert len(frames) == len(units), "every unit decodes, before and after the jump"


async def test_a_range_without_recording_is_404(recorded: Site) -> None:
    before = int(recorded.recorded[0].timestamp()) - 3600
    _, answer = await recorded.invite("Playback", before, before + 60, 40000)
    assert answer.status == 404 and "nothing is recorded" in answer.h("Warning")
    _, answer = await recorded.invite("Playback", 0, 0, 40000)
    assert answer.status == 488 and "t=" in answer.h("Warning")


def sample(text: str, name: str) -> float:
    """One sample's value in a ``/metrics`` text (``name`` with its labels as exposed); 0 when absent."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_metrics_of_the_cascade(recorded: Site) -> None:
    registered = 'hallwatch_gb28181_registered{platform="meizhou"}'
    open_now = 'hallwatch_gb28181_sessions{kind="playback",platform="meizhou"}'
    started = 'hallwatch_gb28181_sessions_started_total{kind="playback",platform="meizhou"}'
    refused = 'hallwatch_gb28181_sessions_refused_total{platform="meizhou",status="404"}'
    malformed = 'hallwatch_gb28181_malformed_total{platform="meizhou"}'

    async def metrics() -> str:
        return (await recorded.app.http.get("/metrics")).text

    before = await metrics()
    begin = math.ceil(recorded.recorded[0].timestamp())
    transport, _, port = await receiver()
    try:
        call_id, answer = await recorded.invite("Playback", begin, begin + 1, port)
        assert answer.status == 200, answer.first
        recorded.in_dialog("ACK", call_id, answer, 1)
        during = await metrics()
        await recorded.media_status(10)
        recorded.in_dialog("BYE", call_id, answer, 2)
        assert (await recorded.superior.next_response(call_id)).status == 200
        await recorded.no_sessions()
        _, missing = await recorded.invite("Playback", begin - 3600, begin - 3540, port)
        assert missing.status == 404
    finally:
        transport.close()
    query = recorded.superior.request("MESSAGE", f"sip:{LOCAL_ID}@{REALM}", b"<Query><CmdType>Catalog")
    assert (await recorded.superior.next_response(query)).status == 400
    after = await metrics()

    assert sample(before, registered) == sample(after, registered) == 1
    assert sample(during, open_now) == sample(before, open_now) + 1 == sample(after, open_now) + 1
    assert sample(during, started) == sample(after, started) == sample(before, started) + 1
    assert sample(after, refused) == sample(before, refused) + 1
    assert sample(after, malformed) == sample(before, malformed) + 1
