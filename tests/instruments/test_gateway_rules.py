"""The gateway's decision without the network: who may read and write which instrument, from the
demo catalogue and the hub's state (a database written by JupyterHub's own ORM); and the audit
lines of p4p's gateway read back, forged account names included."""
from __future__ import annotations

from datetime import date, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from jupyterhub import orm
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tests.instruments.conftest import CATALOGUE
from visa_collab.migrate import own_tables
from visa_instruments.access import HubSnapshot, InstanceView, Level, VisaAccess, decide, load_snapshot_sync
from visa_instruments.audit import AuditLog, ValueHistory, WriteRecord, parse_audit_line, writes
from visa_instruments.audit import metadata as audit_metadata
from visa_instruments.gateway import main

W, R, N = Level.WRITE, Level.READ, Level.NONE
D11_WINDOW = (date(2026, 11, 14), date(2026, 12, 3))  # E-2026-0110 (21..26 Nov) ± 7 days
IN5_OPENS = date(2026, 12, 1)  # E-2026-0420 starts 2026-12-08


def instance(owner, proposal, users=(), others=()) -> InstanceView:
    return InstanceView(owner=owner, server="lab", address="127.77.0.1", proposal=proposal,
                        user_members=tuple(users), other_members=tuple(others))


CASES = [
    # owner, proposal, USER members, other members, instrument, day, D11 scientists, expected
    ("alice", "P-2026-011", (), (), "D11", date(2026, 11, 24), (), W),
    ("alice", "P-2026-011", (), (), "D11", D11_WINDOW[0], (), W),  # first day of the window
    ("alice", "P-2026-011", (), (), "D11", date(2026, 11, 13), (), R),  # the day before
    ("alice", "P-2026-011", (), (), "D11", D11_WINDOW[1], (), W),  # last day
    ("alice", "P-2026-011", (), (), "D11", date(2026, 12, 4), (), R),  # the day after: read only
    ("alice", "P-2026-011", (), (), "IN5", date(2026, 11, 24), (), N),  # no experiment on IN5
    ("alice", "P-2021-007", (), (), "D11", date(2026, 11, 24), (), R),  # her right is for P-2026-011's instance
    ("bob", "P-2026-011", (), (), "D11", date(2026, 11, 24), (), R),  # no INSTRUMENT_CONTROL
    ("bob", "P-2026-011", ("alice",), (), "D11", date(2026, 11, 24), (), W),  # alice as a USER member
    ("bob", "P-2026-011", (), ("alice",), "D11", date(2026, 11, 24), (), R),  # alice as a GUEST: no
    ("carol", "P-2026-042", (), (), "D11", date(2026, 11, 24), (), N),
    ("carol", "P-2026-042", (), (), "IN5", date(2026, 11, 24), (), R),  # IN5's window not open yet
    ("carol", "P-2026-042", (), (), "IN5", IN5_OPENS, (), W),
    ("carol", "P-2026-042", (), ("dave",), "D11", date(2026, 11, 24), ("dave",), R),  # scientist, not USER
    ("carol", "P-2026-042", ("dave",), (), "D11", date(2026, 11, 24), ("dave",), W),
    ("dave", "", (), (), "D11", date(2030, 1, 1), ("dave",), W),  # the scientist, any day
    ("dave", "", (), (), "D11", date(2030, 1, 1), (), N),  # not (or no longer) in instrument:D11
    ("frank", "P-2021-007", (), (), "D11", date(2026, 11, 24), (), R),  # open data measured on D11
]


@pytest.mark.parametrize("owner,proposal,users,others,instrument,day,scientists,expected", CASES)
def test_decision_table(demo_catalogue, owner, proposal, users, others, instrument, day, scientists, expected):
    got = decide(instance(owner, proposal, users, others), instrument, demo_catalogue, frozenset(scientists), day, 7)
    assert got == expected


class Channel:
    """What `VisaAccess` needs of p4p's `_gw.Channel`: its name, `expired`, `access(...)`."""

    def __init__(self, name: bytes) -> None:
        self.name, self.expired, self.perm = name, False, {}

    def access(self, **perm) -> None:
        self.perm.update(perm)


