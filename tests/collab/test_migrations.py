"""The collaboration tables under Alembic, on SQLite and on PostgreSQL: databases written before
Alembic (``visa_collab_schema`` 1 and 2) are recognised and upgraded with every row kept, new ones
get the newest revision, newer ones are refused; the runner serves any service's tables."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from tests.authenticator.services import PostgresCluster
from tests.collab import legacy_collab_db as legacy
from tests.collab.conftest import COLLAB_CONFIG
from tests.collab.helpers import Person
from tests.hubtools import DEMO_CONFIG, Hub, make_demo_data, make_state_dir
from tests.support import free_port
from visa_collab import db, migrate

T0 = datetime(2026, 11, 24, 12, 0, 0)






def insert(conn, table, rows: list[dict]) -> None:
    for row in rows:  # one by one: an executemany would take every row's columns from the first
        conn.execute(table.insert().values(**row))


def write_rows(engine: Engine) -> None:
    """What a service in use holds: grants (active, revoked), invitations, requests, settings, audit."""
    with engine.begin() as conn:
        insert(conn, legacy.grants, [
            dict(owner="alice", server="run", member="bob", role="guest", granted_by="alice", source="direct",
                 created_at=T0),
            dict(owner="alice", server="run", member="carol", role="user", granted_by="alice", source="invitation",
                 created_at=T0 + timedelta(minutes=1), revoked_at=T0 + timedelta(hours=2), revoked_by="visa-collab",
                 revoke_reason="left the team of proposal P-1 — «déjà»"),
            dict(owner="dave", server="fit", member="erin", role="support", granted_by="facility role",
                 source="policy", created_at=T0 + timedelta(days=1)),
        ])
        insert(conn, legacy.invitations, [
            dict(owner="alice", server="run", role="guest", code_hash="a" * 64, created_by="alice", created_at=T0,
                 expires_at=T0 + timedelta(days=1), max_uses=3, uses=1),
        ])
        insert(conn, legacy.requests, [
            dict(owner="alice", server="run", requester="erin", status="pending", created_at=T0),
            dict(owner="alice", server="run", requester="dave", status="full", created_at=T0,
                 decided_at=T0 + timedelta(seconds=30), decided_by="alice"),
        ])
        insert(conn, legacy.settings, [
            dict(owner="alice", server="run", owner_away="support-walk-in", updated_at=T0, updated_by="alice"),
        ])
        insert(conn, legacy.audit, [
            dict(owner="alice", server="run", at=T0 + timedelta(seconds=i), actor="alice", action=action,
                 member=member, role=role, granted_by="alice", outcome=outcome,
                 detail=json.dumps(detail, sort_keys=True), source=source)
            for i, (action, member, role, outcome, detail, source) in enumerate([
                ("grant", "bob", "guest", "ok", {"previous_role": None}, "service"),
                ("grant", "mallory", "user", "refused", {"reason": "Not on proposal P-1."}, "service"),
                ("connect", "bob", "guest", "ok", {"channel": "desktop"}, "instance"),
                ("disconnect", "bob", "guest", "ok", {"channel": "desktop", "dropped_input": 12}, "instance"),
            ])
        ])


def snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every table, in key order."""
    with engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                for t in legacy.metadata.sorted_tables if t is not legacy.schema}


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return migrate.current_revision(conn, db.VERSION_TABLE)


