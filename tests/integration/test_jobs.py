"""Real `python -m jobs.worker` and `python -m jobs.scheduler` processes on a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rq import Queue
from rq.job import JobStatus

from jobs import connection
from jobs.connection import ALL_QUEUES, QUEUE_DEFAULT, get_queue, get_redis, get_scheduler
from jobs.health import (
    describe_schedulers,
    describe_workers,
    ping_worker,
    scheduler_alive,
    workers_alive,
)
from jobs.system import ping
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_clients():
    connection.close_redis()
    yield
    connection.close_redis()


def _finished(job):
    return job.get_status(refresh=True) == JobStatus.FINISHED


def test_burst_worker_runs_a_job_from_every_app_queue(redis_url, spawn):
    jobs = [get_queue(name).enqueue(ping, f"hello {name}") for name in ALL_QUEUES]

    worker = spawn("jobs.worker", "--burst")
    assert worker.wait(timeout=30) == 0

    for name, job in zip(ALL_QUEUES, jobs, strict=True):
        assert _finished(job), job.get_status()
        assert job.return_value() == f"hello {name}"


def test_workers_alive_sees_the_worker_and_its_current_job(redis_url, spawn):
    worker = spawn("jobs.worker")
    redis = get_redis()
    [info] = wait_until(lambda: workers_alive(redis), 10, "the worker to register")
    assert info["pid"] == worker.pid
    assert info["queues"] == list(ALL_QUEUES)
    assert info["heartbeat_age"] is not None and info["heartbeat_age"] < 10

    job = get_queue(QUEUE_DEFAULT).enqueue("time.sleep", 1.5)
    wait_until(lambda: workers_alive(redis)[0]["current_job"] == job.id, 5, "the worker to be busy")
    assert workers_alive(redis)[0]["state"] == "busy"
    wait_until(lambda: _finished(job), 10, "the job to finish")

    # A heartbeat is never younger than 0 s: with max_age=0 nothing is fresh.
    assert workers_alive(redis, max_age=0) == []
    assert describe_workers(redis, max_age=0)[0]["alive"] is False

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0, "warm shutdown exits 0"
    assert workers_alive(redis) == []


def test_health_lookups_keep_the_callers_short_socket_timeout(redis_url, spawn):
    spawn("jobs.worker")
    client = connection.redis_from_url(redis_url)
    client.connection_pool.connection_kwargs["socket_timeout"] = 1
    wait_until(lambda: workers_alive(client), 10, "the worker to register")
    # rq's Worker() raises it to over 400 s on the connection it is handed.
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 1
    client.close()


def test_scheduler_moves_a_job_enqueued_in_one_second(redis_url, spawn):
    spawn("jobs.worker")
    scheduler = spawn("jobs.scheduler")
    redis = get_redis()
    wait_until(lambda: scheduler_alive(redis), 10, "the scheduler to register")
    [info] = describe_schedulers(redis)
    assert info["pid"] == scheduler.pid

    started = time.monotonic()
    job = get_scheduler().enqueue_in(timedelta(seconds=1), ping, "later")
    wait_until(lambda: _finished(job), 10, "the scheduled job to run")
    assert time.monotonic() - started >= 0.9, "ran no earlier than scheduled"
    assert job.return_value() == "later"

    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(timeout=10) == 0
    assert scheduler_alive(redis) is False, "a clean stop records the scheduler's death"


def test_a_killed_scheduler_turns_stale(redis_url, spawn):
    scheduler = spawn("jobs.scheduler")
    redis = get_redis()
    wait_until(lambda: scheduler_alive(redis), 10, "the scheduler to register")

    scheduler.kill()  # no chance to record its death
    scheduler.wait(timeout=5)
    assert wait_until(lambda: not scheduler_alive(redis, max_age=1.5), 5, "a stale scheduler")


def test_ping_worker_proves_a_worker_runs_jobs(redis_url, spawn):
    redis = get_redis()
    assert ping_worker(redis, timeout=0.3) is None, "no worker yet"
    assert Queue(QUEUE_DEFAULT, connection=redis).count == 0, "an unanswered ping is removed"

    spawn("jobs.worker")
    wait_until(lambda: workers_alive(redis), 10, "the worker to register")
    round_trip = ping_worker(redis, timeout=10)
    assert round_trip is not None and round_trip < 10


def test_nothing_connects_to_redis_at_import_time():
    # Port 1 on loopback: any connection attempt at import would fail loudly.
    code = (
        "import jobs.connection, jobs.worker, jobs.scheduler, jobs.health, jobs.system\n"
        "assert not jobs.connection._clients\n"
    )
    env = dict(os.environ, REDIS_URL="redis://127.0.0.1:1/0", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode()


def test_only_the_app_queues_exist(redis_url):
    with pytest.raises(ValueError, match="unknown queue"):
        get_queue("sned")
    with pytest.raises(ValueError, match="unknown queue"):
        get_scheduler("sned")
    result = subprocess.run(
        [sys.executable, "-m", "jobs.worker", "sned"],
        cwd=ROOT, capture_output=True, timeout=30,
        env=dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert result.returncode == 2
    assert b"unknown queue" in result.stderr


def test_get_redis_is_one_client_per_url(redis_url):
    assert get_redis() is get_redis()
    connection.close_redis()
    assert not connection._clients
