"""The picture checks on a synthetic hall through a real H.264 round trip: healthy scenes
raise nothing, each fault raises its own condition, and the verdict keeps its delays.

Pictures are stamped :data:`STEP` seconds apart (an analysis rate of 5 pictures a second)
whatever the clip's own rate, so that a few hundred pictures span minutes."""

from __future__ import annotations

import copy
import itertools

import av
import pytest

from streams.analysis import Condition, Diagnosis, Verdict, prepare
from streams.analysis.baseline import MIN_NOISE_FLOOR
from streams.analysis.checks import motion
from streams.analysis.verdict import CLEAR_AFTER, RAISE_AFTER
from streams.sources.demo import encode_loop, parse_demo_url
from tests.rtsp_fixtures import RtspServerFactory
from tests.streams.analysis.scenes import Picture, hall_clip

STEP = 0.2
FAULT_PICTURES = int(RAISE_AFTER / STEP) + 10

EXPECTED = {
    "black": {Condition.DARK},
    "darkened": {Condition.DARK},
    "overexposed": {Condition.OVEREXPOSED},
    "blur2": {Condition.BLURRED},
    "blur4": {Condition.BLURRED},
    "covered70": {Condition.COVERED},
    "covered90": {Condition.COVERED},
    "grey_screen": {Condition.COVERED},
    "shifted": {Condition.MOVED},
    "rotated": {Condition.MOVED},
    "green": {Condition.COLOUR_CAST},
    "purple": {Condition.COLOUR_CAST},
    "snow": {Condition.NOISY},
}


def feed(diagnosis: Diagnosis, clip: list[Picture], start: float) -> list[frozenset[Condition]]:
    return [diagnosis.observe(pic, start + i * STEP) for i, pic in enumerate(clip)]


@pytest.fixture(scope="module")
def learned() -> Diagnosis:
    """A diagnosis that watched the healthy hall for 100 pictures (20 s)."""
    diagnosis = Diagnosis()
    assert not any(feed(diagnosis, hall_clip(100, seed=1), 0.0))
    assert diagnosis.baseline.ready
    return diagnosis


def test_a_healthy_hall_raises_nothing(learned: Diagnosis) -> None:
    diagnosis = copy.deepcopy(learned)
    raised = feed(diagnosis, hall_clip(300, seed=2), 20.0)
    assert not any(raised), [sorted(r) for r in raised if r]


def test_a_still_empty_hall_is_not_frozen() -> None:
    """The service analyses keyframes: each codes the sensor's fresh noise, so a still, empty
    hall still changes from one to the next (between keyframes, an encoder may code a still
    scene bit-exact, which is why pictures between keyframes are never compared)."""
    diagnosis = Diagnosis()
    raised = feed(diagnosis, hall_clip(80, seed=3, people=0, gop=1), 0.0)
    assert diagnosis.baseline.ready
    assert not any(raised), [sorted(r) for r in raised if r]


def test_switching_half_the_lamps_off_raises_nothing(learned: Diagnosis) -> None:
    diagnosis = copy.deepcopy(learned)
    raised = feed(diagnosis, hall_clip(FAULT_PICTURES, seed=2, fault="lights_dimmed"), 20.0)
    assert not any(raised), [sorted(r) for r in raised if r]


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_each_fault_raises_its_own_condition(learned: Diagnosis, fault: str) -> None:
    diagnosis = copy.deepcopy(learned)
    raised = feed(diagnosis, hall_clip(FAULT_PICTURES, seed=1, fault=fault), 20.0)
    assert raised[-1] == EXPECTED[fault]


def test_a_repeated_frame_raises_frozen(learned: Diagnosis) -> None:
    diagnosis = copy.deepcopy(learned)
    raised = feed(diagnosis, hall_clip(FAULT_PICTURES + 15, seed=1, frozen=True), 20.0)
    assert raised[-1] == {Condition.FROZEN}


def test_a_condition_raises_after_its_delay_and_clears_after_its_own() -> None:
    """Pictures every 2 s, the default delays (5 s, 10 s): a picture stands for the 2 s until
    the next, so the third dark picture raises (4 s after the first, 5 s of darkness) and the
    fifth clear picture clears."""
    verdict = Verdict()
    dark = {Condition.DARK}
    assert (RAISE_AFTER, CLEAR_AFTER) == (5.0, 10.0)
    assert verdict.update(0.0, ()) == set()
    assert verdict.update(2.0, dark) == set()
    assert verdict.update(4.0, dark) == set()
    assert verdict.update(6.0, dark) == dark
    for t in (8.0, 10.0, 12.0, 14.0):
        assert verdict.update(t, ()) == dark
    assert verdict.update(16.0, ()) == set()


