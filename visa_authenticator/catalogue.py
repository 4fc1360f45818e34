"""The facility catalogue: what the user office knows, and the protocol to ask it.

The model is frozen dataclasses so a value fetched once can be cached and shared
between concurrent logins without copying. The `Catalogue` protocol is kept to the
few questions the entitlement rules need, so that a SQL provider is a handful of
queries and nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import ClassVar

from traitlets.config import LoggingConfigurable

# A person id is the JupyterHub user name: JupyterHub lower-cases names and forbids
# "/" and surrounding spaces; we are stricter so the name is also a safe URL/path part.
PERSON_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")
# Proposal, experiment and instrument ids end up in group names and directory names.
RECORD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Role(str, Enum):
    """Facility roles (who a person is at the facility), as in VISA."""

    USER = "USER"
    STAFF = "STAFF"
    INSTRUMENT_SCIENTIST = "INSTRUMENT_SCIENTIST"
    INSTRUMENT_CONTROL = "INSTRUMENT_CONTROL"
    IT_SUPPORT = "IT_SUPPORT"
    SCIENTIFIC_COMPUTING = "SCIENTIFIC_COMPUTING"
    GUEST = "GUEST"
    ADMIN = "ADMIN"


@dataclass(frozen=True)
class RoleGrant:
    """A role held until the end of `expires` (inclusive); None = no end."""

    role: Role
    expires: date | None = None

    def active_on(self, today: date) -> bool:
        return self.expires is None or today <= self.expires


@dataclass(frozen=True)
class Person:
    """A facility account; `id` is the JupyterHub user name.

    `quota` overrides the role-based instance quota (VISA keeps it per user):
    None = from roles, 0 = account pending approval, -1 = unlimited.
    """

    id: str
    name: str
    email: str = ""
    roles: tuple[RoleGrant, ...] = (RoleGrant(Role.USER),)
    quota: int | None = None


@dataclass(frozen=True)
class Proposal:
    """A proposal; its data becomes open data once `public_date` has passed."""

    id: str
    title: str
    doi: str | None = None
    public_date: date | None = None

    def is_open_on(self, today: date) -> bool:
        return self.public_date is not None and self.public_date <= today


@dataclass(frozen=True)
class Experiment:
    """Beam time of one proposal on one instrument, with its team."""

    id: str
    proposal_id: str
    instrument_id: str
    start: date
    end: date
    team: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Instrument:
    """An instrument and the scientists responsible for it."""

    id: str
    name: str
    scientists: tuple[str, ...] = field(default=())


class CatalogueUnavailable(RuntimeError):
    """The catalogue could not answer (database down, file never readable)."""


class Catalogue(LoggingConfigurable):
    """What the entitlement rules need to know about the facility.

    Providers answer with immutable values; "not found" is None or an empty
    tuple, and failures raise (ideally `CatalogueUnavailable`). Batch methods take
    several ids so a provider can answer with one query (SQL `IN`).
    """

    # A provider that already holds everything in memory sets this to False so the
    # authenticator does not put a TTL cache (and its staleness) in front of it.
    cacheable: ClassVar[bool] = True

    async def person(self, person_id: str) -> Person | None:
        """The person with this id (the JupyterHub user name), if any."""
        raise NotImplementedError

    async def experiments_of(self, person_id: str) -> tuple[Experiment, ...]:
        """Experiments whose team includes this person."""
        raise NotImplementedError

    async def instruments_of(self, person_id: str) -> tuple[Instrument, ...]:
        """Instruments this person is an instrument scientist of."""
        raise NotImplementedError

    async def experiments_on(self, instrument_ids: Iterable[str]) -> tuple[Experiment, ...]:
        """Every experiment on these instruments."""
        raise NotImplementedError

    async def experiments_of_proposals(
        self, proposal_ids: Iterable[str]
    ) -> tuple[Experiment, ...]:
        """Every experiment of these proposals (gives a proposal's instruments)."""
        raise NotImplementedError

    async def proposals(self, proposal_ids: Iterable[str]) -> tuple[Proposal, ...]:
        """The proposals with these ids; unknown ids are left out."""
        raise NotImplementedError

    async def open_proposals(self, today: date, limit: int) -> tuple[Proposal, ...]:
        """Up to `limit` proposals whose embargo ended on or before `today`, newest first."""
        raise NotImplementedError
