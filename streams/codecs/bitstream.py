"""Reading parameter sets bit by bit: the parts H.264 and H.265 share.

Emulation prevention is removed first (:func:`unescape`), then :class:`BitReader`
reads fixed-width fields and Exp-Golomb codes MSB first. Any malformed input
raises :class:`BitstreamError`.

Pure code, any thread.
"""

from __future__ import annotations


class BitstreamError(ValueError):
    """A parameter set could not be parsed."""


def unescape(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


class BitReader:
    """MSB-first reader over an RBSP (emulation prevention already removed)."""

    def __init__(self, rbsp: bytes) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._size = len(rbsp) * 8
        self._pos = 0

    def bits(self, n: int) -> int:
        if self._pos + n > self._size:
            raise BitstreamError("the parameter set ends early")
        self._pos += n
        return (self._value >> (self._size - self._pos)) & ((1 << n) - 1)

    def bit(self) -> int:
        return self.bits(1)

    def skip(self, n: int) -> None:
        self.bits(n)

    def ue(self) -> int:
        """An unsigned Exp-Golomb code."""
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("bad Exp-Golomb code in the parameter set")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        """A signed Exp-Golomb code."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)
