"""Fixtures shared by the authenticator tests: catalogue files, a fixed clock, authenticators; a
PostgreSQL cluster and an OpenID provider of our own (tests marked postgres / root), and the catalogue
under test in both of its forms (YAML file, PostgreSQL) behind one interface."""

from __future__ import annotations

import logging
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from traitlets.config import Config

from tests.authenticator.services import OidcProvider, PostgresCluster
from tests.support import ManualClock
from visa_authenticator.base import VisaAuthenticator
from visa_authenticator.cache import CachedCatalogue
from visa_authenticator.catalogue_yaml import load_yaml
from visa_authenticator.demo import VisaDemoAuthenticator
from visa_authenticator.file_catalogue import FileCatalogue
from visa_authenticator.sql_catalogue import SqlCatalogue
from visa_authenticator.sql_schema import catalogue_metadata, create_tables, rows_from_document, write_rows

REPO = Path(__file__).resolve().parents[2]
DEMO_CATALOGUE = REPO / "hub_config" / "demo" / "catalogue.yaml"
# the demo catalogue is written around this day
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CATALOGUE_DB = "visa_catalogue"


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




@pytest.fixture(scope="session")
def catalogue_db(postgres: PostgresCluster) -> str:
    """A catalogue database with relaxed tables (no constraints): rows as a view could serve them."""
    url = postgres.create_database(CATALOGUE_DB)
    engine = create_engine(url)
    create_tables(engine, strict=False)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def oidc() -> Iterator[OidcProvider]:
    provider = OidcProvider(access_token_ttl=4).start()
    try:
        yield provider
    finally:
        provider.stop()


class IdentityAuthenticator(VisaAuthenticator):
    """Trusts the user name it is given: the identity step is not what these tests are about."""

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> dict[str, Any]:
        return await self.visa_auth_model(self.normalize_username(data["username"]))


class FakeUser:
    """What refresh_user needs from JupyterHub's User: a name and the stored auth_state."""

    def __init__(self, name: str, auth_state: dict[str, Any] | None) -> None:
        self.name, self.auth_state = name, auth_state

    async def get_auth_state(self) -> dict[str, Any] | None:
        return self.auth_state



class CatalogueUnderTest:
    """One catalogue, YAML file or PostgreSQL, written from the same YAML text."""

    def __init__(self, kind: str, tmp_path: Path, postgres: PostgresCluster | None, db_url: str | None) -> None:
        self.kind, self.postgres, self.db_url = kind, postgres, db_url
        self.path = tmp_path / "catalogue.yaml"
        self.clock = ManualClock()
        self.writes = 0
        self.authenticators: list[VisaAuthenticator] = []
        self.keeps_last_good = kind == "yaml"  # a file that disappears: the last version stays in use

    def write(self, text: str) -> None:
        text = textwrap.dedent(text)
        self.writes += 1
        if self.kind == "yaml":
            self.path.write_text(text)
            os.utime(self.path, ns=(self.writes * 10**9, self.writes * 10**9))
        else:
            engine = create_engine(self.db_url)
            try:
                write_rows(engine, catalogue_metadata(strict=False), rows_from_document(load_yaml(text)))
            finally:
                engine.dispose()

    def authenticator(self, **traits: Any) -> IdentityAuthenticator:
        c = Config()
        c.Authenticator.enable_auth_state = True
        if self.kind == "yaml":
            c.IdentityAuthenticator.catalogue_class = FileCatalogue
            c.FileCatalogue.path = str(self.path)
        else:
            c.IdentityAuthenticator.catalogue_class = SqlCatalogue
            c.SqlCatalogue.url = self.db_url
            c.SqlCatalogue.query_timeout = 5
        auth = IdentityAuthenticator(config=c, log=logging.getLogger("visa-test"), **traits)
        auth.clock = lambda: NOW
        if isinstance(auth.catalogue, CachedCatalogue):
            auth.catalogue.clock = self.clock
        self.authenticators.append(auth)
        return auth

    def expire_cache(self) -> None:
        """Time passes beyond the cache's TTL (a no-op for the file, which is never cached)."""
        self.clock.t += 3600

    @contextmanager
    def outage(self) -> Iterator[None]:
        if self.kind == "yaml":
            hidden = self.path.with_suffix(".away")
            self.path.rename(hidden)
            try:
                yield
            finally:
                hidden.rename(self.path)
        else:
            with self.postgres.refusing_connections(CATALOGUE_DB):
                yield

    def close(self) -> None:
        for auth in self.authenticators:
            provider = auth.catalogue_provider
            if isinstance(provider, SqlCatalogue):
                provider.close()


@pytest.fixture(params=["yaml", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalogue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogueUnderTest]:
    if request.param == "yaml":
        under_test = CatalogueUnderTest("yaml", tmp_path, None, None)
    else:
        postgres = request.getfixturevalue("postgres")
        under_test = CatalogueUnderTest("postgresql", tmp_path, postgres, request.getfixturevalue("catalogue_db"))
    try:
        yield under_test
    finally:
        under_test.close()
