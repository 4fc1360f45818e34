"""The summary names the fixture whose teardown was slow, not the test that happened to run last."""
from __future__ import annotations

import pytest

from tests import fixture_timing

SUITE = """
import pytest

@pytest.fixture(scope="session")
def lab():
    yield "lab"

@pytest.fixture
def scratch():
    yield "scratch"

def test_uses_them(lab, scratch):
    assert lab and scratch
"""


def test_a_session_fixture_teardown_is_named(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setattr(fixture_timing, "SLOW_TEARDOWN", 0.0)  # every teardown counts as slow
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_inprocess("-p", "tests.fixture_timing")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*fixture teardowns over 0 s*", "*s session fixture 'lab' (*)"])
    assert "scratch" not in result.stdout.str()  # function fixtures are the test's own teardown


def test_fast_teardowns_are_not_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_inprocess("-p", "tests.fixture_timing")
    result.assert_outcomes(passed=1)
    assert "fixture teardowns over" not in result.stdout.str()
