"""The Redis connection and the RQ queues every process shares.

Clients are created on first use, never at import time: the web server and the RQ
worker fork after importing modules, and a socket opened before a fork would be
shared by two processes.
"""

from __future__ import annotations

import threading

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from rq import Queue
from rq_scheduler import Scheduler

from mailer_app.settings import get_settings

# Queue names. A worker takes jobs from the first non-empty queue in ALL_QUEUES
# order, so the order is a priority: placement checks are short and due at a given
# minute, builds have a person waiting on the review page, and send batches are
# long and numerous (putting them first would starve the other two).
QUEUE_PLACEMENT = "placement"
QUEUE_BUILD = "build"
QUEUE_SEND = "send"
QUEUE_DEFAULT = "default"
ALL_QUEUES: tuple[str, ...] = (QUEUE_PLACEMENT, QUEUE_BUILD, QUEUE_SEND, QUEUE_DEFAULT)

# Short enough that a request never hangs on a stuck Redis; the RQ worker raises
# the read timeout on its own connection above its blocking dequeue time.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
# redis-py 7 retries a failed connection 3 times with backoff up to 10 s (about 8 s
# in all) by default; a web request or health check should learn sooner that
# Redis is down, so retry briefly (under a second in all).
RETRIES = 3
RETRY_BASE, RETRY_CAP = 0.05, 0.5

_clients: dict[str, Redis] = {}
_clients_lock = threading.Lock()


def redis_from_url(url: str) -> Redis:
    """A new client for `url` with the app's timeouts (bytes replies, as RQ needs)."""
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(ExponentialWithJitterBackoff(base=RETRY_BASE, cap=RETRY_CAP), RETRIES),
        health_check_interval=30,
    )


def get_redis() -> Redis:
    """The process-wide client for settings.resolved_redis_url() (created on first use)."""
    url = get_settings().resolved_redis_url()
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis_from_url(url)
        return client


def close_redis() -> None:
    """Close and forget every cached client (tests, and processes changing settings)."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def get_queue(name: str = QUEUE_DEFAULT, *, connection: Redis | None = None) -> Queue:
    """The RQ queue `name`; only the app's queues, so a typo cannot strand jobs."""
    if name not in ALL_QUEUES:
        raise ValueError(f"unknown queue {name!r}; the app's queues are {', '.join(ALL_QUEUES)}")
    return Queue(name, connection=connection or get_redis())


def get_scheduler(queue_name: str = QUEUE_DEFAULT, *, connection: Redis | None = None) -> Scheduler:
    """An rq-scheduler client for enqueue_in/enqueue_at (the jobs.scheduler process runs them)."""
    if queue_name not in ALL_QUEUES:
        raise ValueError(f"unknown queue {queue_name!r}")
    return Scheduler(queue_name=queue_name, connection=connection or get_redis())
