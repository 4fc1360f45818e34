"""The service's database access and the hub configuration it adds (migrations: test_migrations.py)."""
from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import event
from traitlets.config import Config

from tests.collab.fakehub import FakeHub
from visa_collab import db, hub_config, instance_relay, roles
from visa_collab.collab import Collaboration

SLOW = 0.25  # seconds each statement takes in the slow database


async def test_a_slow_database_does_not_stop_the_event_loop(tmp_path) -> None:
    """Every statement takes SLOW seconds (a busy PostgreSQL, a lock): the service's loop keeps
    serving meanwhile, because the queries run in the database's worker thread(s)."""
    engine = db.connect(f"sqlite:///{tmp_path / 'slow.sqlite'}")
    db.migrate(engine)
    fake = FakeHub()
    fake.add_person("alice", ["proposal:P-1", "role:user"])
    fake.add_server("alice", "run", "P-1")
    collab = Collaboration(engine, fake)
    assert collab.database.workers == 1  # SQLite: one writer at a time, transactions queue

    @event.listens_for(engine, "before_cursor_execute")
    def _slow(*_args) -> None:
        time.sleep(SLOW)

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    model = await collab.members("alice", "alice", "run")  # grants, policy, invitations, requests
    elapsed = time.monotonic() - started
    ticker.cancel()
    assert model["members"] == [] and model["policy"] == roles.DEFAULT_OWNER_AWAY
    assert elapsed >= 4 * SLOW
    # blocking queries would let the ticker run only between them (a handful of ticks)
    assert ticks >= 20, f"the loop ticked {ticks} times in {elapsed:.2f} s"
    collab.database.close()


async def test_postgresql_gets_psycopg2_and_a_small_pool_and_errors_roll_back(tmp_path) -> None:
    database = db.Database(db.connect("postgresql://nobody@127.0.0.1:1/none"))  # (never connected)
    assert database.engine.dialect.driver == "psycopg2"  # what the production extra installs
    assert database.workers == 4  # below the engine's 5 pooled connections: a worker never waits for one
    database.close()
    database = db.Database(db.connect(f"sqlite:///{tmp_path / 'c.sqlite'}"))
    db.migrate(database.engine)

    def add_then_fail(conn) -> None:
        conn.execute(db.settings.insert().values(owner="a", server="s", owner_away="ask", updated_at=db.now(),
                                                 updated_by="a"))
        raise ValueError("refused half-way")

    with pytest.raises(ValueError, match="half-way"):
        await database.run(add_then_fail)
    assert await database.all(db.settings.select()) == []
    database.close()


def test_apply_extends_the_profile(tmp_path) -> None:
    c = Config()
    c.JupyterHub.services = [{"name": "other", "api_token": "x"}]
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "read:hub"]}]
    c.Spawner.environment = {"KEEP": "1"}
    c.Spawner.oauth_client_allowed_scopes = ["read:users:name!user"]
    hub_config.apply(c, state_dir=tmp_path, port=9999)
    assert set(roles.CUSTOM_SCOPES) <= set(c.JupyterHub.custom_scopes)
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "visa-collab"]
    assert service["url"] == "http://127.0.0.1:9999" and service["oauth_no_confirm"]
    assert service["environment"]["VISA_COLLAB_DB_URL"] == f"sqlite:///{tmp_path / 'visa_collab.sqlite'}"
    assert {s["name"] for s in c.JupyterHub.services} == {"other", "visa-collab"}
    user_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")
    assert set(user_role["scopes"]) == {"self", "read:hub", "access:services!service=visa-collab"}
    service_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "visa-collab")
    assert {"shares", "access:servers", *roles.ROLE_SCOPES.values()} <= set(service_role["scopes"])
    assert c.Spawner.environment["KEEP"] == "1"
    # instances reach the service through the hub's relay, on the hub API URL they are given
    assert c.Spawner.environment["VISA_COLLAB_URL"] is instance_relay.instance_url
    assert instance_relay.handlers[0] in c.JupyterHub.extra_handlers
    assert set(c.Spawner.server_token_scopes) == {"users:activity!user", "access:servers!server", "read:shares!server"}
    allowed = c.Spawner.oauth_client_allowed_scopes
    assert "read:users:name!user" in allowed
    assert "custom:visa-guest!server" in allowed and "custom:visa-admin" in allowed
    # applying twice changes nothing
    before = (list(c.JupyterHub.services), list(c.JupyterHub.load_roles))
    hub_config.apply(c, state_dir=tmp_path, port=9999)
    assert [s["name"] for s in c.JupyterHub.services] == [s["name"] for s in before[0]]
    assert len(c.JupyterHub.load_roles) == len(before[1])


def test_a_callable_allowed_scopes_is_refused(tmp_path) -> None:
    c = Config()
    c.Spawner.oauth_client_allowed_scopes = lambda spawner: []
    with pytest.raises(ValueError, match="must be a list"):
        hub_config.apply(c, state_dir=tmp_path, port=9999)


def test_port_is_kept_in_the_state_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VISA_COLLAB_PORT", raising=False)
    first, second = Config(), Config()
    hub_config.apply(first, state_dir=tmp_path)
    hub_config.apply(second, state_dir=tmp_path)
    assert first.JupyterHub.services[-1]["url"] == second.JupyterHub.services[-1]["url"]
    assert (tmp_path / "visa_collab_port").stat().st_mode & 0o077 == 0
