"""Sending with real RQ workers in their own processes, real Redis and a real SMTP
server: two workers share one campaign, workers killed with SIGKILL mid-batch, Redis
restarted with its data wiped mid-send, rate limits measured at the server.

Each case asserts the guarantees of PRODUCT.md: every recipient receives the message at
most once, nothing queued is lost, at most the in-flight message of a killed worker is
`unknown`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from sqlmodel import select

from jobs.maintenance import tick
from jobs.send import LANE_PREFIX, wake_run
from mailer_app.models import CampaignStatus, SendAttempt, SendStatus
from mailer_app.services import send_records
from mailer_app.settings import get_settings
from tests.conftest import free_port, wait_for_port, wait_until
from tests.sending_fixtures import address, campaign_of, make_campaign, records
from tests.smtp_script import smtp_script_fixture  # noqa: F401


@pytest.fixture(autouse=True)
def _settings(monkeypatch):
    monkeypatch.setenv("PUBLIC_URL", "https://mail.example.org/")
    monkeypatch.setenv("SEND_BATCH_SIZE", "10")
    monkeypatch.setenv("SEND_JOB_SECONDS", "3")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def counters(session, made):
    session.expire_all()
    return send_records.run_counters(
        session=session, workspace_id=made.workspace_id, run_id=made.run_id
    )


def wait_completed(session, made, timeout: float) -> None:
    wait_until(
        lambda: campaign_of(session, made).status == CampaignStatus.COMPLETED,
        timeout,
        "the campaign to complete",
    )


def assert_at_most_once(smtp_script, count: int) -> dict[str, int]:
    received = smtp_script.received_by_recipient()
    assert set(received) <= {address(i) for i in range(count)}
    assert all(n == 1 for n in received.values()), {a: n for a, n in received.items() if n > 1}
    return received


def test_two_workers_share_one_campaign_and_send_each_message_once(
    session, engine, redis_url, spawn, smtp_script
):
    smtp_script.configure(delay=0.005)
    made = make_campaign(session, engine, port=smtp_script.port, count=200)
    spawn("jobs.worker", "send", "--burst")
    spawn("jobs.worker", "send", "--burst")
    assert wake_run(made.run_id, lanes=2) == 2
    assert wake_run(made.run_id, lanes=2) == 0  # both lanes are covered: nothing more
    wait_completed(session, made, timeout=90)
    assert assert_at_most_once(smtp_script, 200) == {address(i): 1 for i in range(200)}
    workers = set(session.exec(select(SendAttempt.worker)).all())
    assert len(workers) == 2  # both processes sent part of it
    assert counters(session, made).sent == 200


def test_a_worker_killed_mid_batch_again_and_again_loses_nothing_and_sends_nothing_twice(
    session, engine, redis_url, spawn, smtp_script, monkeypatch
):
    # Short thresholds so the reconciler may act right after each kill (no other worker
    # is alive then); each kill happens while a batch is being sent.
    monkeypatch.setenv("SEND_UNKNOWN_AFTER_SECONDS", "0.2")
    monkeypatch.setenv("SEND_CLAIM_LEASE_SECONDS", "0.2")
    get_settings.cache_clear()
    smtp_script.configure(delay=0.01)
    total = 150
    made = make_campaign(session, engine, port=smtp_script.port, count=total)
    client = redis.Redis.from_url(redis_url)
    kills = 0
    for _ in range(4):
        before = sum(smtp_script.received_by_recipient().values())
        if counters(session, made).remaining == 0:
            break
        # --simple: the job runs in the worker process itself, so SIGKILL kills the sender.
        worker = spawn("jobs.worker", "send", "--simple", env={"SEND_CLAIM_LEASE_SECONDS": "600"})
        wake_run(made.run_id, lanes=1)
        smtp_script.wait_for_received(before + 15, timeout=30)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        kills += 1
        time.sleep(0.3)
        for key in client.scan_iter(match=f"{LANE_PREFIX}:*"):  # as if its lane key expired
            client.delete(key)
        tick()
    client.close()
    assert kills >= 3
    monkeypatch.setenv("SEND_UNKNOWN_AFTER_SECONDS", "300")
    monkeypatch.setenv("SEND_CLAIM_LEASE_SECONDS", "600")
    get_settings.cache_clear()
    spawn("jobs.worker", "send", "--burst")
    wake_run(made.run_id, lanes=1)
    wait_completed(session, made, timeout=90)
    received = assert_at_most_once(smtp_script, total)
    found = records(session, made.run_id)
    statuses = {email: r.status for email, r in found.items()}
    unknown = [e for e, s in statuses.items() if s == SendStatus.UNKNOWN]
    assert len(unknown) <= kills  # at most the one message in flight per kill
    assert {s for s in statuses.values()} <= {SendStatus.SENT, SendStatus.UNKNOWN}
    for email, status in statuses.items():
        if status == SendStatus.SENT:
            assert received.get(email) == 1
    assert len(received) >= total - len(unknown)  # none lost


@pytest.fixture
def restartable_redis(tmp_path) -> Iterator[tuple[str, callable]]:
    """A redis-server of this test's own, which `restart()` stops and starts again on
    the same port with no data (it keeps nothing on disk)."""
    exe = shutil.which("redis-server")
    port = free_port()
    args = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path)]  # fmt: skip
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    wait_for_port(port)

    def restart(down_for: float = 1.0) -> None:
        procs[-1].kill()
        procs[-1].wait(timeout=10)
        time.sleep(down_for)
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(port)

    yield f"redis://127.0.0.1:{port}/0", restart
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_redis_restarted_with_its_data_wiped_mid_send_the_send_completes_without_duplicates(
    session, engine, spawn, smtp_script, restartable_redis, monkeypatch
):
    url, restart = restartable_redis
    monkeypatch.setenv("REDIS_URL", url)
    get_settings.cache_clear()
    from jobs.connection import close_redis

    close_redis()
    smtp_script.configure(delay=0.01)
    total = 250
    made = make_campaign(session, engine, port=smtp_script.port, count=total)
    env = {"REDIS_URL": url}
    spawn("jobs.worker", "send", "default", env=env)
    spawn("jobs.worker", "send", "default", env=env)
    spawn("jobs.scheduler", env=env)  # its maintenance tick re-wakes what Redis forgot
    wake_run(made.run_id, lanes=2)
    smtp_script.wait_for_received(60, timeout=30)
    restart()  # every job, lane key and queue is gone
    close_redis()
    wait_completed(session, made, timeout=120)
    received = assert_at_most_once(smtp_script, total)
    assert received == {address(i): 1 for i in range(total)}
    assert counters(session, made).sent == total


def test_a_sender_rate_limit_holds_across_two_workers_at_the_server(
    session, engine, redis_url, spawn, smtp_script
):
    made = make_campaign(session, engine, port=smtp_script.port, count=24, rate_per_second=6.0)
    spawn("jobs.worker", "send", "--burst")
    spawn("jobs.worker", "send", "--burst")
    started = time.monotonic()
    wake_run(made.run_id, lanes=2)
    wait_completed(session, made, timeout=60)
    elapsed = time.monotonic() - started
    assert assert_at_most_once(smtp_script, 24) == {address(i): 1 for i in range(24)}
    assert smtp_script.max_in_any_window(1.0) <= 6
    assert elapsed >= 3.0  # 24 messages at 6 per second
    workers = set(session.exec(select(SendAttempt.worker)).all())
    assert len(workers) == 2


def test_the_maintenance_tick_wakes_a_run_that_no_job_covers(
    session, engine, redis_url, spawn, smtp_script
):
    made = make_campaign(session, engine, port=smtp_script.port, count=5)
    spawn("jobs.worker", "send", "default", "--burst")
    assert tick()["woken"] == [made.run_id]  # queued records, no lane: woken
    wait_completed(session, made, timeout=60)
    assert smtp_script.received_by_recipient() == {address(i): 1 for i in range(5)}
    assert tick()["woken"] == []
    assert os.environ["REDIS_URL"] == redis_url


def test_the_cli_queues_a_campaign_that_a_worker_sends_and_reports_progress(
    session, engine, redis_url, spawn, smtp_script
):
    import sys

    from tests.conftest import ROOT

    made = make_campaign(session, engine, port=smtp_script.port, count=7, queue=False)
    spawn("jobs.worker", "send")
    cli = [sys.executable, "-m", "mailer_app"]
    where = [str(made.campaign_id), "--workspace", str(made.workspace_id)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    queued = subprocess.run([*cli, "queue", *where], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=60)  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    assert "of 7" in queued.stdout
    wait_completed(session, made, timeout=60)
    shown = subprocess.run([*cli, "progress", *where], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=60)  # fmt: skip
    assert "completed" in shown.stdout and "sent 7" in shown.stdout, shown.stdout
    assert smtp_script.received_by_recipient() == {address(i): 1 for i in range(7)}
    again = subprocess.run([*cli, "pause", *where], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=60)  # fmt: skip
    assert again.returncode == 1 and "completed" in again.stderr.lower()
