"""The same behaviour from both catalogue providers: the YAML file and PostgreSQL (SqlCatalogue).

Every test runs twice (fixture `catalogue`, params yaml / postgresql) on data written from the
same YAML text: logins, refusals, live changes, bad records and outages.
"""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from tornado import web

from tests.authenticator.conftest import DEMO_CATALOGUE, NOW, CatalogueUnderTest, FakeUser
from visa_authenticator.file_catalogue import FileCatalogue

SMALL = """
persons:
  - {id: alice, name: Alice, roles: [USER, INSTRUMENT_CONTROL]}
  - {id: bob, name: Bob}
  - {id: carol, name: Carol}
  - {id: dave, name: Dave, roles: [USER, {role: INSTRUMENT_SCIENTIST, expires: 2026-11-30}]}
instruments:
  - {id: D11, name: SANS, scientists: [dave]}
  - {id: IN5, name: TOF}
proposals:
  - {id: A, title: Proposal A, public_date: 2029-01-01}
  - {id: B, title: Proposal B}
  - {id: C, title: Proposal C}
  - {id: OLD, title: Old data, public_date: 2020-01-01}
experiments:
  - {id: E1, proposal: A, instrument: D11, start: 2026-11-20, end: 2026-11-26, team: [alice]}
  - {id: E3, proposal: C, instrument: IN5, start: 2026-10-01, end: 2026-10-02, team: [carol]}
"""


def with_lines(base: str, section: str, *records: str) -> str:
    """`base` with records appended at the end of one section."""
    lines = base.strip("\n").splitlines()
    at = lines.index(f"{section}:") + 1
    while at < len(lines) and lines[at].startswith("  "):
        at += 1
    return "\n".join(lines[:at] + [f"  - {r}" for r in records] + lines[at:]) + "\n"


def proposals_of(model: dict) -> dict[str, str]:
    return {p["id"]: p["relation"] for p in model["auth_state"]["visa"]["proposals"]}


async def login(auth, name: str) -> dict:
    return await auth.get_authenticated_user(None, {"username": name})


async def test_demo_catalogue_same_answers_as_the_file(catalogue: CatalogueUnderTest) -> None:
    """Every demo person gets exactly what the reference YAML provider gives them."""
    catalogue.write(DEMO_CATALOGUE.read_text())
    auth = catalogue.authenticator()
    reference = catalogue.authenticator(catalogue_class=FileCatalogue)
    reference.catalogue_provider.path = str(DEMO_CATALOGUE)
    for person in FileCatalogue(path=str(DEMO_CATALOGUE)).data().persons:
        if person.id == "henry":  # expired: refused by both, with the same message
            for a in (auth, reference):
                with pytest.raises(web.HTTPError, match="expired on 2026-10-31"):
                    await login(a, "henry")
            continue
        got, want = await login(auth, person.id), await login(reference, person.id)
        assert got == want, person.id
    alice = await login(auth, "alice")
    assert alice["groups"] == ["proposal:P-2026-011", "role:instrument_control", "role:user"]
    assert proposals_of(alice) == {"P-2026-011": "team", "P-2021-007": "open-data"}
    assert alice["auth_state"]["visa"]["instrument_control"] == ["P-2026-011"]
    dave = await login(auth, "dave")
    assert "instrument:D11" in dave["groups"] and proposals_of(dave)["P-2026-011"] == "instrument-scientist"
    assert (await login(auth, "admin"))["admin"] is True
    assert (await login(auth, "grace"))["auth_state"]["visa"]["quota"] == 0


async def test_unknown_person_refused(catalogue: CatalogueUnderTest) -> None:
    catalogue.write(SMALL)
    with pytest.raises(web.HTTPError) as e:
        await login(catalogue.authenticator(), "zed")
    assert e.value.status_code == 403 and "no account named 'zed'" in e.value.get_message()


async def test_person_added_to_proposal_shows_up_without_restart(catalogue: CatalogueUnderTest) -> None:
    catalogue.write(SMALL)
    auth = catalogue.authenticator()
    model = await login(auth, "bob")
    assert proposals_of(model) == {"OLD": "open-data"} and model["groups"] == ["role:user"]
    user = FakeUser("bob", {**model["auth_state"], "access_token": "kept"})

    # the user office adds bob to proposal B's new experiment
    catalogue.write(with_lines(SMALL, "experiments",
                               "{id: E2, proposal: B, instrument: IN5, start: 2026-12-01, end: 2026-12-03, team: [bob]}"))
    catalogue.expire_cache()
    refreshed = await auth.refresh_user(user)
    assert refreshed["groups"] == ["proposal:B", "role:user"]
    assert proposals_of(refreshed) == {"B": "team", "OLD": "open-data"}
    assert refreshed["auth_state"]["access_token"] == "kept"


async def test_role_expiry_and_removal_take_effect_at_refresh(catalogue: CatalogueUnderTest) -> None:
    catalogue.write(SMALL)
    auth = catalogue.authenticator()
    dave = await login(auth, "dave")
    assert "instrument:D11" in dave["groups"] and "A" in proposals_of(dave)
    user = FakeUser("dave", dave["auth_state"])

    # time passes: the INSTRUMENT_SCIENTIST grant ends on 2026-11-30
    auth.clock = lambda: NOW + timedelta(days=7)
    catalogue.expire_cache()
    later = await auth.refresh_user(user)
    assert later["groups"] == ["role:user"] and "A" not in proposals_of(later)

    # the user office removes dave's roles altogether: log in again (and be refused)
    catalogue.write(SMALL.replace("roles: [USER, {role: INSTRUMENT_SCIENTIST, expires: 2026-11-30}]", "roles: []"))
    catalogue.expire_cache()
    assert await auth.refresh_user(user) is False
    with pytest.raises(web.HTTPError, match="no role yet"):
        await login(auth, "dave")


