"""The demo catalogue (D11 with P-2026-011's experiment on 2026-11-21..26), a manual clock for the
physics and a fixed "now" inside that experiment."""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import pytest

from tests.support import ManualClock
from visa_authenticator.catalogue_data import CatalogueData
from visa_authenticator.file_catalogue import FileCatalogue

CATALOGUE = Path(__file__).resolve().parents[2] / "hub_config" / "demo" / "catalogue.yaml"
DURING_D11_EXPERIMENT = datetime(2026, 11, 24, 10, 30)  # E-2026-0110, P-2026-011 on D11
NOTHING_SCHEDULED = datetime(2026, 12, 1, 10, 30)  # between D11's and IN5's experiments


@pytest.fixture(scope="session")
def demo_catalogue() -> CatalogueData:
    return FileCatalogue(path=str(CATALOGUE), log=logging.getLogger("test")).data()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
