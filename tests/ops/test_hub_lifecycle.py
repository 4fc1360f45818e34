"""The whole chain on a real hub: the visa-ops service, started by the hub, sees a sandbox
instance past its lifetime (its clock moved 15 days ahead by VISA_OPS_CLOCK_OFFSET, which only
tests set), e-mails the warning through the demo's SMTP sink, deletes the instance through the
hub's REST API and audits it."""
from __future__ import annotations

import json
import mailbox
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubtools import Hub, demo_state, login_factory, wait_for

DAY = 86400


@pytest.fixture(scope="module")
def ops_hub() -> Iterator[Hub]:
    state = next(gen := demo_state())
    hub = Hub(state, extra_env={
        "VISA_OPS_CLOCK_OFFSET": str(15 * DAY), "VISA_OPS_SWEEP_INTERVAL": "1",
        "VISA_OPS_POLICY": json.dumps({"minimum_notice_hours": 0}),
    }).start()
    try:
        yield hub
    finally:
        try:
            hub.stop_all_servers()
        finally:
            hub.stop()
            next(gen, None)


def audit_rows(state: Path) -> list[dict]:
    with sqlite3.connect(state / "visa_ops.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM visa_ops_audit ORDER BY id")]


@pytest.mark.root
def test_instance_past_its_lifetime_is_warned_then_deleted_through_the_hub(ops_hub: Hub) -> None:
    login = login_factory(ops_hub)
    r = login("alice").new_instance(name="Old analysis", proposal="P-2026-011", plan="sandbox-small",
                                    screen="1280x720", keyboard="us")
    assert r.status_code == 302, r.text[:500]
    server = r.headers["location"].rsplit("/", 1)[1]
    # no wait until it is ready: with the clock 15 days ahead and a short sweep interval, the sweep
    # may warn and delete it while Jupyter is still starting (a lifetime counts from creation)

    wait_for(lambda: ops_hub.server_model("alice", server) is None, 120,
             f"alice/{server} deleted by the sweep (log: {ops_hub.log_path})")
    rows = [r for r in audit_rows(ops_hub.state) if (r["owner"], r["server"]) == ("alice", server)]
    kinds = [(r["actor"], r["action"], r["reason"], r["outcome"]) for r in rows]
    assert ("visa-ops", "warn", "lifetime", "ok") in kinds, kinds
    assert ("visa-ops", "delete", "lifetime", "ok") in kinds, kinds
    assert kinds.index(("visa-ops", "warn", "lifetime", "ok")) < kinds.index(("visa-ops", "delete", "lifetime", "ok"))
    # the warning went out through a real SMTP server (the demo's sink) to the catalogue's address
    box = mailbox.Maildir(ops_hub.state / "outbox", create=False)
    warnings = [m for m in box if m["To"] == "alice.martin@example.org" and "end of its lifetime" in m["Subject"]]
    assert len(warnings) == 1, [m["Subject"] for m in box]
