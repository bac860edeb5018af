"""ensure_supervisor's guards, find_watch_pid, supervisor_status and the run-dir files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mailer_app.runtime import rundir
from mailer_app.runtime.launcher import (
    _is_reflex_run,
    ensure_supervisor,
    find_watch_pid,
    supervisor_env,
    supervisor_status,
)
from mailer_app.settings import PROJECT_ROOT, Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, environment="dev", supervise=True, redis_url=None)


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["reflex", "run"], True),
        (["/x/.venv/bin/python", "/x/.venv/bin/reflex", "run", "--env", "dev"], True),
        (["python", "-m", "reflex", "run"], True),
        (["reflex", "export"], False),
        (["python", "-m", "jobs.worker"], False),
        (["python", "/x/reflex_helpers/run.py", "run"], False),
        ([], False),
    ],
)
def test_reflex_run_command_lines(cmdline, expected):
    assert _is_reflex_run(cmdline) is expected


def test_find_watch_pid_returns_the_outermost_reflex_run(tmp_path):
    # bin/reflex stands in for the CLI: `reflex run` starts another `reflex run`
    # (as the CLI starts its backend), which starts the probe.
    fake = tmp_path / "bin" / "reflex"
    fake.parent.mkdir()
    fake.write_text(
        "import os, subprocess, sys\n"
        "if os.environ.get('INNER'):\n"
        "    probe = 'from mailer_app.runtime.launcher import find_watch_pid as f; print(f())'\n"
        "    sys.exit(subprocess.run([sys.executable, '-c', probe]).returncode)\n"
        "os.environ['INNER'] = '1'\n"
        "print(os.getpid(), flush=True)\n"
        "sys.exit(subprocess.run([sys.executable, sys.argv[0], 'run']).returncode)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    env.pop("INNER", None)
    result = subprocess.run(
        [sys.executable, str(fake), "run"], env=env, capture_output=True, timeout=30, text=True
    )
    assert result.returncode == 0, result.stderr
    outer, found = result.stdout.split()
    assert found == outer


def test_find_watch_pid_falls_back_to_this_process():
    assert find_watch_pid() == os.getpid()  # pytest runs under no `reflex run`


def test_ensure_supervisor_does_nothing_when_not_wanted(settings):
    off = settings.model_copy(update={"supervise": False})
    assert ensure_supervisor(off, os.getpid()) == "disabled"
    prod = settings.model_copy(update={"environment": "prod"})
    assert ensure_supervisor(prod, os.getpid()) == "disabled"
    assert not settings.run_dir.exists()


def test_ensure_supervisor_is_a_no_op_while_the_lock_is_held(settings):
    fd = rundir.acquire_lock(settings.run_dir)
    try:
        assert ensure_supervisor(settings, os.getpid()) == "already_running"
    finally:
        os.close(fd)


def test_the_supervisor_gets_the_callers_settings(settings, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6399/0")  # not in `settings`
    env = supervisor_env(settings.model_copy(update={"lab_enabled": False}))
    assert env["DATA_DIR"] == str(settings.data_dir)
    assert env["MAILER_ENV"] == "dev" and env["MAILER_LAB"] == "0"
    assert "REDIS_URL" not in env
    external = supervisor_env(settings.model_copy(update={"redis_url": "redis://h:1/2"}))
    assert external["REDIS_URL"] == "redis://h:1/2"


def test_status_without_a_supervisor(settings):
    status = supervisor_status(settings)
    assert status["state"] == "absent" and status["running"] is False and status["ok"] is False


def test_status_of_a_killed_supervisor_is_dead(settings):
    dead = subprocess.Popen(["true"])
    dead.wait()
    rundir.ensure_run_dir(settings.run_dir)
    rundir.write_state(
        settings.run_dir,
        {
            "pid": dead.pid,
            "create_time": 1.0,
            "state": "running",
            "children": {"worker": {"state": "running", "pid": dead.pid, "create_time": 1.0}},
        },
    )
    status = supervisor_status(settings)
    assert status["state"] == "dead"
    assert status["ok"] is False
    assert status["children"]["worker"]["alive"] is False


def test_lock_is_exclusive(tmp_path):
    fd = rundir.acquire_lock(tmp_path)
    assert fd is not None and rundir.lock_is_held(tmp_path)
    assert rundir.acquire_lock(tmp_path, wait=0.1) is None
    os.close(fd)
    assert not rundir.lock_is_held(tmp_path)
    os.close(rundir.acquire_lock(tmp_path))


def test_tail_and_rotation(tmp_path):
    log = tmp_path / "worker.log"
    assert rundir.tail(log) == []
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert rundir.tail(log, 3) == ["line 97", "line 98", "line 99"]
    rundir.rotate_log(log, max_bytes=10)
    assert not log.exists() and (tmp_path / "worker.log.1").exists()
