"""Rate limits and back-off in Redis (mailer_app/mail/throttle.py), on a real Redis.

Grant times are Redis's own clock at the moment a grant was counted (`Decision.at`),
so "never more than R in any second" is checked exactly, free of thread-scheduling
noise; the local clock seen by the caller is checked too, with a small tolerance.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest
import redis

from jobs.connection import redis_from_url
from mailer_app.mail.throttle import (
    UNAVAILABLE_WAIT,
    Limit,
    Throttle,
    destination_key,
    sender_key,
    sender_limits,
)
from tests.conftest import ROOT, free_port, wait_for_port

RATE = 10  # per second, for the hammering tests
RUN_FOR = 1.5  # seconds each hammering test runs (a full second and a half)


def hammer(url: str, key: str, rate: int, seconds: float, threads: int) -> dict:
    """`threads` workers asking one limiter of `rate`/s for `seconds`, each sleeping the
    wait it is told. Returns grant times (Redis clock and local clock) and call counts."""
    throttle = Throttle(redis_from_url(url))
    checks = {key: [Limit(rate, 1.0)]}
    grants: list[float] = []
    seen: list[float] = []
    calls = [0]
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work() -> None:
        try:
            while time.monotonic() < stop:
                decision = throttle.decide(checks)
                with lock:
                    calls[0] += 1
                    if decision.granted:
                        grants.append(decision.at)
                        seen.append(time.time())
                if not decision.granted:
                    time.sleep(min(decision.wait, max(0.0, stop - time.monotonic())))
        except BaseException as exc:  # reported to the test, which fails on it
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 10)
    return {"grants": grants, "seen": seen, "calls": calls[0], "errors": [repr(e) for e in errors]}


def most_in_any_window(times: list[float], window: float = 1.0, tolerance: float = 0.0) -> int:
    """The most of `times` inside any half-open window [t, t + window - tolerance)."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window - tolerance:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_many_threads_never_exceed_the_rate_in_any_second(redis_url):
    result = hammer(redis_url, "sender:1", RATE, RUN_FOR, threads=8)

    assert result["errors"] == []
    grants = result["grants"]
    assert most_in_any_window(grants) == RATE  # full use of the limit, never more
    assert most_in_any_window(result["seen"], tolerance=0.05) <= RATE
    # The window slides: about RATE at the start and RATE more each second after.
    assert 2 * RATE <= len(grants) <= 3 * RATE
    # Workers sleep the wait they are told instead of spinning: at most one wasted
    # call per thread for each slot that frees (all wake when it does).
    assert result["calls"] <= (len(grants) + 1) * 8


