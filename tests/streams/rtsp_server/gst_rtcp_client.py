"""GStreamer's ``rtspsrc`` as an independent RTSP client: play a URL, then say what its RTP
session learnt from our RTCP.

Run with the system Python that has PyGObject and GStreamer (not the project's virtualenv)::

    python3 gst_rtcp_client.py URL udp|tcp SECONDS

Plays ``URL`` (H.264 video) for SECONDS seconds, counting the access units that reach the
sink, then prints one JSON object: ``frames``, and ``senders``, the statistics
(``GstStructure`` fields of the ``RTPSource`` ``stats`` property) of every sending source
of the video's RTP session: its SSRC and whether it had a sender report, with that
report's NTP time (as Unix seconds), RTP time, packet and octet counts, and
``received_at``, this process's Unix time when the statistics were read.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

NTP_EPOCH = 2_208_988_800


def main() -> None:
    url, protocol, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"rtspsrc name=src location={url} protocols={protocol} latency=200 "
        "! rtph264depay ! h264parse ! fakesink name=sink"
    )
    managers: list[Any] = []
    frames = [0]
    pipeline.get_by_name("src").connect("new-manager", lambda _src, manager: managers.append(manager))

    def count(_pad: Any, _info: Any) -> Gst.PadProbeReturn:
        frames[0] += 1
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, count)
    loop = GLib.MainLoop()
    result: dict[str, Any] = {"frames": 0, "senders": [], "error": None}

    def finish() -> bool:
        result["frames"] = frames[0]
        if managers:
            session = managers[0].emit("get-internal-session", 0)
            for source in session.get_property("sources"):
                stats = source.get_property("stats")
                if stats.get_value("is-sender") and not stats.get_value("internal"):
                    result["senders"].append(_sender(stats))
        loop.quit()
        return False

    def on_message(_bus: Any, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.ERROR:
            result["error"] = str(message.parse_error()[0])
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int(seconds * 1000), finish)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    print(json.dumps(result))


def _sender(stats: Gst.Structure) -> dict[str, Any]:
    ntp = stats.get_value("sr-ntptime")
    return {
        "ssrc": stats.get_value("ssrc"),
        "have_sr": stats.get_value("have-sr"),
        "sr_wall": (ntp >> 32) - NTP_EPOCH + (ntp & 0xFFFFFFFF) / 2**32,
        "sr_rtptime": stats.get_value("sr-rtptime"),
        "sr_packets": stats.get_value("sr-packet-count"),
        "sr_octets": stats.get_value("sr-octet-count"),
        "packets_received": stats.get_value("packets-received"),
        "received_at": time.time(),
    }


if __name__ == "__main__":
    main()
