"""The live pages' shared loop (state/live.LivePage): mount counting and when it stops.

The loop runs here on a real live state (the job monitor's) whose reading is
replaced by a fake that counts rounds; no app, no browser, no sleeping.
"""

from __future__ import annotations

import asyncio

import pytest
import reflex as rx
from reflex import constants
from reflex.istate.data import RouterData

from mailer_app.services import ServiceError
from mailer_app.state import live
from mailer_app.state.jobs import JobsState

# -- counting mounts (plain functions) ---------------------------------------------


def test_strict_mode_mount_unmount_mount_leaves_the_page_open():
    session, mounted = live.mounted_after_arrive("", 0, "s1")
    mounted = live.mounted_after_leave(session, mounted, "s1")
    session, mounted = live.mounted_after_arrive(session, mounted, "s1")
    assert (session, mounted) == ("s1", 1)
    assert not live.page_left(session, mounted)
    assert live.page_left(session, live.mounted_after_leave(session, mounted, "s1"))


def test_a_leave_before_any_arrive_counts_down_to_zero_not_below():
    session, mounted = live.mounted_after_arrive("", 0, "s1")
    for _ in range(3):
        mounted = live.mounted_after_leave(session, mounted, "s1")
    assert mounted == 0
    session, mounted = live.mounted_after_arrive(session, mounted, "s1")
    assert not live.page_left(session, mounted)


def test_a_reload_starts_counting_over_and_ignores_the_old_connection():
    session, mounted = live.mounted_after_arrive("", 0, "s1")
    session, mounted = live.mounted_after_arrive(session, mounted, "s1")
    session, mounted = live.mounted_after_arrive(session, mounted, "s2")  # a reload
    assert (session, mounted) == ("s2", 1)
    assert live.mounted_after_leave(session, mounted, "s1") == 1  # the old tab's unmount


def test_until_a_mount_is_seen_the_page_is_not_left():
    # on_load may start the loop before on_mount ran: only closing the tab stops it.
    assert not live.page_left("", 0)


# -- the loop ------------------------------------------------------------------------


class Fake:
    """What the loop sees from the outside world, and what it did."""

    def __init__(self):
        self.connected = True
        self.reads: list[object] = []
        self.on_read = None  # called with the round number, before the read returns

    async def read(self, viewer, key):
        assert viewer == "viewer"
        self.reads.append(key)
        if self.on_read:
            self.on_read(len(self.reads))
        return {"updated": f"round {len(self.reads)}"}


@pytest.fixture
def fake(monkeypatch) -> Fake:
    fake = Fake()

    async def viewer(state):
        return "viewer"

    async def read(state, viewer, key):
        return await fake.read(viewer, key)

    monkeypatch.setattr(JobsState, "_live_viewer", viewer)
    monkeypatch.setattr(JobsState, "_live_read", read)
    monkeypatch.setattr(live, "client_connected", lambda token: fake.connected)
    return fake


@pytest.fixture
def jobs() -> JobsState:
    root = rx.State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {constants.RouteVar.CLIENT_TOKEN: "tab-1", constants.RouteVar.SESSION_ID: "conn-1"}
    )
    return root.get_substate(JobsState.get_full_name().split(".")[1:])


def run(state: JobsState, max_rounds: int = 50) -> None:
    asyncio.run(state._live_loop(every_s=0, max_rounds=max_rounds))


def test_mount_events_count_per_connection(jobs):
    JobsState.arrive.fn(jobs)
    JobsState.leave.fn(jobs)
    JobsState.arrive.fn(jobs)
    assert (jobs._mount_session, jobs._mounted, jobs._page_left()) == ("conn-1", 1, False)
    JobsState.leave.fn(jobs)
    assert jobs._page_left()


def test_the_loop_stops_at_the_round_after_the_page_is_left(jobs, fake):
    JobsState.arrive.fn(jobs)
    fake.on_read = lambda n: n == 3 and JobsState.leave.fn(jobs)
    run(jobs)
    assert len(fake.reads) == 3
    assert jobs.updated == "round 3"
    assert not jobs._watching


def test_the_loop_stops_when_the_tab_is_gone(jobs, fake):
    fake.on_read = lambda n: n == 2 and setattr(fake, "connected", False)
    run(jobs)
    assert len(fake.reads) == 2
    assert not jobs._watching


def test_the_loop_is_bounded(jobs, fake):
    JobsState.arrive.fn(jobs)
    run(jobs, max_rounds=7)
    assert len(fake.reads) == 7
    assert not jobs._watching


def test_the_loop_ends_when_the_key_says_nothing_more_to_follow(jobs, fake, monkeypatch):
    monkeypatch.setattr(JobsState, "_live_key", lambda state: state.updated != "round 2" or None)
    run(jobs)
    assert fake.reads == [True, True]
    assert jobs.updated == "round 2"


def test_a_read_for_a_key_that_changed_meanwhile_is_not_shown(jobs, fake, monkeypatch):
    keys = ["a"]
    monkeypatch.setattr(JobsState, "_live_key", lambda state: keys[0])
    fake.on_read = lambda n: n == 2 and keys.__setitem__(0, "b")
    shown = []
    monkeypatch.setattr(JobsState, "_live_show", lambda state, key, data: shown.append(key))
    run(jobs, max_rounds=4)
    assert fake.reads == ["a", "a", "b", "b"]
    assert shown == ["a", "b", "b"]  # round 2 read "a" while the page moved on to "b"


def test_the_loop_ends_when_what_it_follows_went_away(jobs, fake, monkeypatch):
    async def gone(state, viewer, key):
        fake.reads.append(key)
        raise ServiceError("This campaign does not exist.")

    monkeypatch.setattr(JobsState, "_live_read", gone)
    run(jobs)
    assert len(fake.reads) == 1
    assert not jobs._watching


def test_a_second_copy_returns_at_once_and_leaves_the_first_running(jobs, fake):
    jobs._watching = True
    run(jobs)
    assert fake.reads == []
    assert jobs._watching  # still the first copy's


def test_no_viewer_no_loop(jobs, fake, monkeypatch):
    async def nobody(state):
        return None

    monkeypatch.setattr(JobsState, "_live_viewer", nobody)
    run(jobs)
    assert fake.reads == []
    assert not jobs._watching
