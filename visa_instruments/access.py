"""Who may read and write an instrument through the gateway: from the hub's truth, by peer address.

The gateway knows an instance only by the source address of its connection (`instrument_address`
in the spawner's saved state, set by the backend: `127.77.x.y` for sandbox/qemu, the fixed IP on
OpenStack). The claimed PVA user name is never read. The decision per (instance, instrument):

- WRITE: the owner or a USER-share member holds INSTRUMENT_CONTROL for an experiment of the
  instance's proposal on that instrument, inside its window (`rules.instrument_control`, from the
  catalogue and today's date, not a stale auth_state), or is the instrument's scientist (hub group
  `instrument:<id>`);
- READ: the instance's proposal has an experiment on that instrument, or any member (owner or
  share) is its scientist;
- NONE otherwise, and for every address that is not a running instance's.

`decide` is pure; `HubInstances` reads the hub's database read-only (like `visa_ops.inventory`);
`VisaAccess` stands in for p4p's ACF `Engine` in `p4p.gw.GWHandler` and applies the decisions to
open channels with `channel.access(put=...)`.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import IntEnum
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from jupyterhub import orm
from sqlalchemy import or_, select

from visa_authenticator import rules
from visa_authenticator.catalogue_data import CatalogueData
from visa_collab.roles import ROLE_SCOPES
from visa_collab.roles import Role as MemberRole
from visa_ops.inventory import read_only_engine

log = logging.getLogger("visa_instruments.access")
ADDRESS_KEY = "instrument_address"  # the backends' contract (sandbox, qemu, OpenStack)
SCIENTIST_GROUP = "instrument:{}"


class Level(IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2


@dataclass(frozen=True)
class InstanceView:
    """A running instance as the gateway needs it."""

    owner: str
    server: str
    address: str
    proposal: str = ""
    user_members: tuple[str, ...] = ()  # USER shares: their rights count for writing
    other_members: tuple[str, ...] = ()  # GUEST, SUPPORT shares: they count for reading only

    @property
    def name(self) -> str:
        return f"{self.owner}/{self.server}"


@dataclass(frozen=True)
class HubSnapshot:
    """Running instances by address, and the members of the `instrument:<id>` groups."""

    instances: Mapping[str, InstanceView] = field(default_factory=dict)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def scientists(self, instrument: str) -> frozenset[str]:
        return self.groups.get(SCIENTIST_GROUP.format(instrument), frozenset())


class InstanceSource(Protocol):
    async def snapshot(self) -> HubSnapshot: ...


def may_pilot(person_id: str, proposal: str, instrument: str, catalogue: CatalogueData, today: date,
              days: int) -> bool:
    """The person holds INSTRUMENT_CONTROL for an experiment of `proposal` on `instrument` today."""
    person = catalogue.person(person_id)
    if person is None:
        return False
    return rules.may_pilot(person, catalogue.experiments_of(person_id), proposal, instrument, today, days)


def decide(instance: InstanceView, instrument: str, catalogue: CatalogueData, scientists: frozenset[str],
           today: date, days: int) -> Level:
    """The instance's right on one instrument (module docstring). Pure."""
    writers = (instance.owner, *instance.user_members)
    if scientists.intersection(writers):
        return Level.WRITE
    if instance.proposal and any(may_pilot(p, instance.proposal, instrument, catalogue, today, days)
                                 for p in writers):
        return Level.WRITE
    on_instrument = any(e.instrument_id == instrument
                        for e in catalogue.experiments_of_proposals([instance.proposal]))
    if on_instrument or scientists.intersection(instance.other_members):
        return Level.READ
    return Level.NONE


def decide_all(snapshot: HubSnapshot, instruments: Iterable[str], catalogue: CatalogueData, today: date,
               days: int) -> dict[tuple[str, str], Level]:
    """{(address, instrument): level} for every running instance with an address."""
    out = {}
    for instrument in instruments:
        scientists = snapshot.scientists(instrument)
        for address, instance in snapshot.instances.items():
            out[(address, instrument)] = decide(instance, instrument, catalogue, scientists, today, days)
    return out


# --- the hub's truth, read-only


def _address(state: Any) -> str:
    """`instrument_address` from the spawner's saved state (top level or the backend's dict)."""
    if not isinstance(state, Mapping):
        return ""
    own = state.get("backend") if isinstance(state.get("backend"), Mapping) else {}
    return str(state.get(ADDRESS_KEY) or own.get(ADDRESS_KEY) or "")


