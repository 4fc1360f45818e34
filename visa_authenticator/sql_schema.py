"""The SQL shape of the facility catalogue, and a loader from the YAML catalogue.

Seven tables (or views with these names and columns) that a facility fills, or
maps its user-office database onto. `strict=True` gives the tables a facility
would create: keys, foreign keys, NOT NULL and a date check, so bad data is
refused when written. `strict=False` gives the same columns with no constraint,
which is what a set of views over somebody else's tables looks like: the SQL
provider validates every row itself, exactly as the YAML provider does, so both
shapes behave the same.

`visa-catalogue-sql` (`main`) prints the DDL for a DBA, creates the tables, or
loads a YAML catalogue into them, so the demo data runs on either provider.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    insert,
)
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from .catalogue_data import CatalogueData
from .catalogue_yaml import load_yaml, parse_catalogue

TABLES = (
    "persons",
    "person_roles",
    "instruments",
    "instrument_scientists",
    "proposals",
    "experiments",
    "experiment_team",
)


class Day(TypeDecorator):
    """A DATE column. SQLite keeps any value in any column, and SQLAlchemy's SQLite dates fail
    the whole query on one bad value; there the column is read as stored (ISO text, the same
    storage), so the parser skips the one record and says why."""

    impl = Date
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(String() if dialect.name == "sqlite" else Date())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if dialect.name == "sqlite" and isinstance(value, date):
            return value.isoformat()
        return value


def catalogue_metadata(schema: str | None = None, *, strict: bool = True) -> MetaData:
    """The catalogue tables in one MetaData (optionally in a database schema)."""
    md = MetaData(schema=schema or None)
    prefix = f"{schema}." if schema else ""

    def key(name: str, length: int, target: str | None = None, primary: bool = False) -> Column:
        args: list[Any] = [String(length)]
        if strict and target:
            args.append(ForeignKey(f"{prefix}{target}", ondelete="CASCADE"))
        return Column(name, *args, primary_key=strict and primary, nullable=not strict)

    def col(name: str, type_: Any, required: bool = False) -> Column:
        return Column(name, type_, nullable=not (strict and required))

    Table(
        "persons", md,
        key("id", 128, primary=True),
        col("name", String(512), required=True),
        col("email", String(320)),
        col("quota", Integer),
        comment="Facility accounts; id is the JupyterHub user name (lower case).",
    )  # fmt: skip
    Table(
        "person_roles", md,
        key("person_id", 128, "persons.id", primary=True),
        Column("role", String(64), primary_key=strict, nullable=not strict),
        col("expires", Day()),
        comment="Role grants; no row = no role. expires: last valid day, NULL = no end.",
    )  # fmt: skip
    Table(
        "instruments", md,
        key("id", 64, primary=True),
        col("name", String(512), required=True),
    )  # fmt: skip
    Table(
        "instrument_scientists", md,
        key("instrument_id", 64, "instruments.id", primary=True),
        key("person_id", 128, "persons.id", primary=True),
    )  # fmt: skip
    Table(
        "proposals", md,
        key("id", 64, primary=True),
        col("title", Text, required=True),
        col("doi", String(256)),
        col("public_date", Day()),
        comment="public_date: end of embargo; from that day the proposal is open data.",
    )  # fmt: skip
    experiments = Table(
        "experiments", md,
        key("id", 64, primary=True),
        key("proposal_id", 64, "proposals.id"),
        key("instrument_id", 64, "instruments.id"),
        col("start_date", Day(), required=True),
        col("end_date", Day(), required=True),
    )  # fmt: skip
    if strict:
        experiments.append_constraint(
            CheckConstraint("end_date >= start_date", name="experiments_dates_in_order")
        )
    Table(
        "experiment_team", md,
        key("experiment_id", 64, "experiments.id", primary=True),
        key("person_id", 128, "persons.id", primary=True),
    )  # fmt: skip
    if strict:  # the lookups the provider makes, by member / instrument / proposal / date
        t = md.tables
        Index("experiment_team_person", t[f"{prefix}experiment_team"].c.person_id)
        Index("instrument_scientists_person", t[f"{prefix}instrument_scientists"].c.person_id)
        Index("experiments_proposal", t[f"{prefix}experiments"].c.proposal_id)
        Index("experiments_instrument", t[f"{prefix}experiments"].c.instrument_id)
        Index("proposals_public_date", t[f"{prefix}proposals"].c.public_date)
    return md


def table(md: MetaData, name: str) -> Table:
    """A catalogue table of `md` by its short name, whatever the schema."""
    return md.tables[f"{md.schema}.{name}" if md.schema else name]


def ddl(dialect_name: str = "postgresql", schema: str | None = None) -> str:
    """CREATE statements for the strict tables, for a DBA to review and run."""
    from sqlalchemy.dialects import registry

    dialect = registry.load(dialect_name)()
    md = catalogue_metadata(schema)
    out = []
    for t in md.sorted_tables:
        out.append(str(CreateTable(t).compile(dialect=dialect)).strip() + ";")
        out += [str(CreateIndex(i).compile(dialect=dialect)).strip() + ";" for i in t.indexes]
    return "\n\n".join(out) + "\n"


def create_tables(engine: Engine, schema: str | None = None, *, strict: bool = True) -> MetaData:
    """Create the catalogue tables that do not exist yet."""
    md = catalogue_metadata(schema, strict=strict)
    md.create_all(engine)
    return md


# -- from YAML to rows -------------------------------------------------------------------------


def rows_from_data(data: CatalogueData) -> dict[str, list[dict[str, Any]]]:
    """Rows for each table from a validated catalogue (pure)."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for p in data.persons:
        rows["persons"].append({"id": p.id, "name": p.name, "email": p.email or None, "quota": p.quota})
        rows["person_roles"] += [
            {"person_id": p.id, "role": g.role.value, "expires": g.expires} for g in p.roles
        ]
    for i in data.instruments:
        rows["instruments"].append({"id": i.id, "name": i.name})
        rows["instrument_scientists"] += [{"instrument_id": i.id, "person_id": s} for s in i.scientists]
    for pr in data.proposal_list:
        rows["proposals"].append(
            {"id": pr.id, "title": pr.title, "doi": pr.doi, "public_date": pr.public_date}
        )
    for e in data.experiments:
        rows["experiments"].append(
            {"id": e.id, "proposal_id": e.proposal_id, "instrument_id": e.instrument_id,
             "start_date": e.start, "end_date": e.end}
        )  # fmt: skip
        rows["experiment_team"] += [{"experiment_id": e.id, "person_id": m} for m in e.team]
    return rows


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def _day(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value).strip())


