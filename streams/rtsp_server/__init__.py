"""RTSP re-serve: the relay's cameras to RTSP clients (VLC, FFmpeg, NVRs, other platforms).

:class:`~streams.rtsp_server.server.RtspServer` serves the hubs of a
:class:`~streams.manager.StreamManager` over RTSP, TCP interleaved or UDP, with
Digest authentication judged by the control plane through an
:data:`~streams.rtsp_server.access.Authorizer`.
"""

from streams.rtsp_server.access import AccessRequest, Authorizer, RtspViewing, Verdict
from streams.rtsp_server.digest import REALM, DigestCredentials, ha1
from streams.rtsp_server.server import RtspServer, RtspSettings

__all__ = [
    "REALM",
    "AccessRequest",
    "Authorizer",
    "DigestCredentials",
    "RtspServer",
    "RtspSettings",
    "RtspViewing",
    "Verdict",
    "ha1",
]