def test_visa_access_ignores_the_claimed_user_and_reapplies_to_open_channels():
    access = VisaAccess({"D11:": "D11"})
    bob = InstanceView(owner="bob", server="lab", address="127.77.0.12")
    access.apply({("127.77.0.12", "D11"): W}, {"127.77.0.12": bob})
    assert access.compute(b"D11:SHUTTER", "127.77.0.12") == ("D11:SHUTTER", "D11", 0)
    assert access.compute(b"IN5:SHUTTER", "127.77.0.12") == (None, None, None)  # not a served prefix
    assert access.compute(b"D11:SHUTTER", "127.0.0.1") == (None, None, None)  # not an instance
    channel = Channel(b"D11:SHUTTER")
    access.create(channel, "D11", "someone-else", "127.77.0.12", 0, ["admin"])
    assert channel.perm == {"put": True, "rpc": False, "uncached": False, "audit": True}
    refused = Channel(b"D11:SHUTTER")
    access.create(refused, "D11", "bob", "127.77.0.99", 0, [])  # the user name is bob's: irrelevant
    assert refused.perm["put"] is False
    gained = access.apply({("127.77.0.12", "D11"): R}, {"127.77.0.12": bob})
    assert channel.perm["put"] is False and gained is False
    assert access.apply({("127.77.0.12", "D11"): W}, {"127.77.0.12": bob}) is True
    assert channel.perm["put"] is True


def test_the_hubs_database_gives_running_instances_by_address_with_members(tmp_path):
    url = f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}"
    engine = create_engine(url)
    orm.Base.metadata.create_all(engine)
    with Session(engine) as db:
        people = {n: orm.User(name=n) for n in ("alice", "bob", "carol", "dave")}
        scientists = orm.Group(name="instrument:D11", users=[people["dave"]])
        db.add_all([*people.values(), scientists, orm.Group(name="role:staff", users=[people["carol"]])])
        db.flush()

        def server(owner, name, state, running=True):
            sp = orm.Spawner(user_id=people[owner].id, name=name, user_options={"proposal": "P-2026-011"},
                             state=state)
            if running:
                sp.server = orm.Server(ip="127.0.0.1", port=1, base_url=f"/user/{owner}/{name}/")
            db.add(sp)
            return sp

        lab = server("bob", "lab", {"instrument_address": "127.77.0.12"})
        server("alice", "vm", {"backend": {"instrument_address": "10.20.0.7"}})  # OpenStack's fixed IP
        server("alice", "off", {"instrument_address": "127.77.0.13"}, running=False)
        server("carol", "old", {})  # started before addresses existed: not an instance to the gateway
        db.flush()
        db.add_all([
            orm.Share(owner=people["bob"], spawner=lab, user=people["alice"],
                      scopes=["access:servers!server=bob/lab", "custom:visa-user!server=bob/lab"]),
            orm.Share(owner=people["bob"], spawner=lab, user=people["carol"],
                      scopes=["access:servers!server=bob/lab", "custom:visa-guest!server=bob/lab"]),
            orm.Share(owner=people["bob"], spawner=lab, user=people["dave"], expires_at=datetime(2020, 1, 1),
                      scopes=["access:servers!server=bob/lab", "custom:visa-user!server=bob/lab"]),
        ])
        db.commit()
    engine.dispose()
    snapshot = load_snapshot_sync(url)
    assert set(snapshot.instances) == {"127.77.0.12", "10.20.0.7"}
    bob = snapshot.instances["127.77.0.12"]
    assert (bob.owner, bob.server, bob.proposal) == ("bob", "lab", "P-2026-011")
    assert (bob.user_members, bob.other_members) == (("alice",), ("carol",))  # dave's share expired
    assert snapshot.instances["10.20.0.7"].owner == "alice"
    assert snapshot.scientists("D11") == {"dave"} and snapshot.scientists("IN5") == frozenset()


LINE = "2026-12-03 12:04:05.123456789 ca/{account}@127.77.0.12:40001 D11:TEMP:SP as D11:TEMP:SP -> double = 280"


