"""Live pages: a bounded background refresh loop that stops when its page goes away.

A live page's state mixes in `LivePage` and says what one round does in three small
steps: `_live_key` (under the state lock: what the next round reads, or None once
there is nothing more to follow), `_live_read` (outside the lock: the slow reading)
and `_live_show` (under the lock again: put what was read on the page). Its own
background `watch` event runs `_live_loop`, which sleeps between rounds and stops
when the tab closes, when the page is left inside the app, when the key says so,
when what it follows is gone (ServiceError), or after `max_rounds` rounds.

Leaving is counted, not flagged: the page's on_mount calls `arrive` (+1) and its
on_unmount `leave` (-1), per browser connection, because React's strict mode mounts,
unmounts and mounts again in development, in no fixed order with on_load.

Reflex 0.10 also cancels a loop that an on_load handler started once the next page's
on_load starts (a navigation supersedes the previous page's unfinished on_load
chain); the counting stops the loops started any other way (a click: the pre-flight
Run, the send page's controls) and does not depend on that.
"""

from __future__ import annotations

import asyncio
from typing import Any

import reflex as rx

from mailer_app.services import ServiceError
from mailer_app.state.auth import AuthState


def client_connected(token: str) -> bool:
    """Whether the browser tab behind a state's client token is still connected."""
    from mailer_app.mailer_app import app

    namespace = app.event_namespace
    return bool(namespace) and token in namespace.token_to_sid


def mounted_after_arrive(mount_session: str, mounted: int, session: str) -> tuple[str, int]:
    """The (connection, mount count) after the page mounts in connection `session`
    (a reload opens a new connection: the count starts over)."""
    return session, (mounted if session == mount_session else 0) + 1


def mounted_after_leave(mount_session: str, mounted: int, session: str) -> int:
    """The mount count after the page unmounts in connection `session` (an unmount
    from an older connection changes nothing)."""
    return max(0, mounted - 1) if session == mount_session else mounted


def page_left(mount_session: str, mounted: int) -> bool:
    """Whether the page was left: its mounts all went. Until a mount is seen, only
    the tab going away stops a loop (on_load may start it before on_mount)."""
    return bool(mount_session) and mounted <= 0


class LivePage(rx.State, mixin=True):
    """A page whose state refreshes itself while the page is open (see the module)."""

    # How many times the page is mounted in the browser connection `_mount_session`.
    _mounted: int = 0
    _mount_session: str = ""
    _watching: bool = False

    @rx.event
    def arrive(self):
        """The page is mounted (its on_mount)."""
        self._mount_session, self._mounted = mounted_after_arrive(
            self._mount_session, self._mounted, self.router.session.session_id
        )

    @rx.event
    def leave(self):
        """The page is unmounted (its on_unmount): the loop stops at its next round."""
        self._mounted = mounted_after_leave(
            self._mount_session, self._mounted, self.router.session.session_id
        )

    def _page_left(self) -> bool:
        return page_left(self._mount_session, self._mounted)

    async def _live_viewer(self) -> Any:
        """Who the loop reads for (under the lock); None: no loop. The signed-in user."""
        return (await self.get_state(AuthState)).current_user()

    def _live_key(self) -> Any:
        """Under the lock: what the next round reads; None ends the loop."""
        return ()

    async def _live_read(self, viewer: Any, key: Any) -> Any:
        """Outside the lock: read what the page shows (touches no state)."""
        raise NotImplementedError

    def _live_show(self, key: Any, data: Any) -> None:
        """Under the lock: show what `_live_read` returned for `key`."""
        self._show(data)

    async def _live_loop(self, *, every_s: float, max_rounds: int) -> None:
        """The body of a live page's background `watch`: a round every `every_s`
        seconds while the page is open, `max_rounds` at the most (then the page keeps
        its last numbers). A second copy returns at once."""
        async with self:
            if self._watching:
                return
            self._watching = True
            viewer = await self._live_viewer()
        try:
            if viewer is None:
                return
            for _ in range(max_rounds):
                await asyncio.sleep(every_s)
                if not client_connected(self.router.session.client_token):
                    return
                async with self:
                    key = None if self._page_left() else self._live_key()
                if key is None:
                    return
                try:
                    data = await self._live_read(viewer, key)
                except ServiceError:
                    return  # what the page follows went away meanwhile
                async with self:
                    if self._live_key() != key:
                        continue  # the page shows something else now: the next round reads it
                    self._live_show(key, data)
                    if self._live_key() is None:
                        return
        finally:
            async with self:
                self._watching = False
