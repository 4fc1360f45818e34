"""The demo login and the shared base: login, refusal, refresh, groups, the login page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jupyterhub
import pytest
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from tornado import web

import visa_authenticator
from visa_authenticator.cache import CachedCatalogue
from visa_authenticator.catalogue import Catalogue
from visa_authenticator.demo import VisaDemoAuthenticator
from visa_authenticator.file_catalogue import FileCatalogue

from .conftest import DEMO_CATALOGUE

SMALL = """
persons:
  - {id: alice, name: Alice, roles: [USER], demo_password: alice-demo}
  - {id: bob, name: Bob, roles: [USER], demo_password: bob-demo}
  - {id: nopass, name: No Password}
instruments:
  - {id: D11, name: SANS}
proposals:
  - {id: A, title: Proposal A}
  - {id: C, title: Proposal C}
experiments:
  - {id: E1, proposal: A, instrument: D11, start: 2026-11-20, end: 2026-11-26, team: [alice]}
"""


class FakeUser:
    """What refresh_user needs from JupyterHub's User: a name and the stored auth_state."""

    def __init__(self, name: str, auth_state: dict[str, Any] | None) -> None:
        self.name = name
        self.auth_state = auth_state

    async def get_auth_state(self) -> dict[str, Any] | None:
        return self.auth_state


async def test_login_success_gives_entitlements_and_groups(demo_auth: Callable[..., VisaDemoAuthenticator]) -> None:
    auth = demo_auth()
    model = await auth.get_authenticated_user(None, {"username": "Alice ", "password": "alice-demo"})
    assert model["name"] == "alice"
    assert model["admin"] is False
    assert model["groups"] == ["proposal:P-2026-011", "role:instrument_control", "role:user"]
    visa = model["auth_state"]["visa"]
    assert visa["roles"] == ["USER", "INSTRUMENT_CONTROL"]
    assert visa["quota"] == 2
    assert [(p["id"], p["relation"]) for p in visa["proposals"]] == [
        ("P-2026-011", "team"),
        ("P-2021-007", "open-data"),
    ]
    assert visa["instrument_control"] == ["P-2026-011"]


async def test_admin_flag_from_role(demo_auth: Callable[..., VisaDemoAuthenticator]) -> None:
    model = await demo_auth().get_authenticated_user(None, {"username": "admin", "password": "admin-demo"})
    assert model["admin"] is True
    assert model["auth_state"]["visa"]["quota"] == -1


@pytest.mark.parametrize(
    "data",
    [
        {"username": "alice", "password": "bob-demo"},
        {"username": "alice", "password": ""},
        {"username": "alice"},
        {"username": "", "password": "alice-demo"},
    ],
    ids=["wrong", "empty", "missing", "no-username"],
)
async def test_login_failure(demo_auth: Callable[..., VisaDemoAuthenticator], data: dict[str, str]) -> None:
    assert await demo_auth().authenticate(None, data) is None


async def test_person_without_demo_password_cannot_log_in(
    demo_auth: Callable[..., VisaDemoAuthenticator], write_yaml: Callable[[str], Path]
) -> None:
    auth = demo_auth(write_yaml(SMALL))
    assert await auth.authenticate(None, {"username": "nopass", "password": ""}) is None


async def test_unknown_person_refused_with_clear_message(demo_auth: Callable[..., VisaDemoAuthenticator]) -> None:
    with pytest.raises(web.HTTPError) as e:
        await demo_auth().authenticate(None, {"username": "zed", "password": "zed-demo"})
    assert e.value.status_code == 403
    assert "no account named 'zed'" in e.value.get_message()


async def test_expired_account_refused_after_password(demo_auth: Callable[..., VisaDemoAuthenticator]) -> None:
    auth = demo_auth()
    assert await auth.authenticate(None, {"username": "henry", "password": "wrong"}) is None
    with pytest.raises(web.HTTPError) as e:
        await auth.authenticate(None, {"username": "henry", "password": "henry-demo"})
    assert e.value.status_code == 403 and "expired on 2026-10-31" in e.value.get_message()


async def test_unreadable_catalogue_is_503(demo_auth: Callable[..., VisaDemoAuthenticator], tmp_path: Path) -> None:
    with pytest.raises(web.HTTPError) as e:
        await demo_auth(tmp_path / "absent.yaml").authenticate(None, {"username": "a", "password": "b"})
    assert e.value.status_code == 503