def test_a_picture_stands_for_at_most_half_a_delay() -> None:
    """After a long gap one picture cannot raise or clear by itself."""
    verdict = Verdict(raise_after=2.0, clear_after=3.0)
    frozen = {Condition.FROZEN}
    verdict.update(0.0, ())
    assert verdict.update(9.0, frozen) == set()
    assert verdict.update(10.0, frozen) == frozen
    assert verdict.update(19.0, ()) == frozen
    assert verdict.update(20.5, ()) == set()


def test_a_break_restarts_the_delays() -> None:
    verdict = Verdict(raise_after=2.0, clear_after=3.0)
    frozen = {Condition.FROZEN}
    for t, present, raised in [
        (0.0, frozen, set()),
        (0.5, (), set()),  # a break: frozen starts again at 1.0
        (1.0, frozen, set()),
        (1.5, frozen, set()),
        (2.0, frozen, set()),
        (2.5, frozen, frozen),  # 1.5 s seen + 0.625 s the picture stands for
        (3.0, (), frozen),
        (3.5, frozen, frozen),  # a break in the absence: clearing starts again at 4.0
        (4.0, (), frozen),
        (5.0, (), frozen),
        (6.5, (), set()),  # 2.5 s seen + 1.25 s the picture stands for
    ]:
        assert verdict.update(t, present) == raised, t


def test_an_interruption_times_conditions_afresh() -> None:
    verdict = Verdict(raise_after=3.0, clear_after=3.0)
    dark = {Condition.DARK}
    assert verdict.update(0.0, dark) == verdict.update(1.0, dark) == set()
    verdict.interrupt()
    assert verdict.update(30.0, dark) == set(), "the dark picture before the break counts for nothing"
    assert verdict.update(31.0, dark) == set()
    assert verdict.update(32.0, dark) == dark


@pytest.mark.rtsp
def test_gstreamer_test_pattern_through_rtsp(rtsp_server: RtspServerFactory) -> None:
    """GStreamer's ``videotestsrc pattern=ball`` (x264enc) decoded from a real RTSP server: a flat
    green band over black with a small ball moving. Its only features are on the ball, too few
    for the scene check to judge a move (it declines rather than calls every wandering ball a
    moved camera); the still background coded bit-exact leaves every frame difference above
    the lowest noise floor."""
    server = rtsp_server({"cam1": "640x360@25,800k,gop=25"})
    options = {"rtsp_transport": "tcp"}
    with av.open(server.url(), options=options, timeout=5.0) as container:
        frames = container.decode(video=0)
        clip = [next(frames).to_ndarray(format="bgr24") for _ in range(60)]
    diagnosis = Diagnosis(Verdict(raise_after=1.0, clear_after=1.0))
    raised = feed(diagnosis, clip, 0.0)
    assert diagnosis.last_scores is not None and diagnosis.last_scores.in_place == 1.0
    assert not any(Condition.MOVED in r for r in raised)
    pictures = [prepare(pic) for pic in clip]
    assert min(motion(p, q) for q, p in itertools.pairwise(pictures)) > MIN_NOISE_FLOOR


def test_the_demo_test_card_raises_nothing() -> None:
    """The demo cameras' test card: colour bars with a moving ball, a clock hand and a running
    timer, whose features move by design (0.2-0.3 of the first picture's stay in place). The
    scene check judges that against the card's own usual share, not the hall's."""
    params = parse_demo_url("demo://tax-2?size=640x360&gop=5&loop_seconds=4")
    decoder = av.CodecContext.create("h264", "r")
    pictures = [
        frame.to_ndarray(format="bgr24")
        for unit, key in encode_loop(params).units
        if key
        for frame in decoder.decode(av.Packet(unit))
    ]
    diagnosis = Diagnosis(Verdict(raise_after=2.0, clear_after=2.0))
    raised = feed(diagnosis, pictures * 4, 0.0)
    assert diagnosis.baseline.ready and diagnosis.baseline.in_place < 0.5
    assert not any(raised), [sorted(r) for r in raised if r]