BAD_RECORDS = [
    # id, section, record, person logging in, expected outcome, log fragments (record, problem)
    ("person-missing-name", "persons", "{id: eve}", "eve", "refused", ("'eve'", "missing field 'name'")),
    ("person-unknown-role", "persons", "{id: eve, name: Eve, roles: [SUPERUSER]}", "eve", "refused",
     ("'eve'", "unknown role 'SUPERUSER'")),
    ("person-bad-quota", "persons", "{id: eve, name: Eve, quota: -5}", "eve", "refused",
     ("'eve'", "quota must be an integer >= -1")),
    ("experiment-unknown-instrument", "experiments",
     "{id: E9, proposal: B, instrument: D99, start: 2026-11-01, end: 2026-11-02, team: [alice]}", "alice", "no B",
     ("'E9'", "unknown instrument 'D99'")),
    ("experiment-unknown-proposal", "experiments",
     "{id: E9, proposal: Z, instrument: D11, start: 2026-11-01, end: 2026-11-02, team: [alice]}", "alice", "no B",
     ("'E9'", "unknown proposal 'Z'")),
    ("experiment-dates-reversed", "experiments",
     "{id: E9, proposal: B, instrument: D11, start: 2026-11-05, end: 2026-11-02, team: [alice]}", "alice", "no B",
     ("'E9'", "end 2026-11-02 is before start 2026-11-05")),
    ("experiment-unknown-member", "experiments",
     "{id: E9, proposal: B, instrument: D11, start: 2026-11-01, end: 2026-11-02, team: [alice, zed]}", "alice", "no B",
     ("'E9'", "unknown person 'zed'")),
]  # fmt: skip


@pytest.mark.parametrize("section, record, who, outcome, fragments", [r[1:] for r in BAD_RECORDS],
                         ids=[r[0] for r in BAD_RECORDS])  # fmt: skip
async def test_bad_record_skipped_with_log_line_others_unaffected(
    catalogue: CatalogueUnderTest, caplog: pytest.LogCaptureFixture,
    section: str, record: str, who: str, outcome: str, fragments: tuple[str, ...],
) -> None:  # fmt: skip
    catalogue.write(with_lines(SMALL, section, record))
    auth = catalogue.authenticator()
    with caplog.at_level(logging.WARNING):
        if outcome == "refused":
            with pytest.raises(web.HTTPError, match=f"no account named '{who}'"):
                await login(auth, who)
        else:
            model = await login(auth, who)
            assert "B" not in proposals_of(model) and proposals_of(model)["A"] == "team"
    lines = [r.getMessage() for r in caplog.records if "record skipped" in r.getMessage()]
    assert any(all(f in line for f in fragments) for line in lines), lines
    # everybody else: exactly what they have without the bad record
    catalogue.write(SMALL)
    catalogue.expire_cache()
    clean = {name: await login(auth, name) for name in ("alice", "carol", "dave")}
    catalogue.write(with_lines(SMALL, section, record))
    catalogue.expire_cache()
    for name, model in clean.items():
        if name != who:
            assert await login(auth, name) == model, name


async def test_bad_instrument_takes_its_experiments_along(
    catalogue: CatalogueUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """An instrument naming an unknown scientist is skipped, and so is what runs on it."""
    text = SMALL.replace("{id: IN5, name: TOF}", "{id: IN5, name: TOF, scientists: [zed]}")
    catalogue.write(text)
    with caplog.at_level(logging.WARNING):
        carol = await login(catalogue.authenticator(), "carol")
    assert "C" not in proposals_of(carol)
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "'IN5'" in messages and "unknown person 'zed'" in messages
    assert "'E3'" in messages and "unknown instrument 'IN5'" in messages


async def test_outage_clear_error_nothing_cached_wrong(
    catalogue: CatalogueUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    catalogue.write(SMALL)
    auth = catalogue.authenticator()
    alice = await login(auth, "alice")
    user = FakeUser("alice", alice["auth_state"])
    catalogue.expire_cache()
    with catalogue.outage(), caplog.at_level(logging.WARNING):
        # a logged-in person keeps working on their last entitlements
        kept = await auth.refresh_user(user)
        if catalogue.keeps_last_good:
            assert kept["auth_state"]["visa"] == alice["auth_state"]["visa"]
        else:
            assert kept is True  # "no change": JupyterHub keeps the stored auth_state
        if catalogue.keeps_last_good:
            assert await login(auth, "bob")  # the last good file stays in use
        else:
            with pytest.raises(web.HTTPError) as e:
                await login(auth, "bob")
            assert e.value.status_code == 503 and "catalogue is unavailable" in e.value.get_message()
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert errors and all(r.exc_info is None for r in errors)  # one clear line, no traceback
            assert "Catalogue unavailable for bob" in errors[-1].getMessage()
            assert catalogue.db_url.split("@")[1] in errors[-1].getMessage()  # names the database
    # back: the failure was not cached (no expiry needed), and changes show up as before
    assert proposals_of(await login(auth, "bob")) == {"OLD": "open-data"}
    catalogue.write(SMALL.replace("team: [carol]", "team: [carol, bob]"))
    catalogue.expire_cache()
    assert "proposal:C" in (await login(auth, "bob"))["groups"]
