"""Fixtures shared by the authenticator tests: catalogue files, a fixed clock, authenticators."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from traitlets.config import Config

from visa_authenticator.demo import VisaDemoAuthenticator

REPO = Path(__file__).resolve().parents[2]
DEMO_CATALOGUE = REPO / "hub_config" / "demo" / "catalogue.yaml"
# the demo catalogue is written around this day
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """'Today' is the hub's local date; pin the zone so NOW means 2026-11-24 everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[[str], Path]:
    """Write (or rewrite) a catalogue file; each write gets a new mtime."""
    path = tmp_path / "catalogue.yaml"
    counter = {"n": 0}

    def write(text: str) -> Path:
        path.write_text(textwrap.dedent(text))
        counter["n"] += 1
        # make the change visible even on filesystems with coarse timestamps
        os.utime(path, ns=(counter["n"] * 10**9, counter["n"] * 10**9))
        return path

    return write


@pytest.fixture
def demo_auth() -> Callable[..., VisaDemoAuthenticator]:
    """A demo authenticator over a catalogue path, clock pinned to NOW."""

    def make(path: Path = DEMO_CATALOGUE, **traits: object) -> VisaDemoAuthenticator:
        c = Config()
        c.FileCatalogue.path = str(path)
        c.Authenticator.enable_auth_state = True
        auth = VisaDemoAuthenticator(config=c, **traits)
        auth.clock = lambda: NOW
        return auth

    return make
