"""visa-ops' tables under Alembic on SQLite and PostgreSQL, and the store's round trips."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from tests.ops.conftest import T0, DateClock
from visa_collab import migrate as runner
from visa_ops import store as st


def test_new_database_gets_the_newest_revision_matching_the_tables(new_engine):
    engine = new_engine()
    assert st.migrate(engine) is None
    with engine.connect() as conn:
        assert runner.current_revision(conn, st.VERSION_TABLE) == runner.head(st.ALEMBIC_DIR)
        context = MigrationContext.configure(conn, opts={"include_name": runner.own_tables(st.metadata)})
        diffs = compare_metadata(context, st.metadata)
    # the revisions create exactly the tables and columns the code uses (indexes live in revisions only)
    assert [d for d in diffs if d[0] not in ("remove_index",)] == []
    assert st.migrate(engine) == runner.head(st.ALEMBIC_DIR)  # a second start changes nothing


def test_database_from_before_alembic_is_stamped_and_keeps_its_rows(new_engine):
    engine = new_engine()
    # what the first visa-ops commits made: the tables as they were (no spawner_id yet)
    first = st.metadata.tables["visa_ops_lifecycle"]
    st.metadata.create_all(engine, tables=[t for t in st.metadata.sorted_tables if t is not first])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE visa_ops_lifecycle (owner VARCHAR(255) NOT NULL, server VARCHAR(255) NOT NULL, "
            "created_at TIMESTAMP NOT NULL, unlimited BOOLEAN NOT NULL, extra_days INTEGER NOT NULL, "
            "warned_lifetime_for TIMESTAMP, warned_lifetime_at TIMESTAMP, warned_inactivity_for TIMESTAMP, "
            "warned_inactivity_at TIMESTAMP, deleted_at TIMESTAMP, updated_at TIMESTAMP NOT NULL, "
            "PRIMARY KEY (owner, server))")
        conn.exec_driver_sql("INSERT INTO visa_ops_lifecycle (owner, server, created_at, unlimited, extra_days, "
                             "updated_at) VALUES ('alice', 's1', '2026-03-02 09:00:00', true, 5, "
                             "'2026-03-02 09:00:00')")
    old = st.Store(engine, DateClock())
    old.add_extension_sync("alice", "s1", "alice", 3, "please")
    old.add_audit_sync("root", "delete", "alice", "s0", reason="admin")
    assert st.migrate(engine) == "0001"
    with engine.connect() as conn:
        assert runner.current_revision(conn, st.VERSION_TABLE) == runner.head(st.ALEMBIC_DIR)
        rec = conn.execute(select(st.lifecycle)).one()
        assert (rec.owner, rec.unlimited, rec.extra_days, rec.spawner_id) == ("alice", True, 5, None)
        assert conn.execute(select(st.extensions.c.comment)).scalars().all() == ["please"]
        assert conn.execute(select(st.audit.c.action)).scalars().all() == ["delete"]
        assert "visa_ops_lifecycle" in inspect(conn).get_table_names()


def test_store_round_trips(new_engine):
    engine = new_engine()
    st.migrate(engine)
    clock = DateClock()
    s = st.Store(engine, clock)
    rec = s.upsert_sync("alice", "s1", created_at=T0, unlimited=True)
    assert rec["unlimited"] is True and rec["extra_days"] == 0 and rec["created_at"] == T0
    assert s.add_extra_days_sync("alice", "s1", 4)["extra_days"] == 4
    records = s.ensure_records_sync([("alice", "s1", None), ("bob", "b1", T0, 7)])
    assert set(records) == {("alice", "s1"), ("bob", "b1")} and records[("alice", "s1")]["extra_days"] == 4
    # the same name on another hub server (deleted, made again): a fresh record; gone servers' go
    s.upsert_sync("bob", "b1", spawner_id=7, extra_days=9, warned_lifetime_for=T0, warned_lifetime_at=T0)
    records = s.ensure_records_sync([("alice", "s1", None, 3), ("bob", "b1", T0, 8)], prune=True)
    assert records[("bob", "b1")]["extra_days"] == 0 and records[("bob", "b1")]["warned_lifetime_for"] is None
    assert s.record_sync("bob", "b1")["spawner_id"] == 8 and s.record_sync("alice", "s1")["extra_days"] == 4
    assert set(s.ensure_records_sync([("bob", "b1", T0, 8)], prune=True)) == {("bob", "b1")}
    assert s.upsert_sync("bob", "b1", spawner_id=9)["extra_days"] == 0
    e1 = s.add_extension_sync("alice", "s1", "alice", 3, "why")
    e2 = s.add_extension_sync("alice", "s1", "alice", 5, "again", st.AUTO_ACCEPTED)
    assert e2["decided_by"] == "visa-ops"
    assert s.decide_extension_sync(e1["id"], st.REFUSED, "root", "no")["status"] == st.REFUSED
    assert s.decide_extension_sync(e1["id"], st.ACCEPTED, "root", "yes") is None  # decided once only
    assert s.latest_extensions_sync()[("alice", "s1")]["id"] == e2["id"]
    n = s.add_notification_sync("info", "hello", T0, None, "root")
    assert [x["id"] for x in s.list_notifications_sync(T0)] == [n["id"]]
    assert s.delete_notification_sync(n["id"]) and not s.delete_notification_sync(n["id"])
    s.log_mail_sync("a@b", "subj", "warning-lifetime", "alice", "s1", "sent")
    assert s.mail_rows_sync()[0]["subject"] == "subj"
