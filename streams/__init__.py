"""Hallwatch's media plane: sources, ingest, hubs and outputs. Knows nothing of HTTP or users.

The control plane uses only the names exported here.
"""

from streams.analysis import Condition, Thresholds
from streams.analysis.output import AnalysisOutput, PictureCleared, PictureRaised
from streams.digest import authorization as digest_authorization
from streams.digest import parse_header as parse_auth_header
from streams.errors import (
    CapacityError,
    NegotiationError,
    OwnerCapacityError,
    SourceAuthError,
    SourceError,
    SourceProtocolError,
    SourceUnreachable,
    StreamError,
    UnsupportedCodec,
    WrongOutput,
)
from streams.ingest import IngestPolicy, IngestState
from streams.manager import StreamManager, UnknownCamera
from streams.outputs.mse import MseFragment, MseInit, MseSession
from streams.outputs.pictures import MJPEG_BOUNDARY, NoPicture, mjpeg_part
from streams.outputs.ps_playback import PsPlayback
from streams.outputs.ps_sender import DEFAULT_RTCP_TIMEOUT, PsOutput, PsSender, PsSession
from streams.recording import (
    ExportError,
    ExportResult,
    RecordingFailed,
    RecordingResumed,
    SegmentClosed,
    SegmentInfo,
    SegmentOpened,
    export_range,
    recover,
)
from streams.recording.packets import RecordedPacket, recorded_packets
from streams.recording.playback import (
    PlaybackInit,
    PlaybackItem,
    PlaybackJump,
    PlaybackMedia,
    PlaybackStop,
    PlaybackWait,
    SourceSegment,
    play,
)
from streams.recording.segment_file import recorded_end
from streams.redact import redact_url
from streams.rtsp_server import RtspServer, RtspSettings
from streams.sources import SourceOptions, supported_schemes
from streams.sources import check_url as check_source_url
from streams.specs import (
    AnalysisSpec,
    CameraSpec,
    CameraStats,
    IceServer,
    RecordingSpec,
    RelaySettings,
    StreamName,
    SubStreamStats,
    TranscodeSettings,
    UpstreamKind,
)
from streams.upstream import NOWHERE, OWN, CameraUnowned, Peer, Upstream
from streams.webrtc.output import WhepSession

__all__ = [
    "DEFAULT_RTCP_TIMEOUT",
    "MJPEG_BOUNDARY",
    "NOWHERE",
    "OWN",
    "AnalysisOutput",
    "AnalysisSpec",
    "CameraSpec",
    "CameraStats",
    "CameraUnowned",
    "CapacityError",
    "Condition",
    "ExportError",
    "ExportResult",
    "IceServer",
    "IngestPolicy",
    "IngestState",
    "MseFragment",
    "MseInit",
    "MseSession",
    "NegotiationError",
    "NoPicture",
    "OwnerCapacityError",
    "Peer",
    "PictureCleared",
    "PictureRaised",
    "PlaybackInit",
    "PlaybackItem",
    "PlaybackJump",
    "PlaybackMedia",
    "PlaybackStop",
    "PlaybackWait",
    "PsOutput",
    "PsPlayback",
    "PsSender",
    "PsSession",
    "RecordedPacket",
    "RecordingFailed",
    "RecordingResumed",
    "RecordingSpec",
    "RelaySettings",
    "RtspServer",
    "RtspSettings",
    "SegmentClosed",
    "SegmentInfo",
    "SegmentOpened",
    "SourceAuthError",
    "SourceError",
    "SourceOptions",
    "SourceProtocolError",
    "SourceSegment",
    "SourceUnreachable",
    "StreamError",
    "StreamManager",
    "StreamName",
    "SubStreamStats",
    "Thresholds",
    "TranscodeSettings",
    "UnknownCamera",
    "UnsupportedCodec",
    "Upstream",
    "UpstreamKind",
    "WhepSession",
    "WrongOutput",
    "check_source_url",
    "digest_authorization",
    "export_range",
    "mjpeg_part",
    "parse_auth_header",
    "play",
    "recorded_end",
    "recorded_packets",
    "recover",
    "redact_url",
    "supported_schemes",
]