def _items(doc: Mapping[str, Any], section: str) -> list[Mapping[str, Any]]:
    return [r for r in (doc.get(section) or []) if isinstance(r, Mapping)]


def rows_from_document(doc: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows for each table from a YAML document *without validating it* (pure).

    For relaxed (`strict=False`) tables only: tests use it to put bad records in
    a database, the way a view over another system can serve them.
    """
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for p in _items(doc, "persons"):
        pid = _text(p.get("id"))
        rows["persons"].append(
            {"id": pid, "name": _text(p.get("name")), "email": _text(p.get("email")), "quota": p.get("quota")}
        )
        for grant in p.get("roles", ["USER"]) or []:
            role, expires = (grant.get("role"), grant.get("expires")) if isinstance(grant, Mapping) else (grant, None)
            rows["person_roles"].append({"person_id": pid, "role": _text(role), "expires": _day(expires)})
    for i in _items(doc, "instruments"):
        iid = _text(i.get("id"))
        rows["instruments"].append({"id": iid, "name": _text(i.get("name"))})
        rows["instrument_scientists"] += [
            {"instrument_id": iid, "person_id": _text(s)} for s in i.get("scientists") or []
        ]
    for pr in _items(doc, "proposals"):
        rows["proposals"].append(
            {"id": _text(pr.get("id")), "title": _text(pr.get("title")), "doi": _text(pr.get("doi")),
             "public_date": _day(pr.get("public_date"))}
        )  # fmt: skip
    for e in _items(doc, "experiments"):
        eid = _text(e.get("id"))
        rows["experiments"].append(
            {"id": eid, "proposal_id": _text(e.get("proposal")), "instrument_id": _text(e.get("instrument")),
             "start_date": _day(e.get("start")), "end_date": _day(e.get("end"))}
        )  # fmt: skip
        rows["experiment_team"] += [{"experiment_id": eid, "person_id": _text(m)} for m in e.get("team") or []]
    return rows


def write_rows(engine: Engine, md: MetaData, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Replace the catalogue's contents with `rows`, in one transaction."""
    with engine.begin() as conn:
        for name in reversed(TABLES):  # children first
            conn.execute(delete(table(md, name)))
        for name in TABLES:
            if rows.get(name):
                conn.execute(insert(table(md, name)), list(rows[name]))


def load_yaml_catalogue(
    engine: Engine, text: str, source: str, schema: str | None = None
) -> list[str]:
    """Validate a YAML catalogue and replace the SQL catalogue with its good records.

    Returns the problems (the same lines the YAML provider logs); the bad
    records are left out, as the YAML provider would leave them out.
    """
    data, problems = parse_catalogue(load_yaml(text), source)
    write_rows(engine, catalogue_metadata(schema), rows_from_data(data))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """`visa-catalogue-sql`: print the DDL, create the tables, or load a YAML catalogue."""
    parser = argparse.ArgumentParser(prog="visa-catalogue-sql", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_ddl = sub.add_parser("ddl", help="print CREATE TABLE statements")
    p_ddl.add_argument("--dialect", default="postgresql")
    for p in (p_create := sub.add_parser("create", help="create missing tables")), (
        p_load := sub.add_parser("load", help="replace the contents with a YAML catalogue")
    ):
        p.add_argument("--url", default=os.environ.get("VISA_CATALOGUE_DB_URL", ""),
                       help="SQLAlchemy URL (default: $VISA_CATALOGUE_DB_URL)")  # fmt: skip
    p_load.add_argument("--yaml", required=True, help="YAML catalogue file (docs/catalogue.md)")
    p_load.add_argument("--create", action="store_true", help="create missing tables first")
    for p in (p_ddl, p_create, p_load):
        p.add_argument("--schema", default=os.environ.get("VISA_CATALOGUE_DB_SCHEMA") or None)
    args = parser.parse_args(argv)
    if args.command == "ddl":
        sys.stdout.write(ddl(args.dialect, args.schema))
        return 0
    if not args.url:
        parser.error("--url or VISA_CATALOGUE_DB_URL is required")
    engine = create_engine(args.url)
    try:
        if args.command == "create" or args.create:
            create_tables(engine, args.schema)
        if args.command == "load":
            with open(args.yaml, encoding="utf-8") as f:
                problems = load_yaml_catalogue(engine, f.read(), args.yaml, args.schema)
            for problem in problems:
                print(f"skipped: {problem}", file=sys.stderr)
            print(f"loaded {args.yaml} into {engine.url.render_as_string(hide_password=True)}"
                  f" ({len(problems)} problem(s))")  # fmt: skip
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
