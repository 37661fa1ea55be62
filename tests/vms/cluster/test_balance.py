"""The balancing rules, played out over many rounds: they converge to counts within one of
each other and then never move a camera again."""

from __future__ import annotations

import itertools
import random

import pytest

from vms.cluster.balance import handovers, target, to_take


def test_the_target_spreads_cameras_as_evenly_as_whole_numbers_allow() -> None:
    assert target(12, 3) == 4
    assert target(13, 3) == 5
    assert target(48, 1) == 48
    assert target(5, 0) == 5


def test_free_leases_are_taken_up_to_the_target_only() -> None:
    assert to_take(mine=0, cameras=12, instances=3, free=12) == 4
    assert to_take(mine=3, cameras=12, instances=3, free=12) == 1
    assert to_take(mine=4, cameras=12, instances=2, free=1) == 1  # at most what is free
    assert to_take(mine=6, cameras=12, instances=3, free=4) == 0


def test_a_camera_moves_only_when_the_imbalance_exceeds_one() -> None:
    assert handovers("a", {"a": 5, "b": 4, "c": 4}, max_moves=4) == []  # 13 cameras: settled
    assert handovers("a", {"a": 5, "b": 5, "c": 3}, max_moves=4) == ["c"]
    assert handovers("a", {"a": 12, "b": 0}, max_moves=4) == ["b"] * 4  # rate-limited
    assert handovers("a", {"a": 6, "b": 0, "c": 1}, max_moves=9) == ["b", "b", "c"]
    assert handovers("b", {"a": 3, "b": 4, "c": 3}, max_moves=4) == []


def play(counts: dict[str, int], max_moves: int, rounds: int, seed: int) -> list[int]:
    """Rounds where every instance, in a random order, hands over what the rules say;
    the number of moves in each round."""
    rng = random.Random(seed)
    moves = []
    for _ in range(rounds):
        moved = 0
        for me in rng.sample(sorted(counts), len(counts)):
            for receiver in handovers(me, counts, max_moves):
                counts[me] -= 1
                counts[receiver] += 1
                moved += 1
        moves.append(moved)
    return moves


@pytest.mark.parametrize(
    ("cameras", "instances", "max_moves"), list(itertools.product([12, 13, 48], [2, 3, 5], [1, 4]))
)
def test_joining_instances_settle_and_then_never_flap(cameras: int, instances: int, max_moves: int) -> None:
    counts = {"first": cameras} | {f"joined-{i}": 0 for i in range(instances - 1)}
    moves = play(counts, max_moves, rounds=60, seed=cameras * instances)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sum(counts.values()) == cameras
    settled = moves.index(0)
    assert all(m == 0 for m in moves[settled:])
    assert sum(moves) == cameras - counts["first"]  # only the first gave: no camera moved twice
