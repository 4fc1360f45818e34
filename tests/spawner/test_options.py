"""Table-driven tests of the creation request rules (name, proposal, plan, screen, keyboard, quota)."""
import pytest

from visa_spawner.backends.base import Plan
from visa_spawner.options import OptionError, slugify, validate_request

PLANS = [
    Plan("small", "Small", "sandbox", 1, 2048, default=True),
    Plan("large", "Large", "sandbox", 2, 8192),
    Plan("staff-only", "Staff", "sandbox", 4, 16384, roles=("STAFF",)),
]
ALICE = {"roles": ["USER"], "quota": 2, "proposals": [{"id": "P-1", "title": "t", "open_data": False}]}


def form(**kw):
    base = {"name": "My analysis", "proposal": "P-1", "plan": "small", "screen": "1920x1080", "keyboard": "fr"}
    base.update(kw)
    return {k: [v] for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "overrides, entitlements, existing, message",
    [
        ({"name": ""}, ALICE, {}, "Give the instance a name"),
        ({"name": "   "}, ALICE, {}, "Give the instance a name"),
        ({"name": "x" * 251}, ALICE, {}, "too long"),
        ({"name": "a\x00b"}, ALICE, {}, "control characters"),
        ({"name": "My  analysis"}, ALICE, {"my-analysis": "my analysis"}, "already have an instance named"),
        ({"proposal": "P-2"}, ALICE, {}, "is not one you can use"),
        ({"proposal": ""}, ALICE, {}, "Choose the proposal"),
        ({"plan": "staff-only"}, ALICE, {}, "not available to you"),
        ({"plan": "'; rm -rf /"}, ALICE, {}, "not available to you"),
        ({"screen": "99999x99999"}, ALICE, {}, "not offered"),
        ({"keyboard": "us;reboot"}, ALICE, {}, "not offered"),
        ({}, {**ALICE, "quota": 0}, {}, "waiting for approval"),
        ({}, {**ALICE, "quota": 2}, {"a": "A", "b": "B"}, r"most your account allows \(2\)"),
        ({}, {}, {}, "is not one you can use"),  # no entitlements at all
    ],
)
def test_bad_requests_are_refused_with_a_message(overrides, entitlements, existing, message):
    with pytest.raises(OptionError, match=message):
        validate_request(form(**overrides), entitlements=entitlements, plans=PLANS, existing=existing)


@pytest.mark.parametrize(
    "entitlements, existing, plan",
    [
        (ALICE, {}, "small"),
        ({**ALICE, "quota": -1}, {str(i): str(i) for i in range(50)}, "large"),
        ({**ALICE, "roles": ["STAFF"]}, {}, "staff-only"),
    ],
)
def test_good_requests_give_clean_options(entitlements, existing, plan):
    req = validate_request(form(plan=plan), entitlements=entitlements, plans=PLANS, existing=existing)
    assert req.user_options() == {"proposal": "P-1", "plan": plan, "screen": "1920x1080", "keyboard": "fr"}
    assert req.display_name == "My analysis"
    assert req.server_name == "my-analysis"


def test_defaults_fill_missing_plan_screen_keyboard():
    req = validate_request(form(plan=None, screen=None, keyboard=None), entitlements=ALICE, plans=PLANS, existing={})
    assert (req.plan, req.screen, req.keyboard) == ("small", "1280x720", "us")


def test_restart_skips_name_and_quota_but_not_pending_approval():
    opts = {"proposal": "P-1", "plan": "small"}
    full = {"a": "A", "b": "B"}
    assert validate_request(opts, entitlements=ALICE, plans=PLANS, existing=full, new=False).proposal == "P-1"
    with pytest.raises(OptionError, match="approval"):
        validate_request(opts, entitlements={**ALICE, "quota": 0}, plans=PLANS, existing={}, new=False)


@pytest.mark.parametrize(
    "name, taken, slug",
    [
        ("My analysis", (), "my-analysis"),
        ("Ünïcödé Ärger", (), "unicode-arger"),
        ("日本語", (), "instance"),
        ("../../etc/passwd", (), "etc-passwd"),
        ("x" * 80, (), "x" * 30),
        ("My analysis", ("my-analysis",), "my-analysis-2"),
        ("My analysis", ("my-analysis", "my-analysis-2"), "my-analysis-3"),
        ("y" * 40, ("y" * 30,), "y" * 28 + "-2"),
    ],
)
def test_slugify(name, taken, slug):
    got = slugify(name, taken)
    assert got == slug
    assert 1 <= len(got) <= 30


@pytest.mark.parametrize("roles, allowed", [(["STAFF"], True), (["ADMIN"], True), (["USER"], False), (["GUEST"], False)])
def test_only_staff_may_create_an_instance_without_a_proposal(roles, allowed):
    ent = {**ALICE, "roles": roles}
    if allowed:
        assert validate_request(form(proposal=""), entitlements=ent, plans=PLANS, existing={}).proposal == ""
    else:
        with pytest.raises(OptionError, match="Choose the proposal"):
            validate_request(form(proposal=""), entitlements=ent, plans=PLANS, existing={})