async def test_refresh_user_picks_up_catalogue_change(
    demo_auth: Callable[..., VisaDemoAuthenticator], write_yaml: Callable[[str], Path]
) -> None:
    auth = demo_auth(write_yaml(SMALL))
    model = await auth.get_authenticated_user(None, {"username": "bob", "password": "bob-demo"})
    assert model["groups"] == ["role:user"]
    assert model["auth_state"]["visa"]["proposals"] == []
    user = FakeUser("bob", {**model["auth_state"], "token": "kept"})

    # the user office adds bob to proposal C and makes him staff
    write_yaml(
        SMALL.replace("{id: bob, name: Bob, roles: [USER]", "{id: bob, name: Bob, roles: [USER, STAFF]")
        + "  - {id: E2, proposal: C, instrument: D11, start: 2026-12-01, end: 2026-12-02, team: [bob]}\n"
    )
    refreshed = await auth.refresh_user(user)
    assert refreshed["groups"] == ["proposal:C", "role:staff", "role:user"]
    assert [p["id"] for p in refreshed["auth_state"]["visa"]["proposals"]] == ["C"]
    assert refreshed["auth_state"]["token"] == "kept"  # other auth_state keys survive

    # bob leaves the facility: the next refresh asks for a new login (which is then refused)
    write_yaml(SMALL.replace("  - {id: bob, name: Bob, roles: [USER], demo_password: bob-demo}\n", ""))
    assert await auth.refresh_user(user) is False


async def test_refresh_keeps_entitlements_when_catalogue_is_down(
    demo_auth: Callable[..., VisaDemoAuthenticator], tmp_path: Path
) -> None:
    auth = demo_auth(tmp_path / "absent.yaml")
    assert await auth.refresh_user(FakeUser("bob", {"visa": {}})) is True


def test_hub_settings_defaults(demo_auth: Callable[..., VisaDemoAuthenticator]) -> None:
    auth = demo_auth()
    assert auth.manage_groups is True
    assert auth.refresh_pre_spawn is True
    assert auth.auth_refresh_age == 300
    assert auth.allow_all is True  # the catalogue is the allow list
    assert demo_auth(allowed_users={"alice"}).allow_all is False


def test_file_catalogue_is_not_cached_remote_ones_are(demo_auth: Callable[..., VisaDemoAuthenticator]) -> None:
    assert isinstance(demo_auth().catalogue, FileCatalogue)

    class Remote(Catalogue):
        pass

    from visa_authenticator.base import VisaAuthenticator

    auth = VisaAuthenticator(catalogue_class=Remote)
    assert isinstance(auth.catalogue, CachedCatalogue) and isinstance(auth.catalogue.inner, Remote)


def test_config_validation(demo_auth: Callable[..., VisaDemoAuthenticator]) -> None:
    auth = demo_auth(role_quotas={"staff": 5})
    assert auth.role_quotas == {"STAFF": 5}
    with pytest.raises(Exception, match="unknown role 'WIZARD'"):
        demo_auth(role_quotas={"WIZARD": 1})
    with pytest.raises(Exception, match="integer >= -1"):
        demo_auth(role_quotas={"STAFF": -3})
    with pytest.raises(Exception, match="FileCatalogue"):
        demo_auth(catalogue_class=Catalogue)


def _login_page(auth: VisaDemoAuthenticator) -> str:
    """Render login.html the way JupyterHub 6 does (same loader layout, async env)."""
    share = Path(jupyterhub.__file__).parents[4] / "share" / "jupyterhub" / "templates"
    assert share.is_dir(), f"JupyterHub templates not found in {share}"
    loader = ChoiceLoader(
        [
            PrefixLoader({"templates": FileSystemLoader([str(share)])}, "/"),
            FileSystemLoader([visa_authenticator.TEMPLATES_DIR, str(share)]),
        ]
    )
    env = Environment(loader=loader, autoescape=True)
    env.globals["static_url"] = lambda path, **kw: f"/static/{path}"
    return env.get_template("login.html").render(
        authenticator=auth, login_service="", custom_html="", xsrf="x", base_url="/hub/",
        prefix="/", login_url="/hub/login", authenticator_login_url="/hub/login", user=None,
        parsed_scopes=set(), services=[],
    )  # fmt: skip


def test_login_page_lists_demo_accounts(demo_auth: Callable[..., VisaDemoAuthenticator]) -> None:
    html = _login_page(demo_auth())
    assert 'id="username_input"' in html  # JupyterHub's own form is still there
    assert 'id="visa-demo-accounts"' in html
    for text in ("alice-demo", "Dave Okafor", "all of D11 (scientist)", "P-2026-011 (team)", "awaiting approval"):
        assert text in html


def test_login_page_without_demo_accounts(demo_auth: Callable[..., VisaDemoAuthenticator]) -> None:
    html = _login_page(demo_auth(show_demo_accounts=False))
    assert 'id="username_input"' in html and "visa-demo-accounts" not in html


def test_demo_catalogue_shipped_is_clean() -> None:
    """The demo catalogue loads without a single problem and has the cast the docs promise."""
    cat = FileCatalogue(path=str(DEMO_CATALOGUE))
    data = cat.data()
    assert cat.problems == ()
    persons = {p.id for p in data.persons}
    assert {"alice", "bob", "carol", "dave", "admin", "erin"} <= persons
    assert set(data.demo_passwords) == persons
    assert all(pw == f"{pid}-demo" for pid, pw in data.demo_passwords.items())
