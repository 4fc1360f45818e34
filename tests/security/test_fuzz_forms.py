"""10,000 generated New-instance forms against the running hub (POST /hub/visa/new).

Every generated form is invalid by construction for the person sending it (one field at least
is not one they may use, the XSRF token is missing or forged, or the person may not create
instances at all), the other fields anything from valid values to garbage: unicode of every
category, huge values, repeated fields, raw bytes, HTML and script payloads, path traversal,
numbers. Each must be refused with a 4xx page (never a 5xx or a traceback), the payloads it
echoes must come back escaped, and the admin REST API must show no server record created.
A few valid forms (with hostile names) check the other side: exactly one record, the clean
options, the name escaped on the home page.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from html import unescape

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from tests.collab.helpers import Person
from tests.hubtools import Hub, _form_xsrf
from tests.security.conftest import HTML_PAYLOADS, JUNK, TRAVERSAL, fuzz_settings, looks_like_traceback, unescaped

pytestmark = pytest.mark.root

# who sends the forms: a PI, a guest (open data only), staff (may skip the proposal), the
# admin (unlimited) and a person awaiting approval (quota 0: every form is refused)
PEOPLE = ("alice", "frank", "dave", "admin", "grace")
FORMS_PER_PERSON = 2000  # 5 × 2000 = 10,000 forms
FIELDS = ("name", "proposal", "plan", "screen", "keyboard")


@dataclass(frozen=True)
class Offer:
    """What the home page offers one person: the valid values of each field."""

    who: str
    xsrf: str
    proposals: tuple[str, ...]
    may_skip_proposal: bool
    plans: tuple[str, ...]
    screens: tuple[str, ...]
    keyboards: tuple[str, ...]
    may_create: bool

    def valid(self, field: str) -> tuple[str, ...]:
        return {"proposal": self.proposals, "plan": self.plans, "screen": self.screens,
                "keyboard": self.keyboards}[field]


def _options(page: str, select_id: str) -> tuple[str, ...]:
    m = re.search(rf'<select[^>]*id="{select_id}".*?</select>', page, re.DOTALL)
    assert m, f"no {select_id} on the home page"
    return tuple(unescape(v) for v in re.findall(r'<option value="([^"]*)"', m.group(0)) if v)


def offer_for(person: Person) -> Offer:
    page = person.home().text
    return Offer(
        who=person.name, xsrf=_form_xsrf(page), proposals=_options(page, "visa-proposal"),
        may_skip_proposal="No proposal (staff instance" in page, plans=_options(page, "visa-plan"),
        screens=_options(page, "visa-screen"), keyboards=_options(page, "visa-keyboard"),
        may_create='id="visa-pending"' not in page,
    )


# -- strategies -----------------------------------------------------------------------------------

NAME_CHARS = st.characters(categories=["L", "N", "P", "S", "Zs"])


def _fold(name: str) -> str:
    return " ".join(unicodedata.normalize("NFC", name).split())


def _is_valid_name(name: str) -> bool:
    folded = _fold(name)
    return bool(folded) and len(folded) <= 250 and not any(unicodedata.category(c)[0] == "C" for c in folded)


VALID_NAMES = st.one_of(
    st.text(NAME_CHARS, min_size=1, max_size=60),
    st.sampled_from(HTML_PAYLOADS),
    st.builds(lambda p, s: f"{p} {s}", st.sampled_from(TRAVERSAL[:2] + TRAVERSAL[4:6]),
              st.text(NAME_CHARS, max_size=8)),
).filter(_is_valid_name)
CONTROL = st.characters(categories=["Cc", "Cf", "Co"]).filter(lambda c: not c.isspace())
INVALID_NAMES = st.one_of(
    st.just(""), st.text(st.sampled_from(" \t\r\n\u00a0\u2003\u3000\x1c\x1f"), max_size=10),
    st.builds(lambda n, c, i: n[:i] + c + n[i:], VALID_NAMES, CONTROL, st.integers(0, 60)),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "<", "𝔘"]), st.integers(251, 3000)),
)


def _not_one_of(valid: tuple[str, ...], blank_ok: bool):
    """Values whose stripped form is not offered (and not blank, when blank means "default")."""
    return lambda v: v.strip() not in valid and (bool(v.strip()) or not blank_ok)


# stands for the person's current XSRF token in generated forms (the hub renews it after some
# refusals, as a browser would see in the page it gets back)
XSRF = "\x00current-xsrf\x00"
EXTRA_KEYS = st.one_of(st.text(max_size=12), st.sampled_from(["_xsrf", "user_options", "server_name", "name[]"]))


def field_values(value: st.SearchStrategy[str], raw: bool = True) -> st.SearchStrategy[list]:
    """A field as a form sends it: one value, several (the first counts), or raw bytes."""
    shapes = [value.map(lambda v: [v])] * 6 + [st.builds(lambda v, more: [v, *more], value,
                                                         st.lists(JUNK, min_size=1, max_size=3))]
    if raw:
        shapes.append(st.builds(lambda v, b: [v.encode("utf8") + b], value, st.binary(max_size=8)))
    return st.one_of(shapes)


def forms(offer: Offer) -> st.SearchStrategy[tuple]:
    """(fields as (key, value) pairs, XSRF token sent, encoding, what makes the form invalid).

    The strategies are built once per person: building them per example costs more than the
    request.
    """
    def valid_value(field: str) -> st.SearchStrategy[str]:
        if field == "name":
            return VALID_NAMES
        choices = list(offer.valid(field))
        blank_ok = field != "proposal" or offer.may_skip_proposal
        ws = st.sampled_from(["", " ", "\t", "\n "])
        if blank_ok or not choices:
            choices.append("")
        return st.builds(lambda v, a, b: a + v + b, st.sampled_from(choices), ws, ws)

    def invalid_value(field: str) -> st.SearchStrategy[str]:
        if field == "name":
            return INVALID_NAMES
        blank_ok = field != "proposal" or offer.may_skip_proposal
        near = [v[:-1] for v in offer.valid(field)] + [v.upper() + "x" for v in offer.valid(field)] + \
               [v + "\x00" for v in offer.valid(field)] + ["P-2026-042", "sandbox-xl", "vm", "99999x99999", "zz"]
        return st.one_of(st.sampled_from(near), JUNK).filter(_not_one_of(offer.valid(field), blank_ok))

    valid = {f: valid_value(f).map(lambda v: [v]) for f in FIELDS}
    invalid = {f: field_values(invalid_value(f), raw=False) for f in FIELDS}  # the hub sees what was checked
    wild = field_values(JUNK)
    extras = st.lists(st.tuples(EXTRA_KEYS, JUNK), max_size=3)

    @st.composite
    def form(draw):
        xsrf = draw(st.sampled_from(["ok"] * 12 + ["missing", "garbage", "empty"]))
        # the field that makes the form invalid, unless the XSRF token or the quota already does
        broken = draw(st.sampled_from(FIELDS)) if (xsrf == "ok" and offer.may_create) or draw(st.booleans()) else None
        garbage = draw(st.integers(0, 3)) == 0  # all other fields garbage too
        order = draw(st.permutations(FIELDS)) if draw(st.booleans()) else FIELDS
        fields: list[tuple[str, str | bytes]] = []
        for field in order:
            if field == broken:
                values = draw(invalid[field])
            elif draw(st.integers(0, 9)) == 0:
                continue  # field left out
            else:
                values = draw(wild if garbage else valid[field])
            fields += [(field, v) for v in values]
        fields += draw(extras)
        token = {"ok": XSRF, "missing": None, "garbage": draw(JUNK) or "x", "empty": ""}[xsrf]
        if token is not None:
            fields.insert(0, ("_xsrf", token))
        if sum(k == "_xsrf" for k, _ in fields) > 1:
            xsrf = "garbage"  # the hub reads the last _xsrf value: a generated one
        encoding = draw(st.sampled_from(["urlencoded"] * 5 + ["multipart"]))
        return fields, xsrf, encoding, broken

    return form()


def post(person: Person, fields, encoding: str, token: str) -> requests.Response:
    url = f"{person.hub.url}/hub/visa/new"
    fields = [(k, token if (k, v) == ("_xsrf", XSRF) else v) for k, v in fields]
    if encoding == "multipart":
        return person.s.post(url, files=[(k, (None, v)) for k, v in fields], allow_redirects=False, timeout=60)
    return person.s.post(url, data=fields, allow_redirects=False, timeout=60)


def _names(hub: Hub, who: str, session: requests.Session | None = None) -> set[str]:
    """The person's server records as the admin REST API lists them (stopped ones included)."""
    r = (session or requests).get(f"{hub.url}/hub/api/users/{who}?include_stopped_servers=1", timeout=30,
                                  headers={"Authorization": f"token {hub.token}"})
    assert r.status_code == 200, r.text
    return {n for n in r.json().get("servers", {}) if n}


