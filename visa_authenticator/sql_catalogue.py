"""The catalogue read live from a SQL database (SQLAlchemy, any URL).

So a new proposal, a new team member or an expired role takes effect at the next
login or refresh, without an export job. Each question of the `Catalogue`
protocol is a few batched queries over the tables of `sql_schema` (or views a
facility defines with those names and columns).

Rows are validated by the YAML provider's own parser (`parse_catalogue`), fed
with the records a question needs *and everything they refer to*, so both
providers accept and skip exactly the same records with the same messages: a
bad record never grants anything and never hides the good ones.

The hub's event loop never waits for the database: queries run in a small
thread pool of their own, bounded by `query_timeout`. Any failure becomes
`CatalogueUnavailable` with one line naming the database (password hidden),
which the authenticator turns into a 503 page for that person only; the cache in
front (`CachedCatalogue`) never stores a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from traitlets import Dict, Float, Integer, Unicode, validate

from .catalogue import Catalogue, CatalogueUnavailable, Experiment, Instrument, Person, Proposal
from .catalogue_data import CatalogueData
from .catalogue_yaml import parse_catalogue
from .sql_schema import catalogue_metadata, table

T = TypeVar("T")
Doc = dict[str, list[dict[str, Any]]]


def _day(value: Any) -> Any:
    """Dates as `date`; a view may serve timestamps, whose date is what counts."""
    return value.date() if isinstance(value, datetime) else value


def short_error(error: BaseException) -> str:
    """The first line of a driver error, without the SQL text and parameters."""
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}".strip()



def _text_ids(ids: Iterable[Any]) -> list[str]:
    """Distinct text ids, sorted. A bad row may hold NULL, a number or bytes where an id belongs
    (a BLOB in SQLite): no text id of the catalogue can match it, and mixed types cannot be sorted."""
    return sorted({i for i in ids if isinstance(i, str)})

class _Reader:
    """Fetches records and everything they refer to, as a YAML-shaped document.

    One instance per question, on one connection, inside the worker thread.
    """

    def __init__(self, conn: Connection, md: MetaData) -> None:
        self.conn, self.md = conn, md

    def rows(self, name: str, where: Any = None, order: Any = None, limit: int | None = None) -> list[Any]:
        t = table(self.md, name)
        query = select(t)
        if where is not None:
            query = query.where(where(t))
        if order is not None:
            query = query.order_by(*order(t))
        if limit is not None:
            query = query.limit(limit)
        return list(self.conn.execute(query))

    def persons(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = _text_ids(ids)
        if not ids:
            return []
        roles: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows("person_roles", lambda t: t.c.person_id.in_(ids)):
            roles.setdefault(r.person_id, []).append({"role": r.role, "expires": _day(r.expires)})
        return [
            {"id": p.id, "name": p.name, "email": p.email, "quota": p.quota, "roles": roles.get(p.id, [])}
            for p in self.rows("persons", lambda t: t.c.id.in_(ids))
        ]

    def instruments(self, ids: Iterable[str]) -> tuple[list[dict[str, Any]], set[str]]:
        """Instrument records with their scientists, and the person ids they name."""
        ids = _text_ids(ids)
        if not ids:
            return [], set()
        scientists: dict[str, list[str]] = {}
        for r in self.rows("instrument_scientists", lambda t: t.c.instrument_id.in_(ids)):
            scientists.setdefault(r.instrument_id, []).append(r.person_id)
        records = [
            {"id": i.id, "name": i.name, "scientists": scientists.get(i.id, [])}
            for i in self.rows("instruments", lambda t: t.c.id.in_(ids))
        ]
        return records, {p for names in scientists.values() for p in names}

    def proposals(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = _text_ids(ids)
        if not ids:
            return []
        return [self.proposal_record(p) for p in self.rows("proposals", lambda t: t.c.id.in_(ids))]

    @staticmethod
    def proposal_record(p: Any) -> dict[str, Any]:
        return {"id": p.id, "title": p.title, "doi": p.doi, "public_date": _day(p.public_date)}

    def document(
        self, experiments: Sequence[Any] = (), instrument_ids: Iterable[str] = (),
        person_ids: Iterable[str] = (), proposal_ids: Iterable[str] = (),
    ) -> Doc:  # fmt: skip
        """These experiments (rows) plus every record they, and the others asked for, refer to."""
        exp_ids = _text_ids(e.id for e in experiments)
        team: dict[str, list[str]] = {}
        if exp_ids:
            for r in self.rows("experiment_team", lambda t: t.c.experiment_id.in_(exp_ids)):
                team.setdefault(r.experiment_id, []).append(r.person_id)
        instruments, scientists = self.instruments(
            {*instrument_ids, *(e.instrument_id for e in experiments)}
        )
        members = {p for names in team.values() for p in names}
        return {
            "persons": self.persons({*person_ids, *members, *scientists}),
            "instruments": instruments,
            "proposals": self.proposals({*proposal_ids, *(e.proposal_id for e in experiments)}),
            "experiments": [
                {"id": e.id, "proposal": e.proposal_id, "instrument": e.instrument_id,
                 "start": _day(e.start_date), "end": _day(e.end_date), "team": team.get(e.id, [])}
                for e in experiments
            ],  # fmt: skip
        }

    def experiments(self, where: Callable[[Any], Any]) -> Doc:
        return self.document(self.rows("experiments", where))


class SqlCatalogue(Catalogue):
    """Persons, proposals, experiments and instruments queried live from SQL."""

    url = Unicode(
        "",
        config=True,
        help="""SQLAlchemy URL of the catalogue database, e.g.
        `postgresql+psycopg2://visa:SECRET@userdb.example/useroffice`.

        Tables or views: docs/identity.md (`visa-catalogue-sql ddl` prints them).
        Use a read-only account: the hub only ever runs SELECT.
        """,
    )
    db_schema = Unicode(
        "",
        config=True,
        help="Database schema holding the catalogue tables or views (empty: the default one).",
    )
    query_timeout = Float(
        10.0,
        config=True,
        help="""Seconds one catalogue question may take before the login is answered
        with "catalogue unavailable" (503). On PostgreSQL it is also the server-side
        statement_timeout, so a stuck query frees its connection.""",
    )
    connect_timeout = Float(
        5.0,
        config=True,
        help="Seconds to wait for a connection to the database (PostgreSQL, MySQL, SQLite).",
    )
    pool_size = Integer(
        4,
        config=True,
        help="""Connections (and worker threads) used for catalogue queries.

        Queries never run on the hub's event loop; this bounds how many run at once.
        The TTL cache in front shares one query between concurrent identical questions.""",
    )
    engine_kwargs = Dict(
        config=True,
        help="Extra keyword arguments for `sqlalchemy.create_engine` (e.g. connect_args for TLS).",
    )
    problem_log_interval = Float(
        3600.0,
        config=True,
        help="""A bad record is logged when first seen and again at most this often
        (seconds), not at every login that touches it.""",
    )

    @validate("pool_size")
    def _validate_pool_size(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise ValueError("SqlCatalogue.pool_size must be at least 1")
        return proposal["value"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._md = catalogue_metadata(self.db_schema or None, strict=False)
        self._logged: dict[str, float] = {}
        self.clock: Callable[[], float] = time.monotonic

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            if not self.url:
                raise CatalogueUnavailable("SqlCatalogue.url is not set")
            self._engine = create_engine(self.url, **self._engine_options())
        return self._engine

    @property
    def source(self) -> str:
        """The database, as named in log lines (password hidden)."""
        try:
            return self.engine.url.render_as_string(hide_password=True)
        except Exception:
            return "(catalogue database)"

    def _engine_options(self) -> dict[str, Any]:
        """Timeouts per driver, so an unreachable or stuck database fails in bounded time."""
        options: dict[str, Any] = {"pool_pre_ping": True}
        connect_args: dict[str, Any] = {}
        backend = self.url.split(":", 1)[0].split("+", 1)[0]
        if backend == "postgresql":
            connect_args["connect_timeout"] = max(1, round(self.connect_timeout))
            connect_args["options"] = f"-c statement_timeout={int(self.query_timeout * 1000)}"
            options.update(pool_size=self.pool_size, max_overflow=0)
        elif backend == "mysql":
            connect_args["connect_timeout"] = max(1, round(self.connect_timeout))
        elif backend == "sqlite":
            connect_args["timeout"] = self.connect_timeout
            connect_args["check_same_thread"] = False
        extra = dict(self.engine_kwargs)
        connect_args.update(extra.pop("connect_args", {}))
        options.update(extra)
        options["connect_args"] = connect_args
        return options

    def close(self) -> None:
        """Release connections and threads (tests, hub shutdown)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    async def _ask(self, what: str, question: Callable[[_Reader], Doc], answer: Callable[[CatalogueData], T]) -> T:
        """Run one question in the worker pool; validate its records; answer from them."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="visa-catalogue-sql")
        engine, source = self.engine, self.source

        def work() -> tuple[T, list[str]]:
            with engine.connect() as conn:
                doc = question(_Reader(conn, self._md))
            data, problems = parse_catalogue(doc, source, numbered=False)
            return answer(data), problems

        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        try:
            result, problems = await asyncio.wait_for(future, self.query_timeout)
        except TimeoutError:
            raise CatalogueUnavailable(
                f"catalogue database {source} did not answer within {self.query_timeout:g} s ({what})"
            ) from None
        except SQLAlchemyError as e:
            raise CatalogueUnavailable(
                f"catalogue database {source} failed ({what}): {short_error(e)}"
            ) from None
        self._report(problems)
        return result

    def _report(self, problems: list[str]) -> None:
        now = self.clock()
        for problem in problems:
            last = self._logged.get(problem)
            if last is None or now - last >= self.problem_log_interval:
                self.log.warning("Catalogue: %s", problem)
                if len(self._logged) >= 10000:
                    self._logged.clear()
                self._logged[problem] = now

    @property
    def problems(self) -> tuple[str, ...]:
        """Bad records seen so far (most recent last)."""
        return tuple(self._logged)

    # -- the Catalogue protocol ----------------------------------------------------------------

    async def person(self, person_id: str) -> Person | None:
        return await self._ask(
            "person",
            lambda r: {"persons": r.persons([person_id])},
            lambda d: d.person(person_id),
        )

    async def experiments_of(self, person_id: str) -> tuple[Experiment, ...]:
        def question(r: _Reader) -> Doc:
            team = table(r.md, "experiment_team")
            mine = select(team.c.experiment_id).where(team.c.person_id == person_id)
            return r.experiments(lambda t: t.c.id.in_(mine))

        return await self._ask("experiments_of", question, lambda d: d.experiments_of(person_id))

    async def instruments_of(self, person_id: str) -> tuple[Instrument, ...]:
        def question(r: _Reader) -> Doc:
            rows = r.rows("instrument_scientists", lambda t: t.c.person_id == person_id)
            return r.document(instrument_ids=[row.instrument_id for row in rows])

        return await self._ask("instruments_of", question, lambda d: d.instruments_of(person_id))

    async def experiments_on(self, instrument_ids: Iterable[str]) -> tuple[Experiment, ...]:
        ids = _text_ids(instrument_ids)
        if not ids:
            return ()
        return await self._ask(
            "experiments_on",
            lambda r: r.experiments(lambda t: t.c.instrument_id.in_(ids)),
            lambda d: d.experiments_on(ids),
        )

    async def experiments_of_proposals(self, proposal_ids: Iterable[str]) -> tuple[Experiment, ...]:
        ids = _text_ids(proposal_ids)
        if not ids:
            return ()
        return await self._ask(
            "experiments_of_proposals",
            lambda r: r.experiments(lambda t: t.c.proposal_id.in_(ids)),
            lambda d: d.experiments_of_proposals(ids),
        )

    async def proposals(self, proposal_ids: Iterable[str]) -> tuple[Proposal, ...]:
        ids = _text_ids(proposal_ids)
        if not ids:
            return ()
        return await self._ask(
            "proposals", lambda r: {"proposals": r.proposals(ids)}, lambda d: d.proposals(ids)
        )

    async def open_proposals(self, today: date, limit: int) -> tuple[Proposal, ...]:
        if limit <= 0:
            return ()

        def question(r: _Reader) -> Doc:
            # a bad row is skipped after the LIMIT: ask for a few more than needed
            rows = r.rows(
                "proposals",
                lambda t: t.c.public_date <= today,
                lambda t: (t.c.public_date.desc(), t.c.id.desc()),
                limit + 20,
            )
            return {"proposals": [r.proposal_record(p) for p in rows]}

        return await self._ask("open_proposals", question, lambda d: d.open_proposals(today, limit))
