"""A course's broadcast is kept in the training service's database (issue 19): it survives a restart
of the service (a new store over the same file), is replaced and cleared with ids never reused, and
expires at the course end or after the trainer's minutes. The schema is the migrations' (Alembic)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from visa_training.store import VERSION_TABLE, Store, metadata

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
COURSE_END = NOW + timedelta(days=1)


def test_a_broadcast_survives_a_restart_is_replaced_cleared_and_expires(tmp_path) -> None:
    url, clock = f"sqlite:///{tmp_path / 't.sqlite'}", [NOW]
    first = Store.from_url(url, b"k" * 32, clock=lambda: clock[0])
    sent = first.set_broadcast_sync("py", "Open notebook 2", "tina", COURSE_END)
    assert sent == {"id": sent["id"], "text": "Open notebook 2", "from": "tina", "at": "2026-12-03T10:00:00Z",
                    "expires_at": "2026-12-04T10:00:00Z"}
    assert first.broadcast_sync("other") is None
    first.engine.dispose()  # the service stops

    again = Store.from_url(url, b"k" * 32, clock=lambda: clock[0])  # and starts over the same database
    assert again.broadcast_sync("py") == sent
    with again.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert [d for d in diff if d[0] != "remove_table" or d[1].name != VERSION_TABLE] == []
    brk = again.set_broadcast_sync("py", "Break: 10 min", "tina", NOW + timedelta(minutes=10))
    assert brk["id"] > sent["id"] and again.broadcast_sync("py") == brk  # replaced, not stacked
    clock[0] = NOW + timedelta(minutes=10)
    assert again.broadcast_sync("py") is None  # expired, and the replaced one does not come back
    last = again.set_broadcast_sync("py", "Back to notebook 2", "tina", COURSE_END)
    assert again.set_broadcast_sync("py", "", "tina", COURSE_END) is None and again.broadcast_sync("py") is None
    again.set_broadcast_sync("py", "One more", "tina", COURSE_END)
    clock[0] = COURSE_END
    assert again.broadcast_sync("py") is None  # the course's end ends its message
    assert again.set_broadcast_sync("py", "x", "tina", COURSE_END + timedelta(days=1))["id"] > last["id"] + 1
    again.engine.dispose()
