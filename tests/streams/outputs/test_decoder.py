"""Converting one decoded frame from several threads at once, as the analysis, the snapshots
and the MJPEG viewers of one camera do.

PyAV keeps a scaler on each frame; two threads converting the same frame through it drove
one swscale context at once, and its slice threads deadlocked on the first try.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from streams.outputs.decoder import Frame, decode_keyframe, frame_to_jpeg, to_bgr
from tests.media import encode_h264

WIDTH, HEIGHT = 640, 360
ROUNDS = 200
WIDTHS = (None, 320, 320, None, 160, 320)
"""What each thread asks for in a round: full size, or scaled down to this width."""


def decoded() -> Frame:
    """A real decoded picture: the first keyframe of a libx264 stream, decoded by PyAV."""
    return decode_keyframe(encode_h264(1, width=WIDTH, height=HEIGHT)[0])


def converted_at_once(frame: Frame) -> list[npt.NDArray[np.uint8] | None]:
    """``to_bgr`` of ``frame`` at each of :data:`WIDTHS`, each in its own thread, all released
    together; ``None`` where a thread did not finish within 10 s. Daemon threads: one stuck in
    the scaler does not hold the test process at exit."""
    results: list[npt.NDArray[np.uint8] | None] = [None] * len(WIDTHS)
    start = threading.Barrier(len(WIDTHS))

    def convert(i: int) -> None:
        start.wait()
        results[i] = to_bgr(frame, WIDTHS[i])

    threads = [threading.Thread(target=convert, args=(i,), daemon=True) for i in range(len(WIDTHS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_threads_converting_one_frame_at_once_all_finish_with_the_right_picture() -> None:
    frame = decoded()
    expected = {width: to_bgr(frame, width) for width in set(WIDTHS)}
    assert expected[None].shape == (HEIGHT, WIDTH, 3)
    assert expected[320].shape == (180, 320, 3) and expected[160].shape == (90, 160, 3)
    for round_ in range(ROUNDS):
        results = converted_at_once(frame)
        for width, image in zip(WIDTHS, results, strict=True):
            assert image is not None, f"round {round_}: a conversion to width {width} never returned"
            assert np.array_equal(image, expected[width]), f"round {round_}: width {width} differs"


def test_a_jpeg_of_a_frame_another_thread_is_converting() -> None:
    frame = decoded()
    jpegs: list[bytes] = []
    worker = threading.Thread(target=lambda: [to_bgr(frame, 320) for _ in range(ROUNDS)], daemon=True)
    worker.start()
    for _ in range(ROUNDS // 4):
        jpegs.append(frame_to_jpeg(frame, quality=80, max_width=320))
    worker.join(10)
    assert not worker.is_alive(), "the other thread's conversions never finished"
    assert len(set(jpegs)) == 1 and jpegs[0][:2] == b"\xff\xd8"
