"""Sending rate limits and back-off held in Redis, shared by every worker.

One `Throttle(redis_client)` per process. A worker about to send to an address asks

    wait = throttle.acquire({sender_key(account.id): sender_limits(...),
                             destination_key(address): DOMAIN_LIMITS})

and gets 0.0 when the message may go now (and it has been counted against every
key), or how many seconds to wait first (nothing counted). It then sleeps exactly
that long (`acquire_within` does the bounded sleeping) instead of spinning.

- Rate limits are sliding windows, exact: a `Limit(count, period)` never lets more
  than `count` acquisitions through in any `period`-second window, across any number
  of threads, processes and hosts. Each window is a Redis sorted set of grant times;
  the check and the counting of all keys run in one Lua script (EVALSHA), so two
  workers can never both take the last slot. Times come from Redis's clock (TIME),
  so workers with skewed clocks still agree.
- Back-off: a 421 or "too many messages" reply on a sender account (or a
  destination) calls `back_off(key)`. The key is then blocked for a random time in
  [floor, min(cap, base * 2**attempt)] ("full jitter", so many workers hit at once do
  not come back together), and `acquire` answers with the time left. Blocks and the
  attempt streak expire by themselves in Redis; a later block never shortens an
  earlier, longer one; `clear(key)` lifts it (for example after a successful send).
- Redis wiped or restarted: the script is loaded again by redis-py on NOSCRIPT and
  the windows start empty (so for one window at most, up to twice a limit can pass).
  While Redis cannot be reached, `acquire` answers `UNAVAILABLE_WAIT` (never "go")
  and `back_off` still returns its time, so a worker slows down instead of crashing.

Which limits a sender account has and which SMTP replies mean "slow down" are
decided by the sending service; this module only keeps the counts.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import redis

from mailer_app.models import Esp
from mailer_app.services.esp import canonical_esp, domain_of

log = logging.getLogger(__name__)

PREFIX = "throttle"
BACKOFF_BASE = 30.0  # seconds: the ceiling of the first back-off
BACKOFF_CAP = 30 * 60.0  # seconds: no back-off is longer
BACKOFF_FLOOR = 1.0  # seconds: a back-off is never shorter (no immediate retry)
UNAVAILABLE_WAIT = 1.0  # seconds to wait when Redis cannot be reached
MAX_ATTEMPT = 40  # 2**40 * base is far past any cap; keeps the arithmetic finite

_US = 1_000_000

# KEYS: one per check. ARGV[1] = n, ARGV[2] = a token unique to this call, then per
# key two numbers: limit and period in microseconds; limit -1 marks a back-off key
# (a string holding the blocked-until time in microseconds).
# Returns {wait_us, now_us}; wait_us == 0 means granted and counted on every window.
_ACQUIRE = """
local n = tonumber(ARGV[1])
local token = ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local period = tonumber(ARGV[2 + 2 * i])
  if limit < 0 then
    local blocked = tonumber(redis.call('GET', key) or '0')
    if blocked > now and blocked - now > wait then wait = blocked - now end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
    local count = redis.call('ZCARD', key)
    if count + n > limit then
      local idx = count + n - limit - 1
      local oldest = redis.call('ZRANGE', key, idx, idx, 'WITHSCORES')
      local free_at = tonumber(oldest[2]) + period
      if free_at - now > wait then wait = free_at - now end
    end
  end
end
if wait > 0 then return {wait, now} end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local period = tonumber(ARGV[2 + 2 * i])
  if limit >= 0 then
    for j = 1, n do redis.call('ZADD', key, now, token .. ':' .. j) end
    redis.call('PEXPIRE', key, math.ceil(period / 1000) + 1000)
  end
