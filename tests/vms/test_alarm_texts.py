"""Every alarm text in Chinese: each reason the media plane can give, each alarm kind; and
picture alarms with their JPEG, kept within a memory budget."""

from __future__ import annotations

import errno
import socket
from typing import get_args

import pytest

from streams import IngestState
from streams.recording.layout import failure_reason
from streams.sources import failures
from vms.alarm_texts import describe, reason_zh, translated
from vms.alarms import AlarmCentre, AlarmKind
from vms.config_loader import parse_config

METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "GET_PARAMETER", "X-BOGUS")


def media_plane_reasons() -> list[str]:
    fixed = [v for k, v in vars(failures).items() if k.isupper() and isinstance(v, str)]
    statuses = [failures.status_reason(m, s) for m in METHODS for s in (*range(400, 600), 42, 1000)]
    connects = [
        failures.connect_reason(err, 2.5)
        for err in (
            TimeoutError(),
            ConnectionRefusedError(),
            socket.gaierror(),
            OSError(errno.EHOSTUNREACH, "x"),
            OSError(errno.ECONNRESET, "x"),
            OSError(errno.EPIPE, "x"),
        )
    ]
    whep = [
        failures.whep_status_reason(s, has_token=t)
        for s in (*range(400, 600), 42, 1000)
        for t in (True, False)
    ]
    timeouts = [failures.no_answer_reason(m, 5) for m in METHODS]
    timeouts += [failures.whep_no_answer_reason(7.5)]
    timeouts += [failures.no_rtp_reason(7, video=v) for v in (True, False)]
    ingest = ["the stream ended", "no packet for 5 s", "no packet within 10 s", "not connected within 12.5 s"]
    disk = [
        failure_reason(OSError(e, "x")) for e in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO, 9999)
    ]
    internal = [failures.public_reason(RuntimeError("boom"))]
    return fixed + statuses + whep + connects + timeouts + ingest + disk + internal


def test_every_media_plane_reason_has_chinese() -> None:
    reasons = sorted(set(media_plane_reasons()))
    assert len(reasons) > 300
    assert any(r.startswith("the WHEP server") for r in reasons)
    untranslated = [r for r in reasons if not translated(r)]
    assert untranslated == []
    english = [r for r in reasons if reason_zh(r).startswith("故障（") or "camera" in reason_zh(r)]
    assert english == []


def test_numbers_and_methods_survive_translation() -> None:
    assert reason_zh("no packet for 2.5 s") == "2.5 秒未收到数据"
    assert reason_zh("the camera does not allow SETUP (405)") == "摄像机不允许 SETUP 请求（405）"
    assert reason_zh("no answer to the WHEP offer within 7.5 s") == "WHEP 提议 7.5 秒内无应答"
    assert reason_zh("the WHEP server answered the offer with 418") == "WHEP 服务器对 SDP 提议应答 418"
    assert reason_zh("something new") == "故障（something new）"


@pytest.mark.parametrize("kind", get_args(AlarmKind))
def test_every_alarm_kind_has_both_languages(kind: str) -> None:
    texts = describe(kind, seconds=90, deleted=3, cleared="covered")
    assert set(texts) == {"zh-CN", "en"}
    assert texts["zh-CN"] != texts["en"] and not texts["zh-CN"].isascii()


SITE = """
halls: [{id: tax, name: 税务}]
cameras: [{id: tax-1, name: 全景, hall: tax, url: "demo://a"}]
"""


def test_offline_alarm_texts_are_chinese_for_the_dashboard() -> None:
    centre = AlarmCentre(parse_config(SITE))
    centre.on_state("tax-1", IngestState.ONLINE, IngestState.OFFLINE, "no packet for 5 s")
    alarm = centre.alarms({"tax"})[0]
    assert alarm.texts == {"zh-CN": "摄像机离线：5 秒未收到数据", "en": "camera offline: no packet for 5 s"}
    assert alarm.message == "camera offline: no packet for 5 s"


def test_picture_alarms_keep_their_picture_within_a_budget() -> None:
    centre = AlarmCentre(parse_config(SITE), picture_budget=250)
    first = centre.picture_raised("tax-1", "covered", b"a" * 100)
    assert first is not None and first.picture and centre.picture(first.id, {"tax"}) == b"a" * 100
    assert centre.picture_raised("tax-1", "covered", b"x") is None, "one alarm per condition until it clears"
    second = centre.picture_raised("tax-1", "dark", b"b" * 100)
    third = centre.picture_raised("tax-1", "moved", b"c" * 100)
    assert second is not None and third is not None
    assert not first.picture, "the oldest picture goes when the budget is exceeded"
    assert second.picture and third.picture
    assert (
        first.as_json()["picture"] is None
        and third.as_json()["picture"] == f"/api/v1/alarms/{third.id}/picture"
    )
    assert centre.picture_trouble("tax-1") == ["covered", "dark", "moved"]
    centre.picture_cleared("tax-1", "covered")
    ok = centre.alarms({"tax"})[0]
    assert ok.kind == "picture_ok" and ok.informational and ok.resolves == (first.id,)
    assert ok.texts["zh-CN"].startswith("镜头被遮挡已恢复正常")
    assert centre.picture_trouble("tax-1") == ["dark", "moved"]
    assert centre.raised_counts == {"covered": 1, "dark": 1, "moved": 1, "picture_ok": 1}
    assert centre.picture_raised("tax-1", "not-a-kind", b"x") is None
