"""The YAML catalogue: each kind of bad record is skipped with a message naming it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from visa_authenticator.catalogue import CatalogueUnavailable, Role, RoleGrant
from visa_authenticator.file_catalogue import FileCatalogue

GOOD = """
persons:
  - {id: alice, name: Alice, email: alice@example.org, demo_password: pw}
  - {id: dave, name: Dave, roles: [STAFF, {role: INSTRUMENT_SCIENTIST, expires: 2027-01-31}]}
instruments:
  - {id: D11, name: SANS, scientists: [dave]}
proposals:
  - {id: A, title: Proposal A, public_date: 2029-01-01}
experiments:
  - {id: E1, proposal: A, instrument: D11, start: 2026-11-20, end: 2026-11-26, team: [alice]}
"""

# one bad record appended to GOOD's sections; expected fragment of the message
BAD_RECORDS = [
    ("missing-field", "persons", "{id: bob}", "persons[2] 'bob'", "missing field 'name'"),
    ("bad-person-id", "persons", "{id: Bob Smith, name: Bob}", "persons[2] 'Bob Smith'", "not a valid id"),
    ("duplicate-id", "persons", "{id: alice, name: Other Alice}", "persons[2] 'alice'", "duplicate id 'alice'"),
    ("bad-role", "persons", "{id: bob, name: Bob, roles: [SUPERUSER]}", "persons[2] 'bob'", "unknown role 'SUPERUSER'"),
    ("bad-role-expiry", "persons", "{id: bob, name: Bob, roles: [{role: GUEST, expires: soon}]}", "persons[2] 'bob'", "bad date 'soon'"),
    ("typo-in-role-grant", "persons", "{id: bob, name: Bob, roles: [{role: GUEST, expire: 2026-01-01}]}", "persons[2] 'bob'", "unknown field(s) expire"),
    ("bad-quota", "persons", "{id: bob, name: Bob, quota: -5}", "persons[2] 'bob'", "quota must be an integer >= -1"),
    ("unknown-field", "persons", "{id: bob, name: Bob, rols: [ADMIN]}", "persons[2] 'bob'", "unknown field(s) rols"),
    ("not-a-mapping", "persons", "just a string", "persons[2]", "not a mapping"),
    ("unknown-scientist", "instruments", "{id: IN5, name: TOF, scientists: [zed]}", "instruments[1] 'IN5'", "unknown person 'zed'"),
    ("bad-public-date", "proposals", "{id: B, title: B, public_date: 2026-13-01}", "proposals[1] 'B'", "bad date '2026-13-01'"),
    ("unknown-proposal", "experiments", "{id: E2, proposal: Z, instrument: D11, start: 2026-01-01, end: 2026-01-02}", "experiments[1] 'E2'", "unknown proposal 'Z'"),
    ("unknown-instrument", "experiments", "{id: E2, proposal: A, instrument: D99, start: 2026-01-01, end: 2026-01-02}", "experiments[1] 'E2'", "unknown instrument 'D99'"),
    ("unknown-team-member", "experiments", "{id: E2, proposal: A, instrument: D11, start: 2026-01-01, end: 2026-01-02, team: [zed]}", "experiments[1] 'E2'", "unknown person 'zed'"),
    ("end-before-start", "experiments", "{id: E2, proposal: A, instrument: D11, start: 2026-02-01, end: 2026-01-02}", "experiments[1] 'E2'", "end 2026-01-02 is before start 2026-02-01"),
    ("bad-date", "experiments", "{id: E2, proposal: A, instrument: D11, start: 2026-02-30, end: 2026-03-02}", "experiments[1] 'E2'", "bad date '2026-02-30'"),
    ("missing-dates", "experiments", "{id: E2, proposal: A, instrument: D11}", "experiments[1] 'E2'", "missing field 'start'; missing field 'end'"),
]  # fmt: skip


def _with_record(section: str, record: str) -> str:
    lines = GOOD.splitlines()
    at = lines.index(f"{section}:") + 1
    while at < len(lines) and lines[at].startswith("  "):
        at += 1
    return "\n".join(lines[:at] + [f"  - {record}"] + lines[at:]) + "\n"


def _catalogue(path: Path) -> FileCatalogue:
    return FileCatalogue(path=str(path), log=logging.getLogger("test-catalogue"))


def test_good_file_loads(write_yaml: Callable[[str], Path]) -> None:
    cat = _catalogue(write_yaml(GOOD))
    data = cat.data()
    assert cat.problems == ()
    assert [p.id for p in data.persons] == ["alice", "dave"]
    assert data.person("alice").roles == (RoleGrant(Role.USER),)  # roles default to USER
    assert data.person("dave").roles[1] == RoleGrant(Role.INSTRUMENT_SCIENTIST, date(2027, 1, 31))
    assert data.demo_passwords == {"alice": "pw"}
    assert [e.id for e in data.experiments_of("alice")] == ["E1"]
    assert [i.id for i in data.instruments_of("dave")] == ["D11"]
    assert data.proposal("A").public_date == date(2029, 1, 1)


@pytest.mark.parametrize("section, record, label, message", [r[1:] for r in BAD_RECORDS], ids=[r[0] for r in BAD_RECORDS])
async def test_bad_record_skipped_others_unaffected(
    write_yaml: Callable[[str], Path],
    caplog: pytest.LogCaptureFixture,
    section: str,
    record: str,
    label: str,
    message: str,
) -> None:
    path = write_yaml(_with_record(section, record))
    cat = _catalogue(path)
    with caplog.at_level(logging.WARNING, logger="test-catalogue"):
        data = cat.data()
    [problem] = cat.problems
    assert problem.startswith(f"{path}: {label}")
    assert message in problem and problem.endswith("record skipped")
    assert any(problem in r.getMessage() for r in caplog.records)
    # the good records are all there, untouched
    assert [p.id for p in data.persons] == ["alice", "dave"]
    assert data.person("alice").name == "Alice"
    assert [e.id for e in data.experiments] == ["E1"]
    assert [p.id for p in data.proposal_list] == ["A"]
    assert await cat.person("alice") is not None


def test_skipped_record_takes_dependants_with_it(write_yaml: Callable[[str], Path]) -> None:
    """An experiment on a skipped instrument is skipped too, and says why."""
    text = GOOD.replace("scientists: [dave]", "scientists: [dave, zed]")
    cat = _catalogue(write_yaml(text))
    assert cat.data().experiments == ()
    assert len(cat.problems) == 2
    assert "instruments[0] 'D11'" in cat.problems[0] and "unknown person 'zed'" in cat.problems[0]
    assert "experiments[0] 'E1'" in cat.problems[1] and "unknown instrument 'D11'" in cat.problems[1]


def test_skipped_person_has_no_demo_password(write_yaml: Callable[[str], Path]) -> None:
    cat = _catalogue(write_yaml(_with_record("persons", "{id: bob, name: Bob, roles: [X], demo_password: b}")))
    assert "bob" not in cat.data().demo_passwords


def test_unknown_section_reported(write_yaml: Callable[[str], Path]) -> None:
    cat = _catalogue(write_yaml(GOOD + "people: []\n"))
    cat.data()
    assert any("unknown section 'people'" in p for p in cat.problems)


def test_reload_when_file_changes(write_yaml: Callable[[str], Path]) -> None:
    path = write_yaml(GOOD)
    cat = _catalogue(path)
    assert cat.data().person("bob") is None
    write_yaml(_with_record("persons", "{id: bob, name: Bob}"))
    assert cat.data().person("bob").name == "Bob"


def test_unchanged_file_is_not_reparsed(write_yaml: Callable[[str], Path]) -> None:
    cat = _catalogue(write_yaml(GOOD))
    first = cat.data()
    assert cat.data() is first


@pytest.mark.parametrize(
    "broken",
    ["persons: [\n  - {id: alice", "- just\n- a list\n", "persons: {id: alice}\nexperiments: 3\n"],
    ids=["not-yaml", "not-a-mapping", "sections-not-lists"],
)
def test_broken_file_keeps_last_good_version(
    write_yaml: Callable[[str], Path], caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    path = write_yaml(GOOD)
    cat = _catalogue(path)
    good = cat.data()
    with caplog.at_level(logging.WARNING, logger="test-catalogue"):
        write_yaml(broken)
        after = cat.data()
    if broken.startswith("persons: {"):
        # a section that is not a list is reported and ignored: an (empty) valid catalogue
        assert any("'persons' must be a list" in p for p in cat.problems)
        return
    assert after is good
    assert any("keeping the version loaded at" in r.getMessage() for r in caplog.records)
    # reported once, not on every query
    n = len(caplog.records)
    cat.data()
    assert len(caplog.records) == n
    write_yaml(GOOD.replace("name: Alice,", "name: Alice B,"))
    assert cat.data().person("alice").name == "Alice B"


def test_missing_file_keeps_last_good_version(write_yaml: Callable[[str], Path]) -> None:
    path = write_yaml(GOOD)
    cat = _catalogue(path)
    good = cat.data()
    path.unlink()
    assert cat.data() is good


def test_never_loaded_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(CatalogueUnavailable, match="never been loaded"):
        _catalogue(tmp_path / "absent.yaml").data()
    with pytest.raises(CatalogueUnavailable, match="path is not set"):
        FileCatalogue().data()


def test_numeric_ids_are_text(write_yaml: Callable[[str], Path]) -> None:
    cat = _catalogue(write_yaml(GOOD.replace("{id: A, title", "{id: 12345, title").replace("proposal: A", "proposal: 12345")))
    assert cat.problems == ()
    assert cat.data().proposal("12345").title == "Proposal A"


async def test_open_proposals_newest_first_and_limited(write_yaml: Callable[[str], Path]) -> None:
    text = GOOD.replace(
        "  - {id: A, title: Proposal A, public_date: 2029-01-01}",
        "  - {id: A, title: Proposal A, public_date: 2029-01-01}\n"
        "  - {id: O1, title: Old, public_date: 2020-01-01}\n"
        "  - {id: O2, title: Older, public_date: 2019-01-01}\n"
        "  - {id: O3, title: Newest, public_date: 2026-11-24}",
    )
    cat = _catalogue(write_yaml(text))
    today = date(2026, 11, 24)
    assert [p.id for p in await cat.open_proposals(today, 10)] == ["O3", "O1", "O2"]
    assert [p.id for p in await cat.open_proposals(today, 2)] == ["O3", "O1"]
    assert await cat.open_proposals(date(2018, 1, 1), 10) == ()
