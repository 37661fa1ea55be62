"""Alarm texts in Chinese and English: the kind, and the media plane's reason, both translated.

The media plane words its failures in fixed English texts of its own
(:mod:`streams.sources.failures`, for RTSP cameras and WHEP upstreams alike, the
ingest's timeouts, the recorder's :func:`~streams.recording.layout.failure_reason`),
with nothing interpolated but numbers, status codes and RTSP method names.
:func:`reason_zh` translates each of them: exact texts from a table, texts with a
number by pattern. A text neither knows (a new reason someone forgot to add here)
is shown in English after a Chinese word for "fault", never dropped; a test walks
every reason the media plane can give.

:func:`describe` makes an alarm's two texts, Chinese (``zh-CN``, the dashboard's
first language) and English, from its kind and details.
"""

from __future__ import annotations

import re
from collections.abc import Callable

LANGUAGES = ("zh-CN", "en")
MESSAGE_CHARS = 120
"""Longest alarm text."""

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S*?(?=:\s|\s|$):?", re.IGNORECASE)
"""A URL, with the colon that ends it when an error message starts with it."""

_REASONS: dict[str, str] = {
    # streams.sources.failures, RTSP and WHEP
    "the camera refused the login (401)": "摄像机拒绝了登录（401）",
    "the camera requires a login and none is configured (401)": "摄像机要求登录，但未配置账号（401）",
    "the camera asks for a login method the relay does not support": "摄像机要求的登录方式不受支持",
    "the camera answered something that is not RTSP": "摄像机的应答不是 RTSP",
    "the camera's answer cannot be used": "摄像机的应答无法使用",
    "the camera's SETUP answer has no session": "摄像机的 SETUP 应答缺少会话",
    "the camera's stream has no video track": "摄像机的码流没有视频轨道",
    "the camera's video codec or packetization is not supported": "摄像机的视频编码或打包方式不受支持",
    "the camera closed the connection": "摄像机关闭了连接",
    "the connection to the camera was lost": "与摄像机的连接中断",
    "the camera dropped the RTSP session (454)": "摄像机丢弃了 RTSP 会话（454）",
    "the camera refuses RTP over TCP (461)": "摄像机拒绝 TCP 传输 RTP（461）",
    "the camera refuses RTP over UDP (461)": "摄像机拒绝 UDP 传输 RTP（461）",
    "no free UDP port pair to receive RTP": "没有空闲的 UDP 端口对接收 RTP",
    "the camera's URL is not a valid rtsp:// or rtsps:// URL": "摄像机地址不是有效的 RTSP 地址",
    "the camera cannot be reached": "无法连接摄像机",
    "the stream failed": "码流故障",
    "the camera forbids access to the stream (403)": "摄像机禁止访问该码流（403）",
    "the camera answered 404 for the stream": "摄像机找不到该码流（404）",
    "the camera cannot describe the stream as SDP (406)": "摄像机无法以 SDP 描述码流（406）",
    "the camera has not enough bandwidth (453)": "摄像机带宽不足（453）",
    "the camera refuses the requested range (457)": "摄像机拒绝所请求的范围（457）",
    "the camera refuses the requested transport (461)": "摄像机拒绝所请求的传输方式（461）",
    "the camera is unavailable or busy (503)": "摄像机不可用或繁忙（503）",
    "connection refused": "连接被拒绝",
    "the camera's host name cannot be resolved": "无法解析摄像机的主机名",
    "the camera's network cannot be reached": "无法到达摄像机所在网络",
    "the camera reset the connection": "摄像机重置了连接",
    "the WHEP server refused the API token (401)": "WHEP 服务器拒绝了 API 令牌（401）",
    "the WHEP server requires an API token and none is configured (401)": (
        "WHEP 服务器要求 API 令牌，但未配置（401）"
    ),
    "the WHEP server did not answer with an SDP answer": "WHEP 服务器未返回 SDP 应答",
    "the WHEP server sends no H.264 video": "WHEP 服务器未发送 H.264 视频",
    "the WebRTC connection to the WHEP server failed": "与 WHEP 服务器的 WebRTC 连接失败",
    "the camera's URL is not a valid whep:// or wheps:// URL": "摄像机地址不是有效的 WHEP 地址",
    "the WHEP server rejected the offer (400)": "WHEP 服务器拒绝了 SDP 提议（400）",
    "the WHEP server forbids access to the camera (403)": "WHEP 服务器禁止访问该摄像机（403）",
    "the WHEP server has no such camera, or does not show it to this token (404)": (
        "WHEP 服务器上没有该摄像机，或该令牌无权查看（404）"
    ),
    "the WHEP server cannot send this camera over WebRTC (409); pull its RTSP re-serve instead": (
        "WHEP 服务器无法以 WebRTC 发送该摄像机（409），请改为拉取其 RTSP 转发流"
    ),
    "the WHEP server does not take SDP offers at this URL (415)": "WHEP 服务器在此地址不接受 SDP 提议（415）",
    "the WHEP server allows this token no more viewers (429)": "该令牌的 WHEP 观看数已达上限（429）",
    "the WHEP server is at its viewer limit or unavailable (503)": "WHEP 服务器观看数已达上限或不可用（503）",
    # streams.ingest
    "the stream ended": "码流已结束",
    # streams.recording.layout
    "the disk is full": "磁盘已满",
    "the disk quota is exhausted": "磁盘配额已用尽",
    "the recordings directory is read-only": "录像目录为只读",
    "the recordings directory may not be written": "录像目录不可写",
    "the recordings directory is missing": "录像目录不存在",
    "the disk reports input/output errors": "磁盘报告输入输出错误",
}