def load_snapshot_sync(hub_db_url: str) -> HubSnapshot:
    """Running named servers with an address, their unexpired user shares (shares with groups
    are not read) and the instrument groups."""
    engine = read_only_engine(hub_db_url)
    s, u, share = orm.Spawner, orm.User, orm.Share
    servers = (select(s.id, u.name.label("owner"), s.name, s.user_options, s.state)
               .join(u, s.user_id == u.id).where(s.name != "", s.server_id.is_not(None)))
    now = datetime.now(UTC).replace(tzinfo=None)  # the hub stores naive UTC
    shares = (select(share.spawner_id, u.name, share.__table__.c.scopes).join(u, share.user_id == u.id)
              .where(or_(share.expires_at.is_(None), share.expires_at > now)))
    groups = (select(orm.Group.name, u.name)
              .join(orm.user_group_map, orm.user_group_map.c.group_id == orm.Group.id)
              .join(u, orm.user_group_map.c.user_id == u.id)
              .where(orm.Group.name.like(SCIENTIST_GROUP.format("%"))))
    with engine.connect() as conn:
        rows = conn.execute(servers).all()
        member_rows = conn.execute(shares).all()
        group_rows = conn.execute(groups).all()
    user_scope = ROLE_SCOPES[MemberRole.USER]
    members: dict[int, tuple[list[str], list[str]]] = {}
    for spawner_id, name, scopes in member_rows:
        users, others = members.setdefault(spawner_id, ([], []))
        is_user = any(str(scope).split("!", 1)[0] == user_scope for scope in scopes or ())
        (users if is_user else others).append(name)
    instances = {}
    for row in rows:
        address = _address(row.state)
        if not address:
            continue
        options = row.user_options if isinstance(row.user_options, Mapping) else {}
        users, others = members.get(row.id, ([], []))
        instances[address] = InstanceView(owner=row.owner, server=row.name, address=address,
                                          proposal=str(options.get("proposal") or ""),
                                          user_members=tuple(sorted(users)), other_members=tuple(sorted(others)))
    found: dict[str, set[str]] = {}
    for group, user in group_rows:
        found.setdefault(group, set()).add(user)
    return HubSnapshot(instances=instances, groups={g: frozenset(us) for g, us in found.items()})


class HubInstances:
    """The hub's database as an `InstanceSource`, read in an executor (the loop never waits)."""

    def __init__(self, hub_db_url: str) -> None:
        self.hub_db_url = hub_db_url

    async def snapshot(self) -> HubSnapshot:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(load_snapshot_sync, self.hub_db_url))


# --- in place of p4p's ACF engine


class VisaAccess:
    """`p4p.gw.GWHandler`'s `acf` and `pvlist`: decides from the last evaluated levels.

    p4p calls `compute` (search, channel creation) and `create` (each new channel) on its worker
    threads, so both only read dictionaries under a lock; `apply` (the gateway's loop) swaps in new
    levels and re-applies them to every open channel with `channel.access(put=...)`.
    """

    def __init__(self, prefixes: Mapping[str, str]) -> None:
        self.prefixes = dict(prefixes)  # "D11:" -> "D11"
        self._lock = threading.Lock()
        self._levels: dict[tuple[str, str], Level] = {}
        self._instances: dict[str, InstanceView] = {}
        self._channels: WeakKeyDictionary = WeakKeyDictionary()  # channel -> (host, instrument)
        self._claims: WeakKeyDictionary = WeakKeyDictionary()  # channel -> (peer ip:port, PV, claimed account)
        self.on_channel = None  # called with the PV name of each new channel (the audit's history)
        self.on_unknown = None  # called with the address of a peer that is no known instance (new ones)

    def instrument_of(self, pv: str) -> str | None:
        for prefix, instrument in self.prefixes.items():
            if pv.startswith(prefix):
                return instrument
        return None

    def level(self, host: str, instrument: str | None) -> Level:
        with self._lock:
            return self._levels.get((host, instrument or ""), Level.NONE)

    def instance(self, host: str) -> InstanceView | None:
        with self._lock:
            return self._instances.get(host)

    # the PVList interface: (upstream name, access group, level) or Nones = not even searchable
    def compute(self, pv: bytes, addr: str) -> tuple[str | None, str | None, int | None]:
        name = pv.decode("utf-8", "replace")
        instrument = self.instrument_of(name)
        if instrument is not None and self.on_unknown is not None and self.instance(addr) is None:
            self.on_unknown(addr)  # maybe an instance started since the last pass: look again soon
        if instrument is None or self.level(addr, instrument) < Level.READ:
            return None, None, None
        return name, instrument, 0

    # the ACF Engine interface; `user` and `roles` are what the client claims: never used
    def create(self, channel, group: str, user: str, host: str, level: int, roles=()) -> None:
        put = self.level(host, group) >= Level.WRITE
        channel.access(put=put, rpc=False, uncached=False, audit=True)  # audit: every put, allowed or not
        with self._lock:
            self._channels[channel] = (host, group)
        if self.on_channel is not None:
            name = channel.name
            self.on_channel(name.decode() if isinstance(name, bytes) else name)

    def apply(self, levels: Mapping[tuple[str, str], Level], instances: Mapping[str, InstanceView]) -> bool:
        """New decisions, applied to open channels at once. True when some right was gained (the
        caller then clears p4p's cached search bans)."""
        with self._lock:
            gained = any(level > self._levels.get(key, Level.NONE) for key, level in levels.items())
            self._levels, self._instances = dict(levels), dict(instances)
            channels = [(c, key) for c, key in list(self._channels.items()) if not c.expired]
        for channel, (host, group) in channels:
            channel.access(put=self.level(host, group) >= Level.WRITE)
        return gained

    def remember(self, channel, peer: str, pv: str, account: str) -> None:
        """What the channel's client claimed, to read p4p's audit lines back unambiguously."""
        with self._lock:
            self._claims[channel] = (peer, pv, account)

    def claimed(self, peer: str, pv: str, account: str) -> bool:
        """A live channel from `peer` (ip:port) to `pv` whose client claimed `account`."""
        with self._lock:
            return any(claim == (peer, pv, account) for c, claim in list(self._claims.items()) if not c.expired)

    def may_write(self, peer: str, pv: str) -> bool:
        """The decision in force for a put from `peer` (ip[:port]) to `pv`, for the audit."""
        return self.level(peer.rsplit(":", 1)[0], self.instrument_of(pv)) >= Level.WRITE

    def open_channels(self) -> int:
        with self._lock:
            return sum(1 for c in list(self._channels) if not c.expired)
