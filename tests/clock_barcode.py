"""A wall clock burnt into a picture as a barcode, written by the test camera and read back.

The test RTSP server's ``clock`` cameras draw, at the top-left of every frame,
the Unix time in milliseconds at which the frame was made: 48 bits, most
significant first, in two rows of 24 blocks of 16×16 luma pixels starting at
(0, 0), luma 235 for a one and 16 for a zero. Reading it back from a decoded
picture gives the glass-to-glass latency of everything in between.

- :func:`barcode_rows` draws it (used by ``gst_rtsp_server.py`` under the
  system Python, which may lack numpy: plain bytes only here);
- :func:`read_clock` reads it from a decoded luma plane (a numpy array from
  PyAV's ``frame.to_ndarray()`` or plain bytes);
- :data:`READ_CLOCK_JS` reads it in a browser from a ``<video>`` element
  (Playwright: ``await page.evaluate(READ_CLOCK_JS, element_handle)``, or
  ``locator.evaluate(READ_CLOCK_JS)``).

Pure functions, any thread.
"""

from __future__ import annotations

BITS = 48
COLUMNS = 24
ROWS = 2
BLOCK = 16
"""Each bit is a BLOCK×BLOCK square of luma pixels."""
WIDTH = COLUMNS * BLOCK
"""Width of the barcode in pixels (384)."""
HEIGHT = ROWS * BLOCK
"""Height of the barcode in pixels (32)."""
ONE = 235
ZERO = 16

_EARLIEST_MS = 946_684_800_000
"""2000-01-01: a read value before this is not a clock."""
_LATEST_MS = 4_102_444_800_000
"""2100-01-01."""
_MARGIN = 4
"""Pixels left out at each edge of a block when averaging (compression blurs edges)."""
_LOW, _HIGH = 80, 170
"""A block whose mean luma lies between these is neither one nor zero: no barcode."""


def barcode_rows(ms: int) -> list[bytes]:
    """The barcode of ``ms`` as HEIGHT rows of WIDTH luma bytes."""
    if not 0 <= ms < 1 << BITS:
        raise ValueError(f"{ms} does not fit in {BITS} bits")
    rows = []
    for row in range(ROWS):
        line = b"".join(
            bytes([ONE if ms >> (BITS - 1 - (row * COLUMNS + col)) & 1 else ZERO]) * BLOCK
            for col in range(COLUMNS)
        )
        rows += [line] * BLOCK
    return rows


def read_clock(luma: object, width: int) -> int | None:
    """The milliseconds in the barcode of a luma plane, or None when there is no plausible one.

    ``luma`` is a C-contiguous buffer of 8-bit luma, ``width`` bytes a row: a 2-D
    numpy array (``frame.to_ndarray()`` of a yuv420p frame, or its Y part), bytes,
    or a bytearray. A picture narrower than the barcode has none.
    """
    if width < WIDTH:
        return None
    plane = memoryview(luma).cast("B")  # type: ignore[arg-type]
    if len(plane) < width * HEIGHT:
        return None
    value = 0
    for bit in range(BITS):
        row, col = divmod(bit, COLUMNS)
        x0, y0 = col * BLOCK + _MARGIN, row * BLOCK + _MARGIN
        span = BLOCK - 2 * _MARGIN
        total = sum(sum(plane[y * width + x0 : y * width + x0 + span]) for y in range(y0, y0 + span))
        mean = total / (span * span)
        if _LOW < mean < _HIGH:
            return None
        value = value << 1 | (mean >= _HIGH)
    return value if _EARLIEST_MS <= value <= _LATEST_MS else None


READ_CLOCK_JS = f"""(video) => {{
  if (!video || video.readyState < 2 || video.videoWidth < {WIDTH} || video.videoHeight < {HEIGHT}) {{
    return null;
  }}
  const canvas = document.createElement("canvas");
  canvas.width = {WIDTH};
  canvas.height = {HEIGHT};
  const context = canvas.getContext("2d", {{ willReadFrequently: true }});
  context.drawImage(video, 0, 0, {WIDTH}, {HEIGHT}, 0, 0, {WIDTH}, {HEIGHT});
  const pixels = context.getImageData(0, 0, {WIDTH}, {HEIGHT}).data;
  const span = {BLOCK} - 2 * {_MARGIN};
  let value = 0;
  for (let bit = 0; bit < {BITS}; bit++) {{
    const row = Math.floor(bit / {COLUMNS});
    const col = bit % {COLUMNS};
    let total = 0;
    for (let y = row * {BLOCK} + {_MARGIN}; y < row * {BLOCK} + {_MARGIN} + span; y++) {{
      for (let x = col * {BLOCK} + {_MARGIN}; x < col * {BLOCK} + {_MARGIN} + span; x++) {{
        const i = (y * {WIDTH} + x) * 4;
        total += 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
      }}
    }}
    // The browser shows video-range luma (16..235) as full-range RGB (0..255).
    const luma = {ZERO} + (total / (span * span)) * ({ONE} - {ZERO}) / 255;
    if (luma > {_LOW} && luma < {_HIGH}) {{
      return null;
    }}
    value = value * 2 + (luma >= {_HIGH} ? 1 : 0);  // not <<: JavaScript shifts are 32-bit
  }}
  return value >= {_EARLIEST_MS} && value <= {_LATEST_MS} ? value : null;
}}"""
"""JavaScript arrow function ``(video) => number | null``: the clock of the picture a
``<video>`` element shows now, read as :func:`read_clock` does."""