_NUMBER = r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
_METHOD = r"([A-Z_]+|a)"


def _method_zh(method: str) -> str:
    return "请求" if method == "a" else f" {method} 请求"


_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (
        re.compile(rf"the camera rejected the {_METHOD} request \(400\)"),
        lambda m: f"摄像机拒绝了{_method_zh(m[1])}（400）",
    ),
    (
        re.compile(rf"the camera does not allow {_METHOD} \(405\)"),
        lambda m: f"摄像机不允许{_method_zh(m[1])}（405）",
    ),
    (
        re.compile(rf"the camera refuses {_METHOD} on the whole session \(459\)"),
        lambda m: f"摄像机拒绝对整个会话的{_method_zh(m[1])}（459）",
    ),
    (
        re.compile(rf"the camera refuses {_METHOD} on a single track \(460\)"),
        lambda m: f"摄像机拒绝对单个轨道的{_method_zh(m[1])}（460）",
    ),
    (
        re.compile(rf"the camera does not implement {_METHOD} \(501\)"),
        lambda m: f"摄像机未实现{_method_zh(m[1])}（501）",
    ),
    (
        re.compile(rf"the camera answered {_METHOD} with an invalid status"),
        lambda m: f"摄像机对{_method_zh(m[1])}的应答状态码无效",
    ),
    (
        re.compile(rf"the camera failed with a server error \((\d+)\) to {_METHOD}"),
        lambda m: f"摄像机处理{_method_zh(m[2])}时出现服务器错误（{m[1]}）",
    ),
    (
        re.compile(rf"the camera answered (\d+) to {_METHOD}"),
        lambda m: f"摄像机对{_method_zh(m[2])}应答 {m[1]}",
    ),
    (
        re.compile(rf"the camera did not accept the connection within {_NUMBER} s"),
        lambda m: f"摄像机 {m[1]} 秒内未接受连接",
    ),
    (
        re.compile(rf"no answer to {_METHOD} within {_NUMBER} s"),
        lambda m: f"{_method_zh(m[1])} {m[2]} 秒内无应答",
    ),
    (re.compile(rf"no video RTP for {_NUMBER} s"), lambda m: f"{m[1]} 秒未收到视频 RTP"),
    (re.compile(rf"no RTP for {_NUMBER} s"), lambda m: f"{m[1]} 秒未收到 RTP"),
    (re.compile(rf"no packet for {_NUMBER} s"), lambda m: f"{m[1]} 秒未收到数据"),
    (re.compile(rf"no packet within {_NUMBER} s"), lambda m: f"{m[1]} 秒内未收到数据"),
    (re.compile(rf"not connected within {_NUMBER} s"), lambda m: f"{m[1]} 秒内未连接成功"),
    (
        re.compile(r"the WHEP server failed with a server error \((\d+)\)"),
        lambda m: f"WHEP 服务器出现服务器错误（{m[1]}）",
    ),
    (
        re.compile(r"the WHEP server answered the offer with (\d+)"),
        lambda m: f"WHEP 服务器对 SDP 提议应答 {m[1]}",
    ),
    (
        re.compile(rf"no answer to the WHEP offer within {_NUMBER} s"),
        lambda m: f"WHEP 提议 {m[1]} 秒内无应答",
    ),
    (re.compile(r"writing failed \((.*)\)"), lambda m: f"写入失败（{m[1]}）"),
    (re.compile(r"internal error: (\w+)"), lambda m: f"内部错误：{m[1]}"),
]


