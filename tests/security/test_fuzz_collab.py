"""Generated bodies against the collaboration service's API on the running hub: members,
invitations, accepting a code, access requests and their decisions, the owner-away policy,
plus hostile paths and the pages that echo them.

Bodies are JSON of any shape (wrong types, nesting, unicode, HTML payloads, huge and
non-finite numbers) or not JSON at all. Whatever arrives: never a 5xx, API errors are JSON
(never an HTML page reflecting the input), pages escape what they echo, and the hub's shares
(the grants) change only for a body that names a real person and a grantable role; the
invitations and the policy change only for valid values.
"""
from __future__ import annotations

import json
import math
import zlib
from urllib.parse import quote

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from tests.collab.helpers import SERVICE, Person
from tests.hubtools import Hub
from tests.security.conftest import HTML_PAYLOADS, JUNK, TRAVERSAL, fuzz_settings, looks_like_traceback, unescaped

pytestmark = pytest.mark.root

OWNER, PROPOSAL = "alice", "P-2026-011"
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank", "admin")
GRANTABLE = ("user", "guest", "support")
POLICIES = ("lock", "disconnect")

JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), JUNK)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
MEMBERS = st.one_of(st.sampled_from([*PEOPLE, " bob ", "BOB", "bob\x00", "nobody", "../alice", "bob/../carol",
                                     "grace", "henry", ""]), JUNK, JSON_VALUES)
ROLES = st.one_of(st.sampled_from([*GRANTABLE, "owner", " Guest ", "USER", "root", "admin", ""]), JUNK, JSON_VALUES)
NUMBERS = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.sampled_from([59, 60, 86400, 2592000, 2592001, 0, 1,
                                                                                 100, 101, "60", " 100 ", "1e3", True]),
                    JUNK, JSON_VALUES)
# not JSON, not an object, or JSON nested deeper than a parser's recursion allows
RAW_BODIES = st.one_of(st.binary(max_size=64), JUNK.map(str.encode), st.sampled_from([
    b"[" * 100000, b'{"a":' * 50000, b"null", b"[]", b'"member"', b"1e999", b"\xff\xfe{}", b"{'member': 'bob'}",
    b'{"member": "bob", "member": "dave", "role": "guest"}', b"NaN", b"\x00"]))


def bodies(fields: dict[str, st.SearchStrategy], likely: dict[str, st.SearchStrategy] | None = None
           ) -> st.SearchStrategy[bytes]:
    """JSON objects with some of `fields` and junk keys, or a raw body that is not one; with
    `likely`, also objects of plausible values (so that valid bodies are generated too)."""
    objects = st.builds(lambda d, extra: {**extra, **d}, st.fixed_dictionaries({}, optional=fields),
                        st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2))
    choices = [objects] * 3 + ([st.fixed_dictionaries(likely)] * 2 if likely else [])
    return st.one_of(*(c.map(lambda d: json.dumps(d).encode()) for c in choices), RAW_BODIES)


SHORT = st.sampled_from([*PEOPLE, " bob ", "BOB"])
LIKELY_ROLES = st.sampled_from([*GRANTABLE, " Guest ", "USER", "owner"])


def call(who: Person, method: str, path: str, body: bytes | None = None) -> requests.Response:
    """The service's API as its pages' scripts call it (cookie + XSRF header)."""
    return who.s.request(method, f"{who.hub.url}{SERVICE}api/{path}", data=body, timeout=60,
                         headers={"X-XSRFToken": who.service_xsrf(), "Sec-Fetch-Mode": "cors",
                                  "Content-Type": "application/json"})


def check_answer(r: requests.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:1000])
    assert not looks_like_traceback(r.text), r.text[:2000]
    if r.status_code != 204:
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers.get("content-type")
        r.json()


