"""Push instead of polling: a small in-process publish/subscribe of the service's own changes.

Open pages (the owner's access-request prompt on the hub's home page and on the desktop page,
the Members page, a support person waiting for an answer) used to poll this service every 1-2 s,
and some polls cost a hub API call. They now hold one server-sent-events stream each
(`visa_collab.push.EventsHandler`), which waits here for something to happen: an idle page costs
nothing but a keep-alive comment now and then.

Channels are named by person. What is published is a *notice* ("request 12 on alice/run
changed"), not the new state: each stream reads the state it may see itself, with its own
access checks, so nothing published can leak to the wrong page. One process, one bus: the
service runs as a single process per hub.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("visa_collab")

# what a stream receives when it fell behind: read the whole state again
RESYNC: dict[str, Any] = {"type": "resync"}


@dataclass(eq=False)
class Subscription:
    """One open stream's mailbox. `closed` is set when the stream's client went away."""

    person: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(64))
    closed: bool = False

    def put(self, event: dict[str, Any] | None) -> None:
        """Deliver without ever waiting: a full mailbox is emptied and told to resync."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None if event is None else RESYNC)

    def close(self) -> None:
        """Wake the stream so it ends (its client disconnected)."""
        self.closed = True
        self.put(None)


class EventBus:
    """Per-person channels, plus the timers that announce access requests expiring.

    A request expires by the clock, not by anything anyone does (`request_ttl`), so whoever
    publishes a pending request says when it expires and the bus publishes that moment too.
    """

    def __init__(self, expiry_grace: float = 0.5) -> None:
        self._channels: dict[str, set[Subscription]] = {}
        self._expiry: dict[int, asyncio.TimerHandle] = {}
        # a little after the deadline, so a stream reading the request then sees it expired
        self.expiry_grace = expiry_grace
        self.published = 0

    @contextmanager
    def subscribe(self, person: str) -> Iterator[Subscription]:
        sub = Subscription(person)
        self._channels.setdefault(person, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._channels.get(person, set())
            subs.discard(sub)
            if not subs:
                self._channels.pop(person, None)

    def subscribers(self, person: str | None = None) -> int:
        if person is not None:
            return len(self._channels.get(person, ()))
        return sum(len(s) for s in self._channels.values())

    def publish(self, people: Iterable[str], event: dict[str, Any]) -> None:
        self.published += 1
        for person in set(people):
            for sub in list(self._channels.get(person, ())):
                sub.put(event)

    # -- access requests ------------------------------------------------------------------------
    def request_changed(self, rid: int, owner: str, server: str, requester: str,
                        expires_in: float | None = None) -> None:
        """Request `rid` was made (`expires_in`: seconds until it expires) or answered."""
        timer = self._expiry.pop(rid, None)
        if timer is not None:
            timer.cancel()
        if expires_in is not None:
            self.expire_later(rid, owner, server, requester, expires_in)
        self.publish((owner, requester), request_notice(rid, owner, server, requester))

    def expire_later(self, rid: int, owner: str, server: str, requester: str, delay: float) -> None:
        """Announce request `rid` when it expires (once; a pending request read after a restart
        of this service gets its timer here too)."""
        if rid in self._expiry:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): streams see it at their next read
            return
        self._expiry[rid] = loop.call_later(max(delay, 0.0) + self.expiry_grace, self._expired,
                                            rid, owner, server, requester)

    def _expired(self, rid: int, owner: str, server: str, requester: str) -> None:
        self._expiry.pop(rid, None)
        self.publish((owner, requester), request_notice(rid, owner, server, requester))


def request_notice(rid: int, owner: str, server: str, requester: str) -> dict[str, Any]:
    return {"type": "request", "id": rid, "owner": owner, "server": server, "requester": requester}


__all__ = ["EventBus", "RESYNC", "Subscription", "request_notice"]
