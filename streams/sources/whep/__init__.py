"""Pulling another service's WebRTC egress over WHEP: signalling, the receiver tap, the source."""
