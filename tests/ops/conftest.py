"""visa-ops fixtures: a moved clock, a real hub database file, a stand-in hub REST API, a real
SMTP server process (aiosmtpd) whose Maildir the tests read."""
from __future__ import annotations

import mailbox
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from jupyterhub import orm

from tests.support import ManualClock, free_port, wait_for
from visa_collab.hubapi import HubError
from visa_ops.mail import Mailer
from visa_ops.ops import Operations
from visa_ops.policy import LifecyclePolicy
from visa_ops.store import Store

T0 = datetime(2026, 3, 2, 9, 0, 0)  # naive UTC, as stored


class DateClock:
    """A naive-UTC clock the test moves: `clock.advance(days=2)`."""

    def __init__(self, start: datetime = T0) -> None:
        self.start, self.manual = start, ManualClock(0.0)

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=self.manual())

    def advance(self, **delta: float) -> None:
        self.manual.t += timedelta(**delta).total_seconds()


class FakeHub:
    """The hub REST calls visa-ops makes, recorded; people with e-mail addresses and groups."""

    def __init__(self) -> None:
        self.people: dict[str, dict] = {}
        self.calls: list[tuple] = []
        self.fail_remove: set[tuple[str, str]] = set()

    def add_person(self, name: str, groups=(), admin: bool = False, email: str | None = None) -> None:
        email = f"{name}@example.org" if email is None else email
        self.people[name] = {"kind": "user", "name": name, "groups": list(groups), "admin": admin,
                             "auth_state": {"visa": {"person": {"email": email}}}}

    async def user(self, name: str):
        self.calls.append(("user", name))
        return self.people.get(name)

    async def remove_server(self, owner: str, server: str):
        self.calls.append(("remove", owner, server))
        if (owner, server) in self.fail_remove:
            raise HubError(500, "the hub failed")
        return {}

    async def stop_server(self, owner: str, server: str):
        self.calls.append(("stop", owner, server))
        return {}


class HubDB:
    """A real JupyterHub database file (jupyterhub.orm) the tests fill with people and servers."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        self.session = orm.new_session_factory(self.url)()

    def user(self, name: str, roles=("user",)) -> orm.User:
        u = self.session.query(orm.User).filter_by(name=name).first()
        if u is None:
            u = orm.User(name=name)
            self.session.add(u)
            for role in roles:
                gname = f"role:{role}"
                g = self.session.query(orm.Group).filter_by(name=gname).first() or orm.Group(name=gname)
                u.groups.append(g)
            self.session.commit()
        return u

    def server(self, owner: str, name: str, *, roles=("user",), proposal="p1", plan="small", backend="sandbox",
               started: datetime | None = None, last_activity: datetime | None = None, running: bool = True,
               commit: bool = True) -> orm.Spawner:
        u = self.user(owner, roles)
        sp = orm.Spawner(user=u, name=name, display_name=name.title(),
                         user_options={"proposal": proposal, "plan": plan},
                         state={"identity": {"backend": backend, "owner": owner, "server_name": name},
                                "backend": {"plan": plan}},
                         started=started, last_activity=last_activity)
        if running:
            sp.server = orm.Server(ip="127.0.0.1", port=free_port())
        self.session.add(sp)
        if commit:
            self.session.commit()
        return sp

    def bulk(self, users: int, servers: int, started: datetime) -> None:
        """`users` people (every 10th STAFF) and `servers` instances, inserted in a few statements:
        running (i % 3 == 1), pending (2), stopped (0)."""
        s = self.session
        s.add_all([orm.Group(name="role:user"), orm.Group(name="role:staff")])
        s.commit()
        gid = {g.name: g.id for g in s.query(orm.Group)}
        s.execute(orm.User.__table__.insert(), [{"id": i + 1, "name": f"u{i}", "admin": False} for i in range(users)])
        s.execute(orm.user_group_map.insert(), [
            {"user_id": i + 1, "group_id": gid["role:staff" if i % 10 == 0 else "role:user"]} for i in range(users)])
        s.execute(orm.Server.__table__.insert(), [
            {"id": i + 1, "ip": "127.0.0.1", "port": 20000 + i, "base_url": f"/user/x/s{i}/", "cookie_name": "c"}
            for i in range(servers) if i % 3 == 1])
        s.execute(orm.Spawner.__table__.insert(), [
            {"user_id": i % users + 1, "name": f"s{i}", "display_name": f"S{i}", "server_id": i + 1 if i % 3 == 1 else None,
             "started": started if i % 3 else None, "last_activity": started,
             "user_options": {"proposal": "p1", "plan": "small"},
             "state": {"identity": {"backend": "sandbox"}, "backend": {"plan": "small"}}}
            for i in range(servers)])
        s.commit()

    def remove(self, owner: str, name: str) -> None:
        sp = self.session.query(orm.Spawner).join(orm.User).filter(orm.User.name == owner,
                                                                   orm.Spawner.name == name).one()
        self.session.delete(sp)
        self.session.commit()


@pytest.fixture
def clock() -> DateClock:
    return DateClock()


@pytest.fixture
def hubdb(tmp_path: Path) -> HubDB:
    return HubDB(tmp_path / "jupyterhub.sqlite")


@pytest.fixture
def fakehub() -> FakeHub:
    hub = FakeHub()
    hub.add_person("alice", groups=["role:user"])
    hub.add_person("sam", groups=["role:staff"])
    hub.add_person("root", groups=["role:admin"])
    return hub


@pytest.fixture
def policy(clock: DateClock) -> LifecyclePolicy:
    return LifecyclePolicy(clock=clock, plan_rules={"quick": {"auto_extend_days": 3}})


@pytest.fixture
def ops(tmp_path: Path, clock: DateClock, policy: LifecyclePolicy, fakehub: FakeHub, hubdb: HubDB,
        smtp_url: str) -> Operations:
    store = Store.from_url(f"sqlite:///{tmp_path / 'visa_ops.sqlite'}", clock=clock)
    return Operations(store, policy, fakehub, hubdb.url, Mailer(smtp_url=smtp_url),  # type: ignore[arg-type]
                      public_url="https://visa.example.org")


class Outbox:
    """The Maildir a real aiosmtpd server process writes every message it accepts into."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def messages(self) -> list:
        box = mailbox.Maildir(self.path, create=False)

        def arrival(key: str) -> tuple[int, int]:  # Maildir names: <seconds>.M<microseconds>P<pid>...
            sec, rest = key.split(".", 2)[:2]
            return int(sec), int(rest[1:].split("P")[0]) if rest.startswith("M") else 0

        return [box[k] for k in sorted(box.keys(), key=arrival)]

    def wait_count(self, n: int) -> list:
        return wait_for(lambda: (m if len(m := self.messages()) >= n else None), 10, f"{n} message(s) in the outbox")


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    maildir = tmp_path_factory.mktemp("outbox") / "Maildir"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                             "-c", "aiosmtpd.handlers.Mailbox", str(maildir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        import socket

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_for(listening, 20, "the aiosmtpd server to listen")
        yield f"smtp://127.0.0.1:{port}", maildir
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def smtp_url(smtp_server) -> str:
    return smtp_server[0]


@pytest.fixture
def outbox(smtp_server) -> Outbox:
    """The session's Maildir, emptied for this test."""
    box = Outbox(smtp_server[1])
    if box.path.exists():
        md = mailbox.Maildir(box.path, create=False)
        for key in list(md.keys()):
            md.remove(key)
    return box
