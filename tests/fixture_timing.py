"""Names the module and session fixtures that are slow to tear down, in the run's summary.

pytest charges a session fixture's teardown to whichever test ran last (`--durations` showed
"103 s teardown tests/test_lint.py"): this says which hub, lab or cluster it really was.
"""
from __future__ import annotations

import time

import pytest

SLOW_TEARDOWN = 2.0  # seconds; faster teardowns are not listed


class TeardownTimes:
    """One run's slow teardowns (a plugin instance per pytest config, so nested runs keep theirs)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.started: dict[int, float] = {}
        self.slow: list[tuple[float, str]] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
        result = yield
        if fixturedef.scope in ("module", "session"):
            key = id(fixturedef)
            # added after the fixture's own teardown, so it runs just before it (last added, first run)
            fixturedef.addfinalizer(lambda: self.started.__setitem__(key, time.monotonic()))
        return result

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> None:
        started = self.started.pop(id(fixturedef), None)
        if started is not None and (seconds := time.monotonic() - started) >= self.threshold:
            self.slow.append((seconds, f"{fixturedef.scope} fixture {fixturedef.argname!r} ({fixturedef.baseid})"))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.slow:
            terminalreporter.write_sep("=", f"fixture teardowns over {self.threshold:g} s")
            for seconds, what in sorted(self.slow, reverse=True):
                terminalreporter.write_line(f"{seconds:7.2f}s {what}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(TeardownTimes(SLOW_TEARDOWN), "visa-teardown-times")