def parse(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _intish(value) -> int | None:
    """What a whole-number field may be given as (int() of it), None if it is not one."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


@pytest.fixture(scope="module")
def server(collab_hub: Hub, person) -> str:
    for name in PEOPLE:
        person(name)
    r = person(OWNER).new_instance(name="Fuzz target", proposal=PROPOSAL, plan="sandbox-small")
    assert r.status_code == 302, r.text[:500]
    name = r.headers["location"].rsplit("/", 1)[1]
    collab_hub.wait_ready(OWNER, name)
    yield name
    collab_hub.delete_server(OWNER, name)


def test_member_bodies(collab_hub: Hub, person, shares_of, server: str) -> None:
    path = f"instances/{OWNER}/{server}/members"
    before = shares_of(OWNER, server)
    assert before == {}
    granted = []

    ran: list[int] = []
    @fuzz_settings(300)
    @given(who=st.sampled_from(["alice"] * 5 + ["bob", "erin"]),
           body=bodies({"member": MEMBERS, "role": ROLES}, {"member": SHORT, "role": LIKELY_ROLES}))
    def send(who: str, body: bytes) -> None:
        ran.append(1)
        r = call(person(who), "POST", path, body)
        check_answer(r)
        after = shares_of(OWNER, server)
        if r.status_code != 201:
            assert after == before, (r.status_code, r.text, after)
            return
        data = parse(body)
        member, role = data.get("member"), data.get("role")
        assert who == OWNER
        assert isinstance(member, str) and member.strip() in PEOPLE, member
        assert isinstance(role, str) and role.strip().lower() in GRANTABLE, role
        assert set(after) == {member.strip()}, after
        granted.append((member.strip(), role))
        r = call(person(OWNER), "DELETE", f"{path}/{quote(member.strip(), safe='')}")
        assert r.status_code in (200, 204), r.text
        assert shares_of(OWNER, server) == before

    send()
    assert len(ran) >= 300, f"hypothesis ran {len(ran)} examples"
    assert granted, "no valid body was generated: the test proves nothing about the other side"
    # the refusals' audit entries (member names as sent) are escaped on the owner's members page
    page = person(OWNER).s.get(f"{collab_hub.url}{SERVICE}instances/{OWNER}/{server}", timeout=60)
    assert page.status_code == 200 and not unescaped(page.text), unescaped(page.text)


def test_role_changes_and_removals(collab_hub: Hub, person, shares_of, server: str) -> None:
    alice = person(OWNER)
    r = call(alice, "POST", f"instances/{OWNER}/{server}/members", b'{"member": "bob", "role": "guest"}')
    assert r.status_code == 201, r.text
    baseline = shares_of(OWNER, server)
    names = st.one_of(st.sampled_from(["bob", "carol", "nobody", "alice", "BOB"]), JUNK).filter(
        lambda s: len(quote(s)) < 4000)  # the proxy refuses longer request lines (431)

    ran: list[int] = []
    @fuzz_settings(150)
    @given(method=st.sampled_from(["PATCH", "PATCH", "DELETE"]), member=names,
           body=bodies({"role": ROLES}, {"role": LIKELY_ROLES}),
           who=st.sampled_from(["alice"] * 4 + ["bob"]))
    def send(method: str, member: str, body: bytes, who: str) -> None:
        ran.append(1)
        if method == "DELETE" and member == "bob" and who == OWNER:
            member = "bob-not-removed"
        r = call(person(who), method, f"instances/{OWNER}/{server}/members/{quote(member, safe='') or '%20'}", body)
        check_answer(r)
        after = shares_of(OWNER, server)
        if r.status_code == 200 and not r.json().get("unchanged"):
            role = parse(body)["role"]
            assert who == OWNER and member == "bob" and role.strip().lower() in GRANTABLE, (member, role)
            back = call(alice, "PATCH", f"instances/{OWNER}/{server}/members/bob", b'{"role": "guest"}')
            assert back.status_code == 200, back.text
            after = shares_of(OWNER, server)
        assert after == baseline, (method, member, r.status_code, r.text, after)

    try:
        send()
        assert len(ran) >= 150, f"hypothesis ran {len(ran)} examples"
    finally:
        assert call(alice, "DELETE", f"instances/{OWNER}/{server}/members/bob").status_code in (200, 204)


def test_invitation_bodies(collab_hub: Hub, person, shares_of, server: str) -> None:
    alice = person(OWNER)
    def model() -> dict:
        return call(alice, "GET", f"instances/{OWNER}/{server}").json()

    before = model()["invitations"]
    made = []

    likely = {"role": LIKELY_ROLES, "expires_in": st.sampled_from([60, 3600, "86400", 2592000, 59.5, 2592000.9]),
              "max_uses": st.sampled_from([1, 100, " 7 ", 1.5, True])}

    ran: list[int] = []
    @fuzz_settings(250)
    @given(body=bodies({"role": ROLES, "expires_in": NUMBERS, "max_uses": NUMBERS}, likely),
           who=st.sampled_from(["alice"] * 5 + ["bob"]))
    def send(body: bytes, who: str) -> None:
        ran.append(1)
        r = call(person(who), "POST", f"instances/{OWNER}/{server}/invitations", body)
        check_answer(r)
        assert shares_of(OWNER, server) == {}
        if r.status_code != 201:
            assert model()["invitations"] == before, (r.status_code, r.text)
            return
        data = parse(body)
        role, expires, uses = data.get("role"), _intish(data.get("expires_in", 86400)), _intish(data.get("max_uses", 1))
        assert who == OWNER
        assert isinstance(role, str) and role.strip().lower() in ("user", "guest"), role
        assert expires is not None and 60 <= expires <= 30 * 86400, data.get("expires_in")
        assert uses is not None and 1 <= uses <= 100, data.get("max_uses")
        made.append(r.json()["id"])
        assert call(alice, "DELETE", f"instances/{OWNER}/{server}/invitations/{r.json()['id']}").status_code == 204

    send()
    assert len(ran) >= 250, f"hypothesis ran {len(ran)} examples"
    assert made, "no valid invitation body was generated"


def test_codes_policies_and_request_ids(collab_hub: Hub, person, shares_of, server: str) -> None:
    alice = person(OWNER)
    def policy() -> str:
        return call(alice, "GET", f"instances/{OWNER}/{server}").json()["policy"]

    assert policy() == "lock"
    ids = st.one_of(st.integers(0, 2**31), st.integers(2**62, 10**40)).map(str)
    calls = st.one_of(
        st.tuples(st.just("POST"), st.just("invitations/accept"), bodies({"code": st.one_of(
            st.sampled_from(["vi_", "vi_" + "A" * 32, "vi_" + "A" * 200]), JUNK, JSON_VALUES)})),
        st.tuples(st.just("PUT"), st.just(f"instances/{OWNER}/{server}/policy"),
                  bodies({"owner_away": st.one_of(st.sampled_from([*POLICIES, " lock", "LOCK", "none"]), JUNK,
                                                  JSON_VALUES)}, {"owner_away": st.sampled_from(POLICIES)})),
        st.tuples(st.just("POST"), ids.map(lambda i: f"requests/{i}/decision"),
                  bodies({"decision": st.one_of(st.sampled_from(["full", "read-only", "reject"]), JSON_VALUES)})),
        st.tuples(st.sampled_from(["GET", "DELETE"]), st.one_of(
            ids.map(lambda i: f"requests/{i}"), ids.map(lambda i: f"instances/{OWNER}/{server}/invitations/{i}")),
            st.none()),
        st.tuples(st.just("POST"), st.just(f"instances/{OWNER}/{server}/requests"), st.none()),
    )

    ran: list[int] = []
    @fuzz_settings(300)
    @given(call_=calls, who=st.sampled_from(["alice", "alice", "bob", "frank", "carol"]))
    def send(call_, who: str) -> None:
        ran.append(1)
        method, path, body = call_
        r = call(person(who), method, path, body)
        check_answer(r)
        assert shares_of(OWNER, server) == {}, (method, path, body)
        if path.endswith("/policy") and r.status_code == 200:
            value = parse(body)["owner_away"]
            assert who == OWNER and value in POLICIES, value
            assert call(alice, "PUT", path, b'{"owner_away": "lock"}').status_code == 200
        assert policy() == "lock"

    send()
    assert len(ran) >= 300, f"hypothesis ran {len(ran)} examples"


def test_hostile_paths_and_echoing_pages(collab_hub: Hub, person, server: str) -> None:
    # the proxy in front refuses request lines over 16 kB (431) before any of our code runs
    names = st.one_of(st.sampled_from([*HTML_PAYLOADS, *TRAVERSAL, OWNER, server]), JUNK).filter(
        lambda s: s and len(quote(s)) < 4000)

    ran: list[int] = []
    @fuzz_settings(200)
    @given(owner=names, name=names, page=st.sampled_from(["api", "members", "open", "invite", "prompt", "request"]),
           who=st.sampled_from(["alice", "bob", "erin"]))
    def send(owner: str, name: str, page: str, who: str) -> None:
        ran.append(1)
        someone = person(who)
        o, n = quote(owner, safe=""), quote(name, safe="")
        base = f"{someone.hub.url}{SERVICE}"
        if page == "api":
            r = call(someone, "GET", f"instances/{o}/{n}/audit")
            check_answer(r)
            return
        if page == "members":
            r = someone.s.get(f"{base}instances/{o}/{n}", timeout=60)
        elif page == "open":
            r = someone.s.post(f"{base}open/{o}/{n}", data={"_xsrf": someone.service_xsrf()}, timeout=60,
                               allow_redirects=False)
        elif page == "invite":
            r = someone.s.get(f"{base}invite", params={"code": owner + name}, timeout=60)
        elif page == "prompt":
            r = someone.s.get(f"{base}prompt", params={"server": owner + name}, timeout=60)
        else:
            r = someone.s.get(f"{base}requests/{zlib.crc32(owner.encode())}", timeout=60)
        assert r.status_code < 500, (r.status_code, r.text[:1000])
        assert not looks_like_traceback(r.text), r.text[:2000]
        assert not unescaped(r.text), (unescaped(r.text), r.url)

    send()
    assert len(ran) >= 200, f"hypothesis ran {len(ran)} examples"
    # what the refusals above wrote into the audit log shows escaped on the owner's members page
    page = person(OWNER).s.get(f"{collab_hub.url}{SERVICE}instances/{OWNER}/{server}", timeout=60)
    assert page.status_code == 200
    assert not unescaped(page.text), unescaped(page.text)