def test_two_processes_share_one_limit(redis_url):
    """This test's process and a second one, three threads each, on one limit."""
    code = (
        "import json, sys\n"
        "from tests.integration.test_throttle import hammer\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        f"print(json.dumps(hammer({redis_url!r}, 'esp:gmail', {RATE}, {RUN_FOR}, threads=3)))\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "ready"
        other.stdin.write("go\n")
        other.stdin.flush()
        results = [hammer(redis_url, "esp:gmail", RATE, RUN_FOR, threads=3)]
        results.append(json.loads(other.communicate(timeout=30)[0]))
    finally:
        if other.poll() is None:
            other.kill()
            other.wait(timeout=5)

    assert [r["errors"] for r in results] == [[], []]
    grants = results[0]["grants"] + results[1]["grants"]
    assert all(r["grants"] for r in results), "both processes got a share"
    assert most_in_any_window(grants) == RATE
    assert 2 * RATE <= len(grants) <= 3 * RATE


def test_limits_are_per_key_and_a_refusal_counts_nothing(redis_url):
    throttle = Throttle(redis.Redis.from_url(redis_url))
    account = sender_key(1)
    gmail, other = destination_key("a@googlemail.com"), destination_key("b@example.org")
    assert (gmail, other) == ("esp:gmail", "domain:example.org")
    assert destination_key("GMAIL.com.") == gmail
    account_limits = sender_limits(per_second=3, per_minute=5)
    domain_limits = [Limit(2, 1.0)]

    # Two to gmail: the gmail limit is then full; the account still has room.
    for _ in range(2):
        assert throttle.acquire({account: account_limits, gmail: domain_limits}) == 0
    wait = throttle.acquire({account: account_limits, gmail: domain_limits})
    assert 0.9 < wait <= 1.0
    # That refusal took nothing from the account: one more to another domain passes,
    # and the account's per-second limit (3) is what stops the next one.
    assert throttle.acquire({account: account_limits, other: domain_limits}) == 0
    assert 0.9 < throttle.acquire({account: account_limits, other: domain_limits}) <= 1.0
    # Another sender account is not held back by the first one's count.
    assert throttle.acquire({sender_key(2): account_limits, other: domain_limits}) == 0

    # Sleep exactly the wait named: then the per-second window has room again, and
    # the per-minute limit (5) stops the account after two more.
    time.sleep(throttle.acquire({account: account_limits}))
    assert throttle.acquire({account: account_limits}, n=2) == 0
    assert 58 < throttle.acquire({account: account_limits}) <= 60
    # Taking more at once than a limit allows can never succeed: refused plainly.
    with pytest.raises(ValueError, match="cannot take 4 at once"):
        throttle.acquire({sender_key(3): account_limits}, n=4)


def test_sender_limits_from_account_settings():
    assert sender_limits() == ()
    assert sender_limits(per_second=0, per_minute=None, per_hour=0) == ()
    assert sender_limits(per_second=5.0, per_hour=1000) == (Limit(5, 1.0), Limit(1000, 3600.0))
    assert sender_limits(per_second=0.5) == (Limit(1, 2.0),)
    assert sender_limits(per_second=2.5) == (Limit(1, 0.4),)


def redis_now(throttle: Throttle) -> float:
    seconds, micros = throttle.client.time()
    return seconds + micros / 1e6


def test_back_off_grows_is_jittered_and_capped(redis_url):
    throttle = Throttle(
        redis.Redis.from_url(redis_url), backoff_base=30, backoff_cap=1800, backoff_floor=1
    )
    means = []
    for attempt in range(8):
        ceiling = min(1800, 30 * 2**attempt)
        delays = []
        for _ in range(15):
            throttle.clear("domain:example.org")
            until = throttle.back_off("domain:example.org", attempt)
            delays.append(until - redis_now(throttle))
            assert throttle.blocked_until("domain:example.org") == pytest.approx(until)
        assert all(0.9 <= d <= ceiling for d in delays), (attempt, delays)
        assert max(delays) - min(delays) > 0.3 * ceiling, f"not jittered: {delays}"
        means.append(sum(delays) / len(delays))
    assert means[6] > 4 * means[0] and means[7] <= 1800

    # Without an attempt number the key's own streak counts up (shared by workers),
    # and a new back-off never shortens a longer one already in place.
    throttle.clear("sender:7")
    untils = [throttle.back_off("sender:7") for _ in range(6)]
    assert untils == sorted(untils)
    assert untils[-1] - redis_now(throttle) <= 30 * 2**5
    streak = throttle.client.get("throttle:sender:7:streak")
    assert int(streak) == 6
    throttle.clear("sender:7")
    assert throttle.blocked_until("sender:7") is None
    assert throttle.acquire({"sender:7": []}) == 0


def test_back_off_holds_acquire_then_expires(redis_url):
    throttle = Throttle(
        redis.Redis.from_url(redis_url), backoff_base=0.4, backoff_cap=0.4, backoff_floor=0.3
    )
    account, domain = sender_key(1), destination_key("x@outlook.com")
    until = throttle.back_off(domain)  # attempt 0 of the domain's streak
    assert 0.3 <= until - redis_now(throttle) <= 0.4

    # A message to that domain waits out the back-off; the account is not charged.
    wait = throttle.acquire({account: [Limit(1, 60.0)], domain: []})
    assert 0.2 < wait <= 0.4
    assert throttle.acquire({account: [Limit(1, 60.0)], destination_key("y@gmail.com"): []}) == 0

    # Both the block and its Redis keys expire by themselves.
    assert 0 < throttle.client.pttl("throttle:esp:outlook:blocked") <= 401
    assert throttle.client.pttl("throttle:esp:outlook:streak") > 0
    time.sleep(max(0.0, until - redis_now(throttle)) + 0.01)
    assert throttle.blocked_until(domain) is None
    assert throttle.acquire({domain: []}) == 0
    time.sleep(0.45)
    assert throttle.client.exists("throttle:esp:outlook:blocked") == 0
    assert throttle.client.exists("throttle:esp:outlook:streak") == 0


def test_acquire_within_sleeps_the_wait_and_stays_bounded(redis_url):
    throttle = Throttle(redis.Redis.from_url(redis_url))
    checks = {sender_key(1): [Limit(1, 0.3)]}
    assert throttle.acquire(checks) == 0
    started = time.monotonic()
    assert throttle.acquire_within(checks, max_wait=1.0) == 0
    assert 0.25 < time.monotonic() - started < 0.6
    # A wait longer than allowed is handed back at once, for the caller to reschedule.
    throttle.back_off(sender_key(1), 0)  # at least 1 s (the floor)
    started = time.monotonic()
    assert throttle.acquire_within(checks, max_wait=0.2) >= 0.9
    assert time.monotonic() - started < 0.1


def test_flushall_mid_way_keeps_the_limiter_working(redis_url):
    result: dict = {}
    runner = threading.Thread(
        target=lambda: result.update(hammer(redis_url, "sender:1", RATE, RUN_FOR, threads=4))
    )
    runner.start()
    time.sleep(RUN_FOR / 2)
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    client.script_flush()  # as a restarted server would: the script is gone too
    flushed_at = redis_now(Throttle(client))
    runner.join(timeout=RUN_FOR + 10)

    assert result["errors"] == []
    after = [g for g in result["grants"] if g > flushed_at]
    assert len(after) >= RATE // 2, "grants went on after the flush"
    assert most_in_any_window(after) <= RATE  # the rebuilt windows hold the limit
    assert client.script_exists(Throttle(client)._acquire.sha) == [True]


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server this test may kill and start again on the same port."""
    exe = shutil.which("redis-server")
    port = free_port()
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [
                    exe,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        )
        wait_for_port(port)

    def stop() -> None:
        procs[-1].kill()
        procs[-1].wait(timeout=10)

    start()
    yield f"redis://127.0.0.1:{port}/0", start, stop
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_redis_restarted_without_its_data(own_redis):
    url, start, stop = own_redis
    throttle = Throttle(redis_from_url(url), backoff_floor=0.5)
    checks = {sender_key(1): [Limit(2, 60.0)]}
    assert throttle.acquire(checks) == 0
    assert throttle.acquire(checks) == 0
    assert throttle.acquire(checks) > 50

    stop()
    # Redis is down: no crash, and never a "go": wait and ask again.
    assert throttle.acquire(checks) == UNAVAILABLE_WAIT
    assert throttle.back_off(sender_key(1), 0) > time.time()

    start()  # an empty server: no counts, no script
    assert throttle.acquire(checks) == 0
    assert throttle.acquire(checks) == 0
    assert throttle.acquire(checks) > 50  # the limit holds again on the rebuilt state