# -- tests ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("who", PEOPLE)
def test_generated_invalid_forms_are_refused(collab_hub: Hub, person, server_records, who: str) -> None:
    someone = person(who)
    offer = offer_for(someone)
    assert offer.plans and offer.screens and offer.keyboards, offer
    assert offer.may_create == (who != "grace")
    before = server_records()
    sent = []
    token = [offer.xsrf]
    admin_api = requests.Session()

    @fuzz_settings(FORMS_PER_PERSON)
    @given(form=forms(offer))
    def send(form) -> None:
        fields, xsrf, encoding, broken = form
        r = post(someone, fields, encoding, token[0])
        sent.append(r.status_code)
        if "_xsrf=" in r.headers.get("set-cookie", ""):
            token[0] = _form_xsrf(someone.home().text)
        assert r.status_code < 500, (r.status_code, r.text[-2000:])
        assert not looks_like_traceback(r.text), r.text[-2000:]
        if xsrf == "ok":
            assert r.status_code == 400, (r.status_code, r.headers.get("location"), broken, fields, encoding)
            # a multipart body tornado cannot parse is refused before our handler runs
            assert 'id="visa-error"' in r.text or encoding == "multipart", r.text[:500]
        else:
            assert r.status_code in (400, 403), r.status_code
        assert not unescaped(r.text), unescaped(r.text)
        if len(sent) % 20 == 0:  # the REST API as often as the time budget allows; all of them at the end
            assert _names(collab_hub, who, admin_api) == before.get(who, set()), "a refused form created a record"

    send()
    assert len(sent) >= FORMS_PER_PERSON, f"only {len(sent)} forms were sent"
    assert server_records() == before, "server records changed"


