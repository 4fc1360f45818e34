"""What only the SQL provider has: a database that is slow, unreachable or empty, the worker
pool that keeps the hub's event loop free, the TTL cache in front, the schema and its loader."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, insert
from sqlalchemy.exc import IntegrityError

from tests.authenticator.conftest import CATALOGUE_DB, DEMO_CATALOGUE, NOW, CatalogueUnderTest, IdentityAuthenticator
from tests.authenticator.services import PostgresCluster
from tests.authenticator.test_catalogue_providers import SMALL, login, proposals_of
from tests.support import free_port, wait_for
from visa_authenticator.catalogue import CatalogueUnavailable
from visa_authenticator.file_catalogue import FileCatalogue
from visa_authenticator.sql_catalogue import SqlCatalogue
from visa_authenticator.sql_schema import catalogue_metadata, ddl, main, table


@pytest.fixture
def sql(tmp_path: Path, postgres: PostgresCluster, catalogue_db: str):
    under_test = CatalogueUnderTest("postgresql", tmp_path, postgres, catalogue_db)
    under_test.write(SMALL)
    yield under_test
    under_test.close()


class LoopWatch:
    """Measures how late the event loop wakes up: a blocked loop shows as a long gap."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            self.max_gap = max(self.max_gap, time.monotonic() - t - 0.01)

    def stop(self) -> float:
        self._task.cancel()
        return self.max_gap


def _lock_persons(postgres: PostgresCluster):
    """Another session holds an exclusive lock on `persons`: every read of it waits."""
    conn = postgres.connect(CATALOGUE_DB)
    conn.autocommit = False
    conn.cursor().execute("LOCK TABLE persons IN ACCESS EXCLUSIVE MODE")
    return conn


def _waiting_on_lock(postgres: PostgresCluster) -> bool:
    conn = postgres.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                        (CATALOGUE_DB,))  # fmt: skip
            return cur.fetchone()[0] > 0
    finally:
        conn.close()


async def test_event_loop_stays_responsive_while_a_query_waits(postgres: PostgresCluster, sql) -> None:
    cat = SqlCatalogue(url=sql.db_url, query_timeout=30)
    locker = _lock_persons(postgres)
    try:
        watch = LoopWatch()
        query = asyncio.ensure_future(cat.person("alice"))
        await asyncio.to_thread(wait_for, lambda: _waiting_on_lock(postgres), 10, "the query to wait on the lock")
        for _ in range(20):  # the loop keeps serving other work while the query is stuck
            await asyncio.sleep(0.01)
        assert not query.done()
        locker.rollback()
        person = await asyncio.wait_for(query, 10)
        assert person.name == "Alice"
        assert watch.stop() < 0.1, "the event loop was blocked"
    finally:
        locker.close()
        cat.close()


async def test_query_timeout_is_a_clear_error_and_frees_the_loop(postgres: PostgresCluster, sql) -> None:
    cat = SqlCatalogue(url=sql.db_url, query_timeout=1)
    locker = _lock_persons(postgres)
    try:
        watch = LoopWatch()
        started = time.monotonic()
        with pytest.raises(CatalogueUnavailable, match=r"did not answer within 1 s \(person\)"):
            await cat.person("alice")
        assert time.monotonic() - started < 3
        assert watch.stop() < 0.1
    finally:
        locker.rollback()
        locker.close()
    assert (await cat.person("alice")).name == "Alice"  # the pool recovered
    cat.close()