def test_audit_lines_are_read_back_even_with_a_forged_account():
    put = parse_audit_line(LINE.format(account="bob"))
    assert (put.peer, put.pv, put.value, put.account) == ("127.77.0.12:40001", "D11:TEMP:SP", "280", "bob")
    assert put.at == datetime(2026, 12, 3, 12, 4, 5, 123456)
    # pretends to be a put of another instance's live channel (which claimed "alice", not "x")
    forged = "x@127.77.0.11:1 D11:SHUTTER as D11:SHUTTER -> 1 "
    known = {("127.77.0.12:40001", "D11:TEMP:SP", forged), ("127.77.0.11:1", "D11:SHUTTER", "alice")}
    put = parse_audit_line(LINE.format(account=forged), lambda peer, pv, account: (peer, pv, account) in known)
    assert (put.peer, put.pv, put.account) == ("127.77.0.12:40001", "D11:TEMP:SP", forged)
    text = parse_audit_line('2026-12-03 12:04:05.1 ca/bob@127.77.0.12:4 D11:RUN:PROPOSAL as D11:RUN:PROPOSAL'
                            ' -> string = "P-2026-011"')
    assert text.value == "P-2026-011"
    assert parse_audit_line("2026-12-03 12:04:05.000000000 ... put audit log overflow") is None


def test_the_audit_table_and_the_old_values(new_engine):
    history = ValueHistory()
    history.seen("D11:TEMP:SP", "295.0", at=100.0)
    history.seen("D11:TEMP:SP", "280.0", at=101.0)
    assert history.before("D11:TEMP:SP", 100.5) == "295.0" and history.before("D11:TEMP:SP", 99) is None
    log = AuditLog(new_engine())  # SQLite, and PostgreSQL (marker postgres)
    for pv, allowed in (("D11:TEMP:SP", True), ("D11:SHUTTER", False)):
        log.record(WriteRecord(at=datetime(2026, 11, 24, 10), peer="127.77.0.12:4", owner="bob", server="lab",
                               instrument="D11", pv=pv, old_value="1", new_value="2", allowed=allowed))
    log.record(WriteRecord(at=datetime(2026, 11, 24, 11), peer="127.77.0.13:4", owner="carol", server="lab",
                           instrument="IN5", pv="IN5:SHUTTER", old_value=None, new_value="1", allowed=False))
    rows = log.rows("D11")
    assert [(r["pv"], r["allowed"]) for r in rows] == [("D11:SHUTTER", False), ("D11:TEMP:SP", True)]
    assert rows[0]["at"] == "2026-11-24T10:00:00.000" and len(log.rows()) == 3
    with log.engine.connect() as conn:  # the Alembic revision makes exactly the table the code uses
        ctx = MigrationContext.configure(conn, opts={"include_name": own_tables(audit_metadata)})
        assert compare_metadata(ctx, audit_metadata) == []
    assert AuditLog(log.engine).rows("IN5")[0]["owner"] == "carol"  # opened again: kept as it is


def test_an_audit_table_made_before_its_revision_is_kept(new_engine):
    engine = new_engine()
    audit_metadata.create_all(engine)  # what the first gateway did
    with engine.begin() as conn:
        conn.execute(writes.insert().values(at=datetime(2026, 11, 24), peer="127.77.0.12:4", owner="bob", server="lab",
                                            instrument="D11", pv="D11:SHUTTER", allowed=False))
    assert [r["owner"] for r in AuditLog(engine).rows("D11")] == ["bob"]


def test_hub_snapshot_without_groups_has_no_scientists():
    assert HubSnapshot().scientists("D11") == frozenset()


@pytest.mark.parametrize("args,message", [
    (["--upstream", "D11"], "--upstream 'D11' is not ID=HOST:PORT"),
    (["--upstream", "D11=127.0.0.1:5075", "--reevaluate-interval", "60"], "must be in (0, 30] s"),
])
def test_the_console_script_refuses_bad_options_in_one_line(capsys, tmp_path, args, message):
    code = main([*args, "--hub-db-url", f"sqlite:///{tmp_path / 'hub.sqlite'}", "--catalogue", str(CATALOGUE)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
