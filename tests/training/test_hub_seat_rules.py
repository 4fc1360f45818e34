"""A seat's account: its entitlements (the authenticator's shape), the redeem answer checked, and a
refresh that keeps it signed in although the catalogue does not know it."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from visa_authenticator.rules import seat_account
from visa_spawner.course_pages import check_redeemed, seat_entitlements

REDEEMED = {"user": "guest-python-neutron-1", "display_name": "Guest 1", "course": "python-neutron",
            "expires": "2026-03-12", "proposal": "P-2021-007"}
NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def test_a_seat_is_a_guest_until_the_course_end_on_the_course_proposal():
    visa = seat_entitlements(REDEEMED, "Open data of D11", True, NOW)
    assert visa["roles"] == ["GUEST"] and visa["role_expires"] == {"GUEST": "2026-03-12"}
    assert visa["proposals"] == [{"id": "P-2021-007", "title": "Open data of D11", "instruments": [],
                                  "open_data": True, "relation": "course"}]
    assert (visa["quota"], visa["admin"], visa["instrument_control"]) == (0, False, [])
    assert visa["person"] == {"id": "guest-python-neutron-1", "name": "Guest 1", "email": ""}
    assert visa["seat"] == {"course": "python-neutron", "groups": ["course:python-neutron", "role:guest"]}
    assert seat_entitlements({**REDEEMED, "proposal": ""}, "", False, NOW)["proposals"] == []


@pytest.mark.parametrize("change", [
    {"user": "Alice"}, {"user": "../admin"}, {"user": ""}, {"course": "Bad Course"}, {"course": "x" * 25},
    {"expires": "tomorrow"}, {"expires": None},
])
def test_a_bad_redeem_answer_is_refused(change):
    with pytest.raises((ValueError, TypeError)):
        check_redeemed({**REDEEMED, **change})


def test_the_redeem_answer_passes_as_is():
    assert check_redeemed(dict(REDEEMED)) == REDEEMED


def test_refresh_keeps_a_seat_account_and_leaves_others_to_the_catalogue():
    state = {"visa": seat_entitlements(REDEEMED, "", True, NOW)}
    model = seat_account("guest-python-neutron-1", state)
    assert model == {"name": "guest-python-neutron-1", "admin": False,
                     "groups": ["course:python-neutron", "role:guest"], "auth_state": state}
    assert seat_account("frank", {"visa": {"roles": ["USER"]}}) is None
    assert seat_account("frank", None) is None
    assert seat_account("frank", {"visa": {"seat": "forged-as-text"}}) is None