async def test_unreachable_database_names_it_without_password() -> None:
    cat = SqlCatalogue(url=f"postgresql+psycopg2://visa:s3cret@127.0.0.1:{free_port()}/catalogue", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(CatalogueUnavailable) as e:
        await cat.person("alice")
    assert time.monotonic() - started < 5
    message = str(e.value)
    assert "s3cret" not in message and "visa:***@127.0.0.1" in message
    assert "Connection refused" in message and "(person)" in message
    cat.close()


async def test_missing_tables_are_a_clear_error(postgres: PostgresCluster) -> None:
    cat = SqlCatalogue(url=postgres.create_database("visa_empty"))
    with pytest.raises(CatalogueUnavailable, match=r"UndefinedTable: relation \"person_roles\" does not exist"):
        await cat.person("alice")
    cat.close()


async def test_login_storm_shares_queries_and_ttl_bounds_staleness(sql) -> None:
    auth = sql.authenticator()
    statements: list[str] = []
    event.listen(auth.catalogue_provider.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *a: statements.append(statement))  # fmt: skip
    await login(auth, "alice")
    one_login = len(statements)
    assert 3 <= one_login <= 20
    statements.clear()
    models = await asyncio.gather(*(login(auth, "alice") for _ in range(30)))
    assert statements == [] and all(m == models[0] for m in models)  # answered from the cache

    assert "A" not in proposals_of(await login(auth, "bob"))
    sql.write(SMALL.replace("team: [alice]}", "team: [alice, bob]}"))
    sql.clock.t += 59  # within the TTL (60 s): the cached answer
    assert "A" not in proposals_of(await login(auth, "bob"))
    sql.expire_cache()
    assert proposals_of(await login(auth, "bob"))["A"] == "team"


async def test_bad_record_logged_once_per_interval(sql, caplog: pytest.LogCaptureFixture) -> None:
    sql.write(SMALL.replace("{id: bob, name: Bob}", "{id: bob, name: Bob, roles: [WIZARD]}"))
    cat = SqlCatalogue(url=sql.db_url)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert await cat.person("bob") is None
        assert len([r for r in caplog.records if "WIZARD" in r.getMessage()]) == 1
        cat.clock = lambda: time.monotonic() + 7200
        await cat.person("bob")
        assert len([r for r in caplog.records if "WIZARD" in r.getMessage()]) == 2
    assert any("persons 'bob'" in p for p in cat.problems)
    cat.close()


async def test_strict_tables_loaded_by_the_cli_answer_like_the_file(postgres: PostgresCluster) -> None:
    """`visa-catalogue-sql load --create`: the facility's tables, filled from the demo YAML."""
    url = postgres.create_database("visa_strict")
    assert main(["load", "--create", "--url", url, "--yaml", str(DEMO_CATALOGUE)]) == 0
    auth = IdentityAuthenticator(catalogue_class=SqlCatalogue, enable_auth_state=True)
    auth.catalogue_provider.url = url
    reference = IdentityAuthenticator(catalogue_class=FileCatalogue, enable_auth_state=True)
    reference.catalogue_provider.path = str(DEMO_CATALOGUE)
    for a in (auth, reference):
        a.clock = lambda: NOW
    for name in ("alice", "bob", "carol", "dave", "erin", "admin", "frank", "grace"):
        assert await login(auth, name) == await login(reference, name), name
    # the strict tables refuse what the relaxed ones let through
    engine = create_engine(url)
    experiments = table(catalogue_metadata(), "experiments")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(experiments), [{"id": "E-bad", "proposal_id": "P-2026-011", "instrument_id": "D11",
                                            "start_date": NOW.date(), "end_date": NOW.date().replace(day=1)}])  # fmt: skip
    engine.dispose()
    auth.catalogue_provider.close()


async def test_any_sqlalchemy_url_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalogue.sqlite'}"
    assert main(["load", "--create", "--url", url, "--yaml", str(DEMO_CATALOGUE)]) == 0
    cat = SqlCatalogue(url=url)
    assert (await cat.person("alice")).name == "Alice Martin"
    assert [e.id for e in await cat.experiments_of("alice")] == ["E-2026-0111", "E-2026-0110"]
    assert [p.id for p in await cat.open_proposals(NOW.date(), 10)] == ["P-2021-007"]
    cat.close()


def test_ddl_for_the_dba() -> None:
    text = ddl("postgresql", schema="visa")
    for name in ("persons", "person_roles", "instruments", "instrument_scientists", "proposals", "experiments",
                 "experiment_team"):  # fmt: skip
        assert f"CREATE TABLE visa.{name} (" in text
    assert "CHECK (end_date >= start_date)" in text
    assert "REFERENCES visa.persons (id)" in text
    assert "CREATE INDEX experiment_team_person ON visa.experiment_team (person_id)" in text