VALID_FORMS = [
    ("alice", {"name": "<script>alert('zq')</script>zq<zq", "proposal": "P-2026-011"}),
    ("dave", {"name": "  ../../etc/passwd \u00a0 zq\"zq  ", "proposal": ""}),
    ("alice", {"name": "Ünïcødé 𝔘 データ zq'zq", "proposal": " P-2021-007 ", "plan": "sandbox-small",
               "screen": "1920x1080", "keyboard": "fr"}),
]


@pytest.mark.parametrize("who, fields", VALID_FORMS)
def test_valid_forms_with_hostile_names_create_one_escaped_instance(collab_hub: Hub, person, who: str,
                                                                    fields: dict) -> None:
    someone = person(who)
    before = _names(collab_hub, who)
    r = someone.new_instance(**fields)
    assert r.status_code == 302, r.text[-1000:]
    created = _names(collab_hub, who) - before
    assert len(created) == 1, created
    name = created.pop()
    try:
        assert re.fullmatch(r"[a-z0-9-]{1,30}", name), name
        model = collab_hub.server_model(who, name)
        options = model["user_options"]
        assert options["proposal"] == fields["proposal"].strip()
        assert {k: options[k] for k in ("plan", "screen", "keyboard")} == {
            "plan": fields.get("plan", "sandbox-small"), "screen": fields.get("screen", "1280x720"),
            "keyboard": fields.get("keyboard", "us")}
        home = someone.home().text
        assert not unescaped(home), unescaped(home)
        assert not looks_like_traceback(home)
    finally:
        collab_hub.delete_server(who, name)