def model_differences(engine: Engine) -> list:
    """What Alembic's autogenerate would change to make the database match `db.metadata`."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": db.VERSION_TABLE,
                                                     "include_name": migrate.own_tables(db.metadata)})
        return compare_metadata(ctx, db.metadata)


@pytest.mark.parametrize("old_version, revision_seen", [(2, "0002"), (1, "0001")])
def test_a_database_written_before_alembic_is_upgraded_with_every_row(new_engine, old_version, revision_seen) -> None:
    engine = new_engine()
    legacy.migrate(engine, target=old_version)
    write_rows(engine)
    before = snapshot(engine)
    assert sum(map(len, before.values())) == 11

    assert db.migrate(engine) == revision_seen
    assert revision(engine) == db.head() == "0002"
    assert snapshot(engine) == before  # every grant, invitation, request, setting and audit row, unchanged
    assert model_differences(engine) == []  # indexes included: the same schema as a new database
    # the service reads them as before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM visa_collab_grants WHERE revoked_at IS NULL")).scalar() == 2
    # code from before Alembic, started on this database by mistake, refuses it
    with pytest.raises(legacy.SchemaTooNew, match="version 1000"):
        legacy.migrate(engine)
    assert db.migrate(engine) == "0002"  # and the next start has nothing to do
    assert snapshot(engine) == before


def test_a_new_database_gets_the_newest_revision(new_engine) -> None:
    engine = new_engine()
    assert db.migrate(engine) is None
    assert revision(engine) == db.head()
    assert model_differences(engine) == []
    assert {ix["name"] for ix in inspect(engine).get_indexes(db.audit.name)} == {"ix_visa_collab_audit_instance"}
    assert not inspect(engine).has_table(db.LEGACY_TABLE)
    assert db.migrate(engine) == db.head()


def test_a_database_newer_than_the_code_is_refused_and_left_alone(new_engine) -> None:
    engine = new_engine()
    db.migrate(engine)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {db.VERSION_TABLE} SET version_num = '0003'"))
    with pytest.raises(db.SchemaTooNew, match=r"revision '0003', which this version does not know"):
        db.migrate(engine)
    assert revision(engine) == "0003"


def test_a_newer_database_from_before_alembic_is_refused(new_engine) -> None:
    engine = new_engine()
    legacy.migrate(engine)
    with engine.begin() as conn:
        conn.execute(legacy.schema.update().values(version=3))
    with pytest.raises(db.SchemaTooNew, match="version 3 of its pre-Alembic schema"):
        db.migrate(engine)
    assert not inspect(engine).has_table(db.VERSION_TABLE)  # nothing stamped
    with engine.connect() as conn:
        assert conn.execute(select(legacy.schema.c.version)).scalar() == 3


GENERIC_ENV = "from visa_collab.migrate import run_env\n\nrun_env()\n"
GENERIC_REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None


def upgrade():
    op.create_table("other_things", sa.Column("id", sa.Integer, primary_key=True))
'''


def test_the_runner_serves_another_services_tables_beside_these(new_engine, tmp_path: Path) -> None:
    """visa-ops reuses `migrate.upgrade` with its own scripts and version table, maybe in the same database."""
    scripts = tmp_path / "other_alembic"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(GENERIC_ENV)
    (scripts / "versions" / "a1_things.py").write_text(GENERIC_REVISION)
    engine = new_engine()
    db.migrate(engine)
    assert migrate.upgrade(engine, scripts, "other_alembic_version", name="other") is None
    assert migrate.upgrade(engine, scripts, "other_alembic_version", name="other") == "a1"
    assert db.migrate(engine) == db.head()  # neither reads the other's revision
    tables = set(inspect(engine).get_table_names())
    assert {"other_things", "other_alembic_version", db.VERSION_TABLE, db.grants.name} <= tables
    with engine.connect() as conn:
        assert migrate.current_revision(conn, "other_alembic_version") == "a1"


@pytest.mark.root
@pytest.mark.postgres
def test_the_service_serves_a_pre_alembic_postgresql_database_behind_the_hub(postgres: PostgresCluster) -> None:
    """The real hub starts the service on PostgreSQL (``VISA_COLLAB_DB_URL=postgresql://``) holding
    a database from before Alembic: it upgrades it at start and alice, signed in through the hub,
    reads her instance's audit log written back then (no instance needs to run for that)."""
    url = postgres.create_database("visa_collab_service")
    engine = db.connect(url)
    legacy.migrate(engine)
    write_rows(engine)
    state = make_state_dir("visahub-collab-pg-")
    make_demo_data(DEMO_CONFIG.parent / "catalogue.yaml", state / "data")
    config = state / "hub_config_pg.py"
    config.write_text(
        f"load_subconfig({str(COLLAB_CONFIG)!r})\n"
        "for service in get_config().JupyterHub.services:\n"
        "    if service['name'] == 'visa-collab':\n"
        f"        service['environment']['VISA_COLLAB_DB_URL'] = {url.replace('+psycopg2', '')!r}\n"
    )
    hub = Hub(state, config=config, extra_env={"VISA_COLLAB_PORT": str(free_port())})
    try:
        hub.start()
        r = Person(hub, "alice").collab("GET", "instances/alice/run/audit")
        assert r.status_code == 200, r.text[:300]
        log = r.json()
        assert [(a["action"], a["member"], a["outcome"]) for a in log] == [
            ("disconnect", "bob", "ok"), ("connect", "bob", "ok"), ("grant", "mallory", "refused"), ("grant", "bob", "ok"),
        ]
        assert log[0]["detail"] == {"channel": "desktop", "dropped_input": 12} and log[0]["source"] == "instance"
        assert revision(engine) == db.head()
    finally:
        hub.stop()
        engine.dispose()
        shutil.rmtree(state, ignore_errors=True)
