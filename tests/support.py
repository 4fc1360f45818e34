"""Helpers every test folder shares: a free TCP port, and waiting on a condition with a deadline.

Nothing sleeps a fixed time hoping it is enough: tests poll a condition and fail loudly on timeout.
"""
from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1,
             reraise: type[BaseException] | tuple = ()):
    """Poll `predicate` until it returns something truthy and return that; fail loudly with `what`
    on timeout. Polls fast at first (20 ms, doubling up to `interval`); an exception from the
    predicate counts as "not yet" (the last one is reported) unless it is one of `reraise`."""
    deadline = time.monotonic() + timeout
    delay = min(0.02, interval)
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except reraise:
            raise
        except Exception as e:  # keep polling; report the last error on timeout
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; last error: {last_error!r}")
        time.sleep(delay)
        delay = min(delay * 2, interval)


class ManualClock:
    """A monotonic clock the test moves by hand (`clock.t += seconds`): no test sleeps for a TTL."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t
