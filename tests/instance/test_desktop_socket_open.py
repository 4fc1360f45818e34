"""The desktop websocket's open(): a member's connection is registered and sent without Nagle."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from visa_instance.desktop_socket import DesktopSocketMixin

pytestmark = pytest.mark.fast


class _Room:
    def __init__(self) -> None:
        self.events: list[str] = []

    def desktop_opened(self, conn: Any) -> None:
        self.events.append("opened")

    def desktop_closed(self, conn: Any, reason: str = "closed") -> None:
        self.events.append(f"closed: {reason}")


class _Bridge:
    """jupyter-server-proxy's raw bridge as far as open() sees it; ``fail``: the desktop won't start."""

    fail = False

    def __init__(self) -> None:
        self.room = _Room()
        self.settings = {"visa_room": self.room, "visa_desktop_idle_disconnect": 0}
        self.nodelay: list[bool] = []
        self.log = logging.getLogger("test")

    async def open(self, *args: Any, **kwargs: Any) -> None:
        if self.fail:
            raise RuntimeError("could not start desktop in time")

    def set_nodelay(self, value: bool) -> None:
        self.nodelay.append(value)


class _Socket(DesktopSocketMixin, _Bridge):
    pass


def test_an_opened_desktop_websocket_sends_without_delay() -> None:
    """Small updates (an echoed key) go out at once, not after the previous segment's ACK."""
    handler = _Socket()
    asyncio.run(handler.open())
    assert handler.nodelay == [True]
    assert handler.room.events == ["opened"]


def test_a_desktop_that_does_not_start_sets_nothing() -> None:
    handler = _Socket()
    handler.fail = True
    with pytest.raises(RuntimeError):
        asyncio.run(handler.open())
    assert handler.nodelay == []
    assert handler.room.events == ["opened", "closed: desktop unavailable"]
