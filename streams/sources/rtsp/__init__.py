"""Pulling cameras over RTSP: the session, its authentication, SDP, and RTP depacketizing."""
