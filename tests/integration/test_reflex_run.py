"""`reflex run` brings up the whole system, and stopping it leaves no process behind.

This starts the real command (backend only: the frontend build is covered by the
browser tests) in a fresh data folder, waits until /health reports database, Redis,
worker, scheduler and lab all up, then stops it the way a developer does (Ctrl+C,
or the terminal closing) and checks every process it started is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow

REFLEX = Path(sys.executable).parent / "reflex"
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:  # 503 still carries the report
        return json.load(exc)
    except (OSError, ValueError):
        return None


def _start(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    backend_port = free_port()
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "MAILER_ENV": "dev",
        "MAILER_SUPERVISE": "1",
        "MAILER_LAB": "1",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "LAB_SMTP_PORT": str(free_port()),
        "LAB_IMAP_PORT": str(free_port()),
        "REFLEX_TELEMETRY_ENABLED": "false",
        "REFLEX_CHECK_LATEST_VERSION": "false",
        "REFLEX_USE_SYSTEM_BUN": "1",
    }
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen(
        [
            str(REFLEX),
            "run",
            "--backend-only",
            "--backend-port",
            str(backend_port),
            "--loglevel",
            "info",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(tmp_path / "reflex.log", "wb"),  # noqa: SIM115 (closed with the process)
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as in a terminal
    )
    return proc, backend_port, data_dir


def _wait_all_up(proc: subprocess.Popen, port: int, tmp_path: Path) -> dict:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    report = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "reflex.log").read_text()[-3000:]
        report = _health(port)
        if report and report["status"] == "ok":
            states = {k: v["state"] for k, v in report["components"].items()}
            if states == dict.fromkeys(states, "up"):
                return report
        time.sleep(0.5)
    log = (tmp_path / "reflex.log").read_text()[-3000:]
    pytest.fail(f"not all up after {STARTUP_TIMEOUT_S}s: {report}\n{log}")


def _started_processes(proc: subprocess.Popen, data_dir: Path) -> list[psutil.Process]:
    """Every process `reflex run` started: its descendants and the supervisor's."""
    found = {p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)}
    status = json.loads((data_dir / "run" / "supervisor.json").read_text())
    for pid in [status.get("pid"), *[c.get("pid") for c in status.get("children", {}).values()]]:
        if pid and psutil.pid_exists(pid):
            sup = psutil.Process(pid)
            found[pid] = sup
            found.update({c.pid: c for c in sup.children(recursive=True)})
    return list(found.values())


def _cmdline(process: psutil.Process) -> str:
    # Short-lived helpers (Dovecot's imap-login) may exit while we look.
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _assert_all_gone(processes: list[psutil.Process]) -> None:
    _gone, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)
    leftovers = [f"{p.pid} {_cmdline(p)[:80]}" for p in alive if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert not leftovers, f"orphans left running: {leftovers}"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_reflex_run_starts_everything_and_leaves_no_orphans(tmp_path, stop_signal):
    proc, port, data_dir = _start(tmp_path)
    try:
        report = _wait_all_up(proc, port, tmp_path)
        assert set(report["components"]) == {"database", "redis", "worker", "scheduler", "lab"}
        started = _started_processes(proc, data_dir)
        names = " ".join(_cmdline(p) for p in started)
        for expected in ("redis-server", "jobs.worker", "jobs.scheduler", "mailer_app.lab"):
            assert expected in names, f"{expected} not among {names}"
        # Ctrl+C reaches the whole foreground process group; a kill reaches only reflex.
        if stop_signal == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
        _assert_all_gone(started)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
