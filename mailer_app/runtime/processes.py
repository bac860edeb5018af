"""Starting and stopping child processes so that none outlives the supervisor.

Three layers, because any one of them can be skipped by a hard kill:
- every child gets PR_SET_PDEATHSIG=SIGTERM, so the kernel signals it when the
  supervisor dies, even by SIGKILL;
- the supervisor is a child subreaper, so grandchildren orphaned by a crashed child
  (an RQ work horse, rq's scheduler fork) are re-parented to it, not to init;
- stopping a child stops its whole tree, and the supervisor kills whatever
  descendants it still has before it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
IS_LINUX = sys.platform.startswith("linux")


def _libc():
    return ctypes.CDLL(None, use_errno=True) if IS_LINUX else None


def set_child_subreaper() -> bool:
    """Adopt orphaned descendants (Linux); False where unsupported."""
    libc = _libc()
    return bool(libc is not None and libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def _child_preexec(parent_pid: int) -> Callable[[], None]:
    """What runs in the child between fork and exec (single-threaded parent only)."""
    libc = _libc()  # loaded before the fork: nothing heavy happens in the child

    def setup() -> None:
        # Own process group: a terminal Ctrl+C reaches only the supervisor, which then
        # stops the children in order (Redis last) instead of all at once.
        os.setpgid(0, 0)
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            # The parent may have died between fork and prctl: then no signal comes.
            if os.getppid() != parent_pid:
                os._exit(1)

    return setup


def spawn(
    argv: Sequence[str], *, log_file: Path, env: Mapping[str, str], cwd: Path
) -> subprocess.Popen:
    """Start `argv` with output appended to `log_file`, tied to this process's life.

    Call from the main thread: PDEATHSIG fires when the *thread* that forked exits.
    """
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            close_fds=True,  # never pass on the supervisor's lock fd
            # preexec_fn is unsafe with threads; the supervisor has only one.
            preexec_fn=_child_preexec(os.getpid()),
        )


def process_identity(pid: int) -> float | None:
    """The create time of `pid` (with the pid, it names a process uniquely), or None."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def pid_alive(pid: int | None, create_time: float | None = None) -> bool:
    """True when `pid` runs (not a zombie) and, if given, was created at create_time."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False  # the pid was reused by another process
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid: int) -> list[psutil.Process]:
    """All live descendants of `pid` (empty if it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until `procs` are gone (zombies count as gone); the ones left."""
    deadline = time.monotonic() + timeout
    left = _alive(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _alive(left)
    return left


def terminate(procs: Iterable[psutil.Process], timeout: float) -> None:
    """SIGTERM `procs`, then SIGKILL what is still running after `timeout`."""
    procs = _alive(procs)
    _signal(procs, signal.SIGTERM)
    left = _wait_gone(procs, timeout)
    if left:
        _signal(left, signal.SIGKILL)
        _wait_gone(left, 2.0)


def stop_popens(popens: Sequence[subprocess.Popen], timeout: float) -> None:
    """Stop children and all their descendants: SIGTERM, wait, SIGKILL, reap.

    Only the children get SIGTERM first, so each shuts down its own way (an RQ
    worker lets its running job finish); descendants still there afterwards are
    orphans and are terminated too.
    """
    running = [p for p in popens if p.poll() is None]
    trees = {p.pid: descendants(p.pid) for p in running}
    for p in running:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in running:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            trees[p.pid] += descendants(p.pid)
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait(timeout=5)
    leftovers = [proc for tree in trees.values() for proc in tree]
    if leftovers:
        terminate(leftovers, timeout=2.0)


def reap_adopted(known: Iterable[int]) -> None:
    """Reap zombie children that are not ours to wait for (adopted orphans)."""
    known = set(known)
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        if child.pid in known:
            continue  # subprocess.Popen reaps its own, and needs the exit code
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
