"""Codec bitstreams: H.264 and H.265 NAL units, parameter sets, and the bit reader under them."""