end
return {0, now}
"""

# KEYS[1] = blocked-until key, KEYS[2] = attempt streak key. ARGV: attempt (-1: take
# the next one from the streak), base_us, cap_us, floor_us, jitter in [0, 1).
# Returns {until_us, attempt}.
_BACK_OFF = """
local attempt = tonumber(ARGV[1])
local base, cap, floor = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local jitter = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if attempt < 0 then attempt = redis.call('INCR', KEYS[2]) - 1 end
if attempt > 40 then attempt = 40 end
local ceiling = math.min(cap, base * (2 ^ attempt))
if ceiling < floor then ceiling = floor end
local untl = now + math.floor(floor + jitter * (ceiling - floor))
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > untl then untl = current end
redis.call('SET', KEYS[1], string.format('%d', untl), 'PX', math.ceil((untl - now) / 1000) + 1)
redis.call('PEXPIRE', KEYS[2], math.ceil((untl - now + cap) / 1000))
return {untl, attempt}
"""


@dataclass(frozen=True)
class Limit:
    """At most `count` messages in any `period` seconds."""

    count: int
    period: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.period <= 0:
            raise ValueError(f"a rate limit needs a count >= 1 and a period > 0, not {self}")


@dataclass(frozen=True)
class Decision:
    """The answer of one acquire: `wait` seconds (0 = granted), `at` = Redis time then."""

    wait: float
    at: float

    @property
    def granted(self) -> bool:
        return self.wait == 0


Checks = Mapping[str, Sequence[Limit]] | Iterable[tuple[str, Sequence[Limit]]]


def sender_key(sender_account_id: int) -> str:
    """The throttle key of a sender account."""
    return f"sender:{sender_account_id}"


def destination_key(address_or_domain: str) -> str:
    """The throttle key of a destination: its canonical ESP when known, else its domain,
    so gmail.com and googlemail.com share one limit and one back-off."""
    domain = domain_of(address_or_domain) if "@" in address_or_domain else address_or_domain
    domain = domain.strip().lower().rstrip(".")
    esp = canonical_esp(domain)
    return f"esp:{esp.value}" if esp != Esp.OTHER else f"domain:{domain}"


def sender_limits(
    *, per_second: float | None = None, per_minute: int | None = None, per_hour: int | None = None
) -> tuple[Limit, ...]:
    """The limits of a sender account's rate settings; an unset (or 0) rate adds none.

    A whole per-second rate r allows r in any second; a fractional one (0.5, 2.5)
    spaces messages 1/r seconds apart, so it is never exceeded either."""
    limits: list[Limit] = []
    if per_second:
        rate = Fraction(per_second).limit_denominator(1000)
        if rate.denominator == 1:
            limits.append(Limit(int(rate), 1.0))
        else:
            limits.append(Limit(1, float(1 / rate)))
    if per_minute:
        limits.append(Limit(int(per_minute), 60.0))
    if per_hour:
        limits.append(Limit(int(per_hour), 3600.0))
    return tuple(limits)


class Throttle:
    """Rate limits and back-offs for any number of workers sharing one Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = PREFIX,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        backoff_floor: float = BACKOFF_FLOOR,
    ) -> None:
        if not 0 <= backoff_floor <= backoff_cap or backoff_base <= 0:
            raise ValueError("back-off needs 0 <= floor <= cap and a base > 0")
        self.client = client
        self.prefix = prefix
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.backoff_floor = backoff_floor
        self._acquire = client.register_script(_ACQUIRE)
        self._back_off = client.register_script(_BACK_OFF)
        self._random = secrets.SystemRandom()

    # --- Redis keys (one place, so the layout is easy to read in redis-cli) --------

    def _window_key(self, key: str, limit: Limit) -> str:
        return f"{self.prefix}:{key}:{limit.count}/{limit.period:g}s"

    def _blocked_key(self, key: str) -> str:
        return f"{self.prefix}:{key}:blocked"

    def _streak_key(self, key: str) -> str:
        return f"{self.prefix}:{key}:streak"

    # --- rate limits ----------------------------------------------------------------

    def decide(self, checks: Checks, n: int = 1) -> Decision:
        """Grant and count `n` messages on every key, or say how long to wait (nothing
        counted). Every key is also checked for a back-off, limits or not."""
        if n < 1:
            raise ValueError("n must be at least 1")
        keys: list[str] = []
        args: list[int | str] = [n, uuid.uuid4().hex]
        items = checks.items() if isinstance(checks, Mapping) else checks
        for key, limits in items:
            keys.append(self._blocked_key(key))
            args += [-1, 0]
            for limit in limits:
                if n > limit.count:
                    raise ValueError(
                        f"cannot take {n} at once under a limit of {limit.count} "
                        f"per {limit.period:g} s on {key}"
                    )
                keys.append(self._window_key(key, limit))
                args += [limit.count, round(limit.period * _US)]
        try:
            wait_us, now_us = self._acquire(keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("throttle: Redis unreachable (%s); waiting %.1f s", exc, UNAVAILABLE_WAIT)
            return Decision(wait=UNAVAILABLE_WAIT, at=time.time())
        return Decision(wait=int(wait_us) / _US, at=int(now_us) / _US)

    def acquire(self, checks: Checks, n: int = 1) -> float:
        """0.0 when `n` messages may go now (counted on every key); else the seconds
        to wait before asking again (nothing counted)."""
        return self.decide(checks, n).wait

    def acquire_within(self, checks: Checks, n: int = 1, *, max_wait: float) -> float:
        """Like `acquire`, sleeping the waits as long as they fit in `max_wait` seconds
        in all. 0.0 once granted; else the wait still ahead (the caller should put the
        work back for later rather than hold a worker that long)."""
        deadline = time.monotonic() + max_wait
        # Each round sleeps the exact wait Redis named; the round count only bounds
        # a pathological stream of waits of a few microseconds.
        for _ in range(10_000):
            wait = self.acquire(checks, n)
            left = deadline - time.monotonic()
            if wait == 0 or wait > left:
                return wait
            time.sleep(wait)
        return self.acquire(checks, n)

    # --- back-off -------------------------------------------------------------------

    def back_off(self, key: str, attempt: int | None = None) -> float:
        """Block `key` for a jittered, exponentially growing time; the Unix time it is
        blocked until. `attempt` counts from 0; None takes the next of the key's streak
        (shared by all workers, reset by `clear` or after a calm spell)."""
        if attempt is not None and attempt < 0:
            raise ValueError("attempt counts from 0")
        jitter = self._random.random()
        try:
            until_us, _ = self._back_off(
                keys=[self._blocked_key(key), self._streak_key(key)],
                args=[
                    -1 if attempt is None else min(attempt, MAX_ATTEMPT),
                    round(self.backoff_base * _US),
                    round(self.backoff_cap * _US),
                    round(self.backoff_floor * _US),
                    repr(jitter),
                ],
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            delay = self.backoff_delay(attempt or 0, jitter)
            log.warning("throttle: Redis unreachable (%s); back-off of %s not stored", exc, key)
            return time.time() + delay
        return int(until_us) / _US

    def backoff_delay(self, attempt: int, jitter: float) -> float:
        """The back-off in seconds for `attempt` and a jitter in [0, 1) (the same
        arithmetic as the Redis script)."""
        ceiling = max(
            self.backoff_floor,
            min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, MAX_ATTEMPT)),
        )
        return self.backoff_floor + jitter * (ceiling - self.backoff_floor)

    def blocked_until(self, key: str) -> float | None:
        """The Unix time (Redis clock) `key` is blocked until, or None when it is not."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.get(self._blocked_key(key))
            (seconds, micros), blocked = pipe.execute()
        now_us = seconds * _US + micros
        if blocked is None or int(blocked) <= now_us:
            return None
        return int(blocked) / _US

    def clear(self, key: str) -> None:
        """Lift `key`'s back-off and reset its attempt streak (its rate windows stay)."""
        self.client.delete(self._blocked_key(key), self._streak_key(key))