def reason_zh(reason: str) -> str:
    """The Chinese for one of the media plane's fixed English reasons."""
    known = _REASONS.get(reason)
    if known is not None:
        return known
    for pattern, render in _PATTERNS:
        match = pattern.fullmatch(reason)
        if match:
            return render(match).strip()
    return f"故障（{reason}）"


def translated(reason: str) -> bool:
    """Whether :func:`reason_zh` knows ``reason`` (tests walk every reason through this)."""
    return reason in _REASONS or any(p.fullmatch(reason) for p, _ in _PATTERNS)


_KIND_EN = {
    "offline": "camera offline",
    "stalled": "camera stalled",
    "recording_failed": "recording stopped",
    "dark": "picture too dark",
    "overexposed": "picture overexposed",
    "covered": "lens covered",
    "blurred": "picture blurred",
    "frozen": "picture frozen",
    "moved": "camera moved or scene changed",
    "colour_cast": "picture colour cast",
    "noisy": "picture noisy",
}
_KIND_ZH = {
    "offline": "摄像机离线",
    "stalled": "摄像机卡顿",
    "recording_failed": "录像中断",
    "dark": "画面过暗",
    "overexposed": "画面过曝",
    "covered": "镜头被遮挡",
    "blurred": "画面模糊",
    "frozen": "画面冻结",
    "moved": "摄像机移位或场景变化",
    "colour_cast": "画面偏色",
    "noisy": "画面噪点过多",
}
PICTURE_KINDS = ("dark", "overexposed", "covered", "blurred", "frozen", "moved", "colour_cast", "noisy")
"""Alarm kinds of the picture diagnosis, one per :class:`~streams.analysis.Condition`."""


def _duration_en(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _duration_zh(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} 秒"
    if seconds < 7200:
        return f"{seconds / 60:.0f} 分钟"
    return f"{seconds / 3600:.1f} 小时"


def describe(
    kind: str,
    reason: str | None = None,
    *,
    seconds: float | None = None,
    deleted: int | None = None,
    cleared: str | None = None,
) -> dict[str, str]:
    """The alarm's text by language (:data:`LANGUAGES`). ``reason``: the media plane's fixed
    text; ``seconds``: how long the trouble an informational event ends lasted; ``deleted``:
    segments deleted for space; ``cleared``: the picture alarm kind a ``picture_ok`` ends."""
    if kind == "online":
        return {
            "zh-CN": f"摄像机恢复在线，中断 {_duration_zh(seconds or 0)}",
            "en": f"camera back online after {_duration_en(seconds or 0)}",
        }
    if kind == "recording_resumed":
        return {
            "zh-CN": f"录像已恢复，中断 {_duration_zh(seconds or 0)}",
            "en": f"recording again after {_duration_en(seconds or 0)}",
        }
    if kind == "picture_ok":
        zh, en = _KIND_ZH.get(cleared or "", "画面异常"), _KIND_EN.get(cleared or "", "picture fault")
        return {
            "zh-CN": f"{zh}已恢复正常，持续 {_duration_zh(seconds or 0)}",
            "en": f"{en} gone after {_duration_en(seconds or 0)}",
        }
    if kind == "recording_space":
        return {
            "zh-CN": f"录像空间达到上限：提前删除了 {deleted or 0} 个最早的录像片段",
            "en": f"disk limit reached: {deleted or 0} oldest segments deleted before their retention",
        }
    en, zh = _KIND_EN.get(kind, kind), _KIND_ZH.get(kind, kind)
    if reason:
        return {"zh-CN": f"{zh}：{reason_zh(reason)}", "en": f"{en}: {reason}"}
    return {"zh-CN": zh, "en": en}


def short(text: str) -> str:
    """One line, no URL, at most :data:`MESSAGE_CHARS` characters."""
    cleaned = " ".join(_URL.sub("", text).split())
    return cleaned if len(cleaned) <= MESSAGE_CHARS else cleaned[: MESSAGE_CHARS - 1] + "…"


def short_texts(kind: str, error: str | None) -> dict[str, str]:
    """Both languages' texts of an alarm with a media-plane reason, each one short line.

    ``error`` is the media plane's own fixed text for the failure, never the camera's
    words (a camera can echo its login in a reason phrase); URLs are stripped all the same."""
    return {language: short(text) for language, text in describe(kind, error).items()}


def alarm_message(kind: str, error: str | None) -> str:
    """The short English text of an alarm with a media-plane reason."""
    return short_texts(kind, error)["en"]
