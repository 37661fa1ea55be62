"""Transcoding on demand: H.265 to H.264 and AAC to Opus, once per stream while watched."""
