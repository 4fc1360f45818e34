"""Generated catalogue records through the loaders, in process: the YAML parser, the file
provider and the SQL provider (SQLite, relaxed tables: rows as a view over another system
could serve them).

Good records sit next to generated ones (wrong types, unicode, HTML, path-traversal ids,
huge and negative numbers, impossible dates, timestamps, nesting, duplicates, dangling
references) and raw YAML texts (deep nesting, huge integers, tags, aliases). Whatever comes:
no exception but the documented ones (`CatalogueFormatError`, `CatalogueUnavailable`) with a
clear message; every skipped record is named in its problem line; the good records are all
there, unchanged.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import date

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import create_engine

from tests.security.conftest import HTML_PAYLOADS, JUNK, TRAVERSAL, fuzz_settings
from visa_authenticator.catalogue import CatalogueUnavailable
from visa_authenticator.catalogue_yaml import CatalogueFormatError, load_yaml, parse_catalogue
from visa_authenticator.file_catalogue import FileCatalogue
from visa_authenticator.sql_catalogue import SqlCatalogue
from visa_authenticator.sql_schema import create_tables, rows_from_document, write_rows

GOOD = {
    "persons": [{"id": "alice", "name": "Alice", "email": "alice@example.org", "roles": ["USER"]},
                {"id": "dave", "name": "Dave",
                 "roles": ["STAFF", {"role": "INSTRUMENT_SCIENTIST", "expires": "2027-01-31"}]}],
    "instruments": [{"id": "D11", "name": "SANS", "scientists": ["dave"]}],
    "proposals": [{"id": "A", "title": "Proposal A", "public_date": "2020-01-01"}],
    "experiments": [{"id": "E1", "proposal": "A", "instrument": "D11", "start": "2026-11-20", "end": "2026-11-26",
                     "team": ["alice"]}],
}
GOOD_IDS = {s: {r["id"] for r in GOOD[s]} for s in GOOD}
SECTIONS = tuple(GOOD)
FIELDS = {
    "persons": ("id", "name", "email", "roles", "quota", "demo_password"),
    "instruments": ("id", "name", "scientists"),
    "proposals": ("id", "title", "doi", "public_date"),
    "experiments": ("id", "proposal", "instrument", "start", "end", "team"),
}

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), JUNK,
    st.sampled_from(["2026-02-30", "2026-13-01", "0000-01-01", "9999-12-31", "2026-1-1", "20261124", "yesterday",
                     "-1", "USER", "ADMIN", "admin ", "P-2026-011", "D11", "alice", "A", "E1", "dave"]),
    st.dates().map(str), st.dates(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
        ["role", "expires", "id"])), inner, max_size=3)), max_leaves=10)
IDS = st.one_of(st.sampled_from([*TRAVERSAL, *HTML_PAYLOADS, "alice", "D11", "A", "E1", "Bob", "a" * 200, "é", ""]),
                JUNK, SCALARS)


@st.composite
def records(draw, section: str):
    """A record of `section`: its own fields with generated values, maybe junk fields, or not a mapping."""
    if draw(st.integers(0, 12)) == 0:
        return draw(VALUES)
    fields = FIELDS[section]
    record = {"id": draw(IDS)} if draw(st.integers(0, 5)) else {}
    for name in draw(st.lists(st.sampled_from(fields[1:]), unique=True)):
        record[name] = draw(VALUES)
    if draw(st.integers(0, 5)) == 0:
        record[draw(st.text(max_size=8))] = draw(VALUES)
    return record


def documents():
    """GOOD with generated records after its own in each section, and the inserted positions."""
    return st.fixed_dictionaries({s: st.lists(records(s), max_size=3) for s in SECTIONS})


def with_extra(extra: dict) -> dict:
    return {s: [*GOOD[s], *extra[s]] for s in SECTIONS}


def check_parsed(doc: dict, extra: dict, data, problems: list[str], source: str, numbered: bool = True) -> None:
    """The good records are there, unchanged; every record left out is named in a problem."""
    good, _ = parse_catalogue(GOOD, "good")
    assert set(good.persons) <= set(data.persons)
    assert set(good.instruments) <= set(data.instruments)
    assert set(good.proposal_list) <= set(data.proposal_list)
    assert set(good.experiments) <= set(data.experiments)
    accepted = {"persons": data.persons, "instruments": data.instruments, "proposals": data.proposal_list,
                "experiments": data.experiments}
    for problem in problems:
        assert problem.startswith(f"{source}: ") and "\n" not in problem and "Traceback" not in problem, problem
    for section in SECTIONS:
        assert len(accepted[section]) == len({r.id for r in accepted[section]})
        kept = len(accepted[section]) - len(GOOD[section])
        skipped = [p for p in problems if p.startswith(f"{source}: {section}")]
        assert kept + len(skipped) == len(extra[section]), (section, extra[section], skipped)
        if numbered:
            for i in range(len(GOOD[section]), len(doc[section])):
                mine = [p for p in skipped if p.startswith(f"{source}: {section}[{i}]")]
                assert len(mine) <= 1, mine


@fuzz_settings(800)
@given(extra=documents())
def test_generated_records_in_a_yaml_document(extra: dict) -> None:
    doc = with_extra(extra)
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return  # not representable in YAML (a generated date beyond what PyYAML writes)
    data, problems = parse_catalogue(load_yaml(text), "cat.yaml")
    check_parsed(doc, extra, data, problems, "cat.yaml")


RAW_TEXTS = st.one_of(
    st.text(max_size=200), st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
    st.sampled_from([
        "persons: " + "[" * 5000 + "]" * 5000, "persons:\n" + "  - " * 3000 + "x",
        "persons:\n  - {id: bob, name: Bob, quota: " + "9" * 5000 + "}",
        "persons:\n  - {id: bob, name: " + "9" * 5000 + "}",
        "persons:\n  - !!python/object:os.system {id: bob}",
        "proposals:\n  - {id: B, title: B, public_date: !!timestamp 2026-01-01 10:00:00}",
        ("experiments:\n  - {id: E2, proposal: A, instrument: D11,\n"
         "     start: !!timestamp 2026-01-01 10:00:00, end: 2026-01-02}"),
        ("experiments:\n  - {id: E2, proposal: A, instrument: D11,\n"
         "     start: 2026-01-01, end: !!timestamp 2026-01-02T10:00:00Z}"),
        "persons:\n  - &a {id: bob, name: Bob, roles: [*a]}", "a: &a [*a, *a]\npersons: *a",
        "persons:\n  - {id: !!binary aGk=, name: x}", "persons:\n  - {? [a]: b}", "persons: !!set {a, b}",
        "persons:\n  - {id: bob, name: Bob, quota: .nan}", "persons:\n  - {id: bob, name: Bob, quota: 0x10}",
        "\x00", "\ufeffpersons: []", "---\n---\n", "%YAML 9.9\n---\n", "persons: {id: alice}",
    ]))


@fuzz_settings(1000)
@given(text=RAW_TEXTS, where=st.sampled_from(["alone", "after"]))
def test_raw_yaml_texts(text: str, where: str) -> None:
    good = yaml.safe_dump(GOOD)
    source = good + "\n" + text if where == "after" else text
    try:
        doc = load_yaml(source)
        _, problems = parse_catalogue(doc, "cat.yaml")
    except CatalogueFormatError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    for problem in problems:
        assert problem.startswith("cat.yaml: ") and "Traceback" not in problem, problem


@fuzz_settings(150)
@given(text=RAW_TEXTS, extra=documents())
def test_the_file_provider_keeps_its_last_good_version(tmp_path_factory, text: str, extra: dict) -> None:
    path = tmp_path_factory.mktemp("cat") / "catalogue.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    cat = FileCatalogue(path=str(path), log=logging.getLogger("fuzz-catalogue"))
    good = cat.data()
    path.write_text(text + "\n# changed\n")
    cat.data()  # a new version or the last good one: never an exception
    try:
        path.write_text(yaml.safe_dump(with_extra(extra), allow_unicode=True))
    except yaml.YAMLError:
        return
    data = cat.data()  # the good records with generated neighbours
    assert {p.id for p in good.persons} <= {p.id for p in data.persons}
    assert {e.id for e in good.experiments} <= {e.id for e in data.experiments}
    assert all(problem.startswith(str(path)) for problem in cat.problems), cat.problems


# -- the SQL provider ------------------------------------------------------------------------------

COLUMN_VALUES = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), JUNK,
                          st.binary(max_size=16), st.sampled_from(["2026-02-30", "2020-13-01", "1999-01-01",
                                                                   "garbage", "2026-11-24 10:00:00", "2020-01-01"]))
SQL_ROWS = {
    "persons": ("id", "name", "email", "quota"), "person_roles": ("person_id", "role", "expires"),
    "instruments": ("id", "name"), "instrument_scientists": ("instrument_id", "person_id"),
    "proposals": ("id", "title", "doi", "public_date"),
    "experiments": ("id", "proposal_id", "instrument_id", "start_date", "end_date"),
    "experiment_team": ("experiment_id", "person_id"),
}
# Bad rows refer to the good records (so they sit next to them in every query) but never
# belong to one: a bad role row of alice's makes alice a bad record, rightly skipped.
ALL_GOOD_IDS = set().union(*GOOD_IDS.values())
OWN_IDS = st.one_of(st.sampled_from(["bob", "B", "E2", "IN5"]), JUNK, COLUMN_VALUES).filter(
    lambda v: not isinstance(v, str) or v.strip() not in ALL_GOOD_IDS)
NEIGHBOUR_IDS = st.one_of(st.sampled_from(sorted(ALL_GOOD_IDS)), OWN_IDS)
OWNING_COLUMN = {"persons": "id", "person_roles": "person_id", "instruments": "id",
                 "instrument_scientists": "instrument_id", "proposals": "id", "experiments": "id",
                 "experiment_team": "experiment_id"}


@st.composite
def sql_rows(draw):
    rows = {}
    for name, columns in SQL_ROWS.items():
        rows[name] = [{c: draw(OWN_IDS if c == OWNING_COLUMN[name] else NEIGHBOUR_IDS if c.endswith("_id")
                               else COLUMN_VALUES) for c in columns} for _ in range(draw(st.integers(0, 2)))]
    return rows


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlcat') / 'catalogue.sqlite'}"
    engine = create_engine(url)
    create_tables(engine, strict=False)
    engine.dispose()
    return url


@fuzz_settings(300)
@given(bad=sql_rows())
@example(bad={  # found by make test: a BLOB id beside text ids could not be sorted (TypeError)
    "persons": [{"id": "bob", "name": None, "email": None, "quota": None}], "person_roles": [], "instruments": [],
    "instrument_scientists": [{"instrument_id": b"", "person_id": "dave"}], "proposals": [], "experiments": [],
    "experiment_team": []})
def test_bad_rows_next_to_good_ones_in_sql(sqlite_url: str, bad: dict) -> None:
    engine = create_engine(sqlite_url)
    md = create_tables(engine, strict=False)
    write_rows(engine, md, rows_from_document(GOOD))
    with engine.begin() as conn:  # raw values of any type, as SQLite keeps them
        for name, rows in bad.items():
            if rows:
                conn.exec_driver_sql(f"INSERT INTO {name} ({', '.join(rows[0])}) VALUES "
                                     f"({', '.join('?' * len(rows[0]))})", [tuple(r.values()) for r in rows])
    engine.dispose()
    cat = SqlCatalogue(url=sqlite_url, log=logging.getLogger("fuzz-catalogue"))
    try:
        async def ask():
            return (await cat.person("alice"), await cat.experiments_of("alice"), await cat.instruments_of("dave"),
                    await cat.proposals(["A"]), await cat.open_proposals(date(2026, 11, 24), 5),
                    await cat.experiments_on(["D11"]), await cat.experiments_of_proposals(["A"]))

        try:
            person, experiments, instruments, proposals, public, on_d11, of_a = asyncio.run(ask())
        except CatalogueUnavailable as e:
            raise AssertionError(f"a bad row made the whole catalogue unavailable: {e}") from None
        good, _ = parse_catalogue(GOOD, "good")
        # the good records may gain neighbours (a valid generated row), never lose anything
        assert person == good.person("alice") or person.id == "alice"
        assert good.experiments_of("alice")[0] in experiments or any(e.id == "E1" for e in experiments)
        assert {i.id for i in instruments} >= {"D11"}
        assert {p.id for p in proposals} == {"A"}
        assert "A" in {p.id for p in public}
        assert "E1" in {e.id for e in on_d11} and "E1" in {e.id for e in of_a}
        for problem in cat.problems:
            assert "Traceback" not in problem and "\n" not in problem, problem
    finally:
        cat.close()
