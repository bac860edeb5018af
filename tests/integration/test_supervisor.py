"""The development supervisor, as `reflex run` uses it: real Redis, worker, scheduler.

Each test starts a supervisor through ensure_supervisor (detached, like the web
backend does) watching a `sleep` process that stands in for `reflex run`, with its
own data folder, no REDIS_URL (so it starts its private Redis) and no mail lab.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from rq import Queue
from rq.job import Job, JobStatus

from jobs.connection import QUEUE_SEND, get_queue, redis_from_url
from jobs.health import scheduler_alive, workers_alive
from jobs.system import ping
from mailer_app.runtime import launcher
from mailer_app.runtime.supervisor import ensure_supervisor, supervisor_status
from mailer_app.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = ("redis", "worker", "scheduler")


def wait_until(predicate: Callable[[], object], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def gone(pid: int) -> bool:
    """Not running; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_up(settings: Settings) -> dict | None:
    status = supervisor_status(settings)
    children = status["children"]
    if status["state"] == "running" and all(
        children.get(name, {}).get("alive") for name in CHILDREN
    ):
        return status
    return None


def process_tree(status: dict) -> list[int]:
    """The supervisor, its children and everything below them."""
    pids = [status["pid"]]
    with contextlib.suppress(psutil.NoSuchProcess):
        pids += [p.pid for p in psutil.Process(status["pid"]).children(recursive=True)]
    return pids


@dataclass
class Running:
    settings: Settings
    watched: subprocess.Popen
    status: dict

    def redis(self):
        return redis_from_url(self.settings.resolved_redis_url())

    def wait_up(self, timeout: float = 15) -> dict:
        self.status = wait_until(lambda: all_up(self.settings), timeout, "redis, worker, scheduler")
        return self.status


@pytest.fixture
def dev_settings(monkeypatch) -> Settings:
    """Development settings on this test's data folder, without REDIS_URL or the lab."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("MAILER_ENV", "dev")
    monkeypatch.setenv("MAILER_LAB", "0")
    monkeypatch.setenv("MAILER_SUPERVISE", "1")
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.redis_url is None and settings.is_dev
    return settings


@pytest.fixture
def supervised(dev_settings) -> Iterator[Running]:
    watched = subprocess.Popen(["sleep", "120"])
    started: list[int] = []
    try:
        assert ensure_supervisor(dev_settings, watched.pid) == "started"
        up = Running(dev_settings, watched, {})
        up.wait_up()
        yield up
    finally:
        # Stop whatever is left, and fail loudly rather than leak processes.
        status = supervisor_status(dev_settings)
        if status.get("pid"):
            started = process_tree(status)
        watched.kill()
        watched.wait(timeout=5)
        leftover = [pid for pid in started if not _wait_gone(pid, 10)]
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        for proc in launcher._launched:
            proc.wait(timeout=5)
        assert not leftover, f"processes outlived the test: {leftover}"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def _finished(job: Job) -> bool:
    return job.get_status(refresh=True) == JobStatus.FINISHED


def test_supervisor_runs_redis_worker_and_scheduler(supervised):
    settings, status = supervised.settings, supervised.status
    assert status["ok"] is True
    assert status["redis_url"] == f"unix://{settings.run_dir / 'redis.sock'}?db=1"
    assert status["children"]["lab"]["state"] == "skipped"
    assert "MAILER_LAB=0" in status["children"]["lab"]["error"]

    redis = supervised.redis()
    job = get_queue(QUEUE_SEND, connection=redis).enqueue(ping, 7)
    wait_until(lambda: _finished(job), 10, "the supervised worker to run a job")
    assert job.return_value() == 7

    workers = wait_until(
        lambda: len(workers_alive(redis)) == 2 and workers_alive(redis), 5, "both workers"
    )
    children = status["children"]
    assert {w["pid"] for w in workers} == {
        children["worker"]["pid"],
        children["placement-worker"]["pid"],
    }
    assert wait_until(lambda: scheduler_alive(redis), 5, "the scheduler's registration")
    assert (settings.data_dir / "redis" / "appendonlydir").is_dir(), "Redis keeps an AOF"
    assert "Listening on" in (settings.run_dir / "worker.log").read_text()
    redis.close()


def test_a_second_start_is_a_no_op(supervised):
    settings = supervised.settings
    pid = supervised.status["pid"]

    assert ensure_supervisor(settings, supervised.watched.pid) == "already_running"
    # Started by hand, a second supervisor sees the lock and leaves at once.
    result = subprocess.run(
        [sys.executable, "-m", "mailer_app.runtime.supervisor", "--watch-pid", str(os.getpid())],
        cwd=ROOT, capture_output=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0
    assert b"already runs" in result.stderr

    status = supervisor_status(settings)
    assert status["pid"] == pid and status["ok"] is True
    assert status["children"]["redis"]["restarts"] == 0


def test_everything_stops_when_the_watched_process_exits(supervised):
    pids = process_tree(supervised.status)
    assert len(pids) >= 5  # supervisor, redis, 2 workers (+ rq's scheduler fork), scheduler

    supervised.watched.kill()
    supervised.watched.wait(timeout=5)

    wait_until(lambda: all(gone(pid) for pid in pids), 10, "every process to exit")
    status = supervisor_status(supervised.settings)
    assert status["state"] == "stopped" and status["running"] is False
    assert status["stop_reason"] == f"watched process {supervised.watched.pid} exited"
    assert {status["children"][name]["state"] for name in CHILDREN} == {"stopped"}


def test_killing_the_supervisor_takes_its_children_down(supervised):
    settings = supervised.settings
    redis = supervised.redis()
    # A job on a queue no worker reads: it must survive the restart (AOF).
    parked = Queue("parked", connection=redis).enqueue(ping, 1)
    redis.close()
    pids = process_tree(supervised.status)

    os.kill(supervised.status["pid"], signal.SIGKILL)

    wait_until(lambda: all(gone(pid) for pid in pids), 10, "the children to follow (PDEATHSIG)")
    assert supervisor_status(settings)["state"] == "dead"

    assert ensure_supervisor(settings, supervised.watched.pid) == "started"
    supervised.wait_up()
    redis = supervised.redis()
    assert Job.fetch(parked.id, connection=redis).get_status() == JobStatus.QUEUED
    redis.close()


def test_a_crashed_worker_is_restarted(supervised):
    settings = supervised.settings
    old = supervised.status["children"]["worker"]["pid"]
    old_tree = [old] + [p.pid for p in psutil.Process(old).children(recursive=True)]

    os.kill(old, signal.SIGKILL)

    def restarted():
        status = all_up(settings)
        worker = status and status["children"]["worker"]
        return worker if worker and worker["pid"] != old else None

    worker = wait_until(restarted, 10, "a new worker")
    assert worker["restarts"] == 1
    assert "SIGKILL" in worker["error"]
    assert all(gone(pid) for pid in old_tree), "the dead worker's own children went too"

    redis = supervised.redis()
    job = get_queue(connection=redis).enqueue(ping, "again")
    wait_until(lambda: _finished(job), 10, "the new worker to run a job")
    redis.close()
