"""Decode times for streams with B-frames, derived without looking ahead."""

from __future__ import annotations

from streams.hub import Hub
from streams.packets import MediaPacket
from streams.reorder import DecodeClock
from tests.media import encode_h264, encode_h264_bframes

FRAME = 3600  # 25 fps in 90 kHz ticks


def packets(order: list[int], keyframes: set[int]) -> list[MediaPacket]:
    return [MediaPacket(data=b"", pts=n * FRAME, keyframe=n in keyframes) for n in order]


def test_in_order_streams_get_no_decode_times() -> None:
    clock = DecodeClock()
    stamped = [clock.stamp(p) for p in packets(list(range(10)), {0, 5})]
    assert not clock.reorders
    assert all(p.dts is None and p.decode_ts == p.pts for p in stamped)


def test_ibbp_gets_the_decode_times_an_encoder_would_write() -> None:
    clock = DecodeClock(may_reorder=True)
    order = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 10, 13, 11, 12]
    stamped = [clock.stamp(p) for p in packets(order, {0, 10})]
    assert clock.reorders  # frames really came out of order
    ticks = [p.dts // FRAME for p in stamped if p.dts is not None]
    assert ticks == [-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    for packet in stamped:
        assert packet.decode_ts <= packet.pts
    times = [p.decode_ts for p in stamped]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_a_two_level_pyramid_fits_the_default_allowance() -> None:
    clock = DecodeClock(may_reorder=True)
    order = [0, 4, 2, 1, 3, 8, 6, 5, 7, 12, 10, 9, 11]
    stamped = [clock.stamp(p) for p in packets(order, {0})]
    assert all(p.decode_ts <= p.pts for p in stamped)
    times = [p.decode_ts for p in stamped]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_a_stream_that_may_reorder_but_does_not_runs_two_frames_behind() -> None:
    clock = DecodeClock(may_reorder=True)
    stamped = [clock.stamp(p) for p in packets(list(range(12)), {0, 6})]
    assert not clock.reorders
    assert [(p.pts - p.decode_ts) // FRAME for p in stamped] == [2] * 12


def test_reordering_in_a_stream_that_should_not_is_noticed_and_stamped_from_the_next_keyframe() -> None:
    clock = DecodeClock(may_reorder=False)
    order = [0, 3, 1, 2, 6, 4, 5, 7, 10, 8, 9]
    first_gop = [clock.stamp(p) for p in packets(order[:7], {0})]
    assert clock.reorders
    assert first_gop[0].dts is None
    second_gop = [clock.stamp(p) for p in packets(order[7:], {7})]
    assert all(p.decode_ts <= p.pts for p in second_gop)
    times = [p.decode_ts for p in second_gop]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_the_hub_stamps_real_b_frames_and_leaves_other_streams_alone() -> None:
    plain, reordered = Hub("plain"), Hub("reordered")
    seen: dict[str, list[MediaPacket]] = {"plain": [], "reordered": []}
    subs = {"plain": plain.subscribe(), "reordered": reordered.subscribe()}
    for packet in encode_h264(30):
        plain.publish(packet)
    for packet in encode_h264_bframes(30):
        reordered.publish(packet)
    for name, sub in subs.items():
        while (packet := sub.get_nowait()) is not None:
            seen[name].append(packet)
    # Constrained Baseline cannot reorder: its packets are left as they are.
    assert not plain.reorders and all(p.dts is None for p in seen["plain"])
    assert reordered.reorders
    # High profile may reorder: stamped from the very first keyframe.
    times = [p.decode_ts for p in seen["reordered"]]
    assert seen["reordered"][0].keyframe and seen["reordered"][0].dts is not None
    assert times == sorted(times) and all(p.decode_ts <= p.pts for p in seen["reordered"])
