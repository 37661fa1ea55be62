"""The login limiter keeps every active lockout whatever an attacker feeds it: fresh
usernames from fresh addresses cannot flush a locked account or address, nor the
failures already counted against a real account, and memory stays bounded."""

from __future__ import annotations

import pytest

from tests.vms.auth_fixtures import PASSWORD, serve_access
from vms.config_access import AuthSettings
from vms.config_loader import load_config
from vms.login_limiter import LoginLimiter
from vms.storage import Database

LOGIN = "/api/v1/auth/login"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, *, max_keys: int = 10_000, slots: int = 64) -> LoginLimiter:
    return LoginLimiter(
        max_failures=5,
        window=900,
        lockout_seconds=900,
        max_keys=max_keys,
        overflow_slots=slots,
        clock=clock,
    )


def test_fresh_names_from_fresh_addresses_do_not_flush_a_lockout() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(5):
        limits.record_failure("admin-meizhou", "198.51.100.7", known_user=True)
    assert limits.retry_after("admin-meizhou", "192.0.2.1") == 900
    for i in range(5000):  # the flood of the issue: 10,000 fresh keys
        clock.now += 0.01
        limits.record_failure(f"nobody-{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert limits.retry_after("admin-meizhou", "192.0.2.1") == pytest.approx(850, abs=1)
    assert limits.retry_after("someone", "198.51.100.7") == pytest.approx(850, abs=1)
    assert len(limits) <= 10_000


def test_counted_failures_of_a_real_account_are_never_evicted() -> None:
    clock = Clock()
    limits = limiter(clock, max_keys=50)
    for _ in range(4):  # one guess short of the lockout
        limits.record_failure("alice", "198.51.100.7", known_user=True)
    for i in range(500):
        limits.record_failure(f"nobody-{i}", f"10.0.{i // 256}.{i % 256}")
    assert len(limits) <= 50
    limits.record_failure("alice", "203.0.113.9", known_user=True)
    assert limits.retry_after("alice", None) == 900


def test_when_every_entry_is_locked_new_keys_share_coarse_buckets() -> None:
    clock = Clock()
    limits = limiter(clock, max_keys=20, slots=8)
    for u in range(20):
        for _ in range(5):
            limits.record_failure(f"user-{u}", None)
    # Every entry holds an active lockout now; none was evicted.
    assert len(limits) == 20
    assert all(limits.retry_after(f"user-{u}", None) == 900 for u in range(20))
    # An untracked username and address still get at most max_failures before they are
    # refused (sooner when their bucket is shared with another untracked key).
    guesses = 0
    while limits.retry_after("alice", "192.0.2.50") == 0:
        assert guesses < 5
        limits.record_failure("alice", "192.0.2.50", known_user=True)
        guesses += 1
    assert 1 <= guesses <= 5
    assert len(limits) == 20
    # Once the lockouts end, keys are tracked one by one again.
    clock.now += 901
    assert limits.retry_after("user-3", None) == 0
    limits.record_failure("bob", "192.0.2.51")
    assert limits.retry_after("bob", "192.0.2.51") == 0
    assert len(limits) == 2


def test_a_locked_key_is_not_extended_by_late_failures() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(5):
        limits.record_failure("alice", None)
    clock.now = 100
    for _ in range(10):  # checks that were already running when the lockout began
        limits.record_failure("alice", None)
    assert limits.retry_after("alice", None) == 800


async def test_the_login_route_keeps_a_lockout_through_a_flood(database: Database) -> None:
    async with serve_access(database) as app:
        await app.add_user("admin-x", "admin")
        # A small table, so the flood is short: the real limiter class, sized down.
        app.auth.limiter = LoginLimiter(
            max_failures=5, window=900, lockout_seconds=900, max_keys=12, overflow_slots=64
        )
        async with app.client("127.0.0.2") as attacker:
            for _ in range(5):
                answer = await attacker.post(LOGIN, json={"username": "admin-x", "password": "guess"})
                assert answer.status_code == 401
        for i in range(8):  # fresh names from fresh addresses: 16 keys > 12
            async with app.client(f"127.0.1.{i + 1}") as other:
                answer = await other.post(LOGIN, json={"username": f"nobody-{i}", "password": "guess"})
                assert answer.status_code == 401
        async with app.client("127.0.2.1") as elsewhere:
            answer = await elsewhere.post(LOGIN, json={"username": "admin-x", "password": PASSWORD})
            assert answer.status_code == 429
            assert int(answer.headers["retry-after"]) > 800


def test_the_embedded_default_states_the_auth_defaults() -> None:
    assert load_config(None).auth == AuthSettings()
