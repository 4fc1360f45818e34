"""A real hub from hub_config/production (PostgreSQL hub database, SQL catalogue on PostgreSQL,
the node OpenID provider): login round trips over HTTP and in chromium, token refresh, live
catalogue changes, forced re-login after revocation, a provider that is down or answers garbage.
"""
from __future__ import annotations

import html
import re
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from tests.authenticator.conftest import DEMO_CATALOGUE
from tests.authenticator.services import OidcProvider, PostgresCluster
from tests.hubtools import Hub, make_state_dir
from tests.support import wait_for
from visa_authenticator.oidc import DOWN_MESSAGE, GARBAGE_MESSAGE
from visa_authenticator.sql_schema import main as catalogue_sql

pytestmark = pytest.mark.root

HUB_CONFIG = Path(__file__).resolve().parent / "hub_config.py"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def hub_catalogue(postgres: PostgresCluster) -> str:
    """The facility's catalogue database: strict tables, the demo catalogue loaded by the CLI."""
    url = postgres.create_database("visa_hub_catalogue")
    assert catalogue_sql(["load", "--create", "--url", url, "--yaml", str(DEMO_CATALOGUE)]) == 0
    return url


@pytest.fixture(scope="module")
def hub(postgres: PostgresCluster, oidc: OidcProvider, hub_catalogue: str) -> Iterator[Hub]:
    state = make_state_dir("visahub-oidc-")
    hub = Hub(state, config=HUB_CONFIG)
    client_id, client_secret = oidc.register_client(f"{hub.url}/hub/oauth_callback")
    secret_file = state / "oidc_client_secret"
    secret_file.write_text(client_secret)
    hub.extra_env = {
        "VISA_HUB_DB_URL": postgres.create_database("jupyterhub").replace("+psycopg2", ""),
        "JUPYTERHUB_CRYPT_KEY": "a" * 64,
        "VISA_OIDC_ISSUER": oidc.issuer,
        "VISA_OIDC_CLIENT_ID": client_id,
        "VISA_OIDC_CLIENT_SECRET_FILE": str(secret_file),
        "VISA_OIDC_CALLBACK_URL": f"{hub.url}/hub/oauth_callback",
        "VISA_CATALOGUE_DB_URL": hub_catalogue,
        "VISA_CATALOGUE_CACHE_TTL": "1",
        "VISA_AUTH_REFRESH_AGE": "2",
    }
    try:
        yield hub.start()
    finally:
        hub.stop()
        shutil.rmtree(state, ignore_errors=True)


def _form_action(html: str) -> str:
    m = re.search(r'<form method="post" action="([^"]+)"', html)
    assert m, f"no login form in: {html[:500]}"
    return m.group(1)


class Person:
    """One person's browser, driven with requests: follows redirects like a browser does."""

    def __init__(self, hub: Hub, oidc: OidcProvider) -> None:
        self.hub, self.oidc = hub, oidc
        self.s = requests.Session()

    def open(self, path: str = "/hub/home", **kw) -> requests.Response:
        return self.s.get(f"{self.hub.url}{path}", timeout=30, **kw)

    def sign_in(self, login: str, password: str | None = None, page: requests.Response | None = None,
                **kw) -> requests.Response:  # fmt: skip
        """At the provider's form (reached from `page`, or by opening the home page), sign in."""
        page = page if page is not None else self.open()
        assert page.url.startswith(self.oidc.issuer + "/interaction/"), f"not at the provider: {page.url}"
        return self.s.post(urljoin(page.url, _form_action(page.text)), timeout=30,
                           data={"username": login, "password": password or f"{login}-oidc"}, **kw)  # fmt: skip

    @property
    def logged_in(self) -> bool:
        r = self.open(allow_redirects=False)
        return r.status_code == 200


def text(page: requests.Response) -> str:
    """The page as a person reads it (entities decoded)."""
    return html.unescape(page.text)


def user_model(hub: Hub, name: str) -> dict:
    r = hub.api("GET", f"/users/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def no_traceback(hub: Hub) -> None:
    log = hub.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:4000]
    assert " 500 " not in log


def test_login_round_trip_over_http(hub: Hub, oidc: OidcProvider, postgres: PostgresCluster) -> None:
    alice = Person(hub, oidc)
    form = alice.open()
    assert "Facility login" in form.text  # auto_login: straight to the facility's login page
    wrong = alice.sign_in("alice", "nope", page=form)
    assert wrong.url.startswith(oidc.issuer) and "Wrong user name or password" in wrong.text
    home = alice.sign_in("alice", page=wrong)
    assert home.status_code == 200 and home.url == f"{hub.url}/hub/home", home.url

    model = user_model(hub, "alice")
    assert sorted(model["groups"]) == ["proposal:P-2026-011", "role:instrument_control", "role:user"]
    assert model["admin"] is False
    state = model["auth_state"]
    assert state["visa"]["person"]["id"] == "alice" and state["visa"]["quota"] == 2
    assert [p["id"] for p in state["visa"]["proposals"]] == ["P-2026-011", "P-2021-007"]
    assert state["access_token"] and state["refresh_token"]  # oauthenticator's keys are kept
    assert state["oauth_user"]["preferred_username"] == "alice"

    admin = Person(hub, oidc)
    assert admin.sign_in("admin").status_code == 200
    assert user_model(hub, "admin")["admin"] is True  # the ADMIN role in the catalogue

    # the hub database is the PostgreSQL one
    conn = postgres.connect("jupyterhub")
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM users ORDER BY name")
        assert [r[0] for r in cur.fetchall()] == ["admin", "alice"]
    conn.close()
    no_traceback(hub)


@pytest.mark.parametrize("login, status, message", [
    ("zed", 403, "The facility has no account named 'zed'"),
    ("henry", 403, "Your facility account expired on 2026-10-31"),
    ("nameless", 502, "did not say who you are"),
], ids=["unknown", "expired", "no-username-claim"])  # fmt: skip
def test_refused_logins_get_a_clear_page(hub: Hub, oidc: OidcProvider, login: str, status: int, message: str) -> None:
    page = Person(hub, oidc).sign_in(login)
    assert page.status_code == status and message in text(page), text(page)[-3000:]
    no_traceback(hub)


def _access_token(hub: Hub, name: str) -> str:
    return user_model(hub, name)["auth_state"]["access_token"]


def test_token_refresh_keeps_the_session(hub: Hub, oidc: OidcProvider) -> None:
    """Access tokens live 4 s, the hub refreshes every 2 s: a session outlives many tokens."""
    bob = Person(hub, oidc)
    assert bob.sign_in("bob").status_code == 200
    first = _access_token(hub, "bob")
    wait_for(lambda: bob.logged_in and _access_token(hub, "bob") != first, 30, "a refreshed access token")
    second = _access_token(hub, "bob")
    wait_for(lambda: bob.logged_in and _access_token(hub, "bob") != second, 30, "another refreshed token")
    assert bob.logged_in
    assert "Refreshing oauth access token for bob" in hub.log_tail(400)
    no_traceback(hub)


def _catalogue_sql(postgres: PostgresCluster, statement: str, *args: object) -> None:
    conn = postgres.connect("visa_hub_catalogue")
    with conn.cursor() as cur:
        cur.execute(statement, args)
    conn.close()


def test_catalogue_changes_reach_a_logged_in_person(hub: Hub, oidc: OidcProvider, postgres: PostgresCluster) -> None:
    carol = Person(hub, oidc)
    assert carol.sign_in("carol").status_code == 200
    assert "proposal:P-2026-011" not in user_model(hub, "carol")["groups"]

    # the user office adds carol to alice's experiment: no restart, no new login
    _catalogue_sql(postgres, "INSERT INTO experiment_team VALUES ('E-2026-0110', 'carol')")
    wait_for(lambda: carol.logged_in and "proposal:P-2026-011" in user_model(hub, "carol")["groups"], 30,
             "carol's new proposal group")  # fmt: skip

    # her roles expire: the next refresh ends the session and the new login is refused
    yesterday = date.today() - timedelta(days=1)
    _catalogue_sql(postgres, "UPDATE person_roles SET expires = %s WHERE person_id = 'carol'", yesterday)
    wait_for(lambda: not carol.logged_in, 30, "carol's session to end")
    page = carol.open()
    assert page.status_code == 403 and f"expired on {yesterday.isoformat()}" in text(page)
    no_traceback(hub)


def test_revoked_session_forces_a_new_login(hub: Hub, oidc: OidcProvider) -> None:
    dave = Person(hub, oidc)
    assert dave.sign_in("dave").status_code == 200
    assert oidc.revoke("dave") > 0
    wait_for(lambda: not dave.logged_in, 30, "the hub to notice the revoked session")
    assert "no longer accepts the login of dave" in hub.log_tail(400)
    again = dave.open()  # back at the facility's login form: the provider's session is gone too
    assert again.url.startswith(oidc.issuer + "/interaction/")
    assert dave.sign_in("dave", page=again).status_code == 200
    no_traceback(hub)


@pytest.mark.parametrize("mode, status, message", [("garbage", 502, GARBAGE_MESSAGE), ("reset", 503, DOWN_MESSAGE)],
                         ids=["garbage", "down"])  # fmt: skip
def test_provider_down_or_garbage_gives_a_clear_page(
    hub: Hub, oidc: OidcProvider, mode: str, status: int, message: str
) -> None:
    erin = Person(hub, oidc)
    assert erin.sign_in("erin").status_code == 200
    newcomer = Person(hub, oidc)
    at_callback = Person(hub, oidc)  # signed in at the provider; the hub exchanges the code later
    callback = at_callback.sign_in("frank", allow_redirects=False)
    while not callback.headers["Location"].startswith(f"{hub.url}/hub/oauth_callback"):
        callback = at_callback.s.get(urljoin(callback.url, callback.headers["Location"]), allow_redirects=False)
    with oidc.mode(mode):
        page = newcomer.open()  # the login button: checked before sending anyone to the provider
        assert page.status_code == status and message in text(page), text(page)[-3000:]
        page = at_callback.s.get(callback.headers["Location"])  # the code exchange fails
        assert page.status_code == status and message in text(page), text(page)[-3000:]
        # a person already logged in keeps working while the provider is away
        first_refreshes = hub.log_tail(2000).count("OIDC refresh for erin")
        wait_for(lambda: erin.logged_in and hub.log_tail(2000).count("OIDC refresh for erin") > first_refreshes,
                 30, "a refresh attempt for erin")  # fmt: skip
        assert erin.logged_in
    assert f"provider {oidc.issuer}" in hub.log_tail(400)
    assert Person(hub, oidc).sign_in("frank").status_code == 200  # back to normal
    no_traceback(hub)


@pytest.mark.browser
def test_login_in_chromium(hub: Hub, oidc: OidcProvider) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    assert Path("/usr/bin/chromium").exists(), "Debian chromium is missing: run `make setup`"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{hub.url}/hub/home")
            page.wait_for_selector("#username")
            page.fill("#username", "alice")
            page.fill("#password", "alice-oidc")
            page.screenshot(path=str(ARTIFACTS / "oidc-1-provider-login.png"))
            page.click("#sign-in")
            page.wait_for_url(f"{hub.url}/hub/home", timeout=30000)
            page.wait_for_load_state("networkidle")
            assert "alice" in page.content()
            page.screenshot(path=str(ARTIFACTS / "oidc-2-hub-home.png"), full_page=True)
            with oidc.mode("reset"):  # what a newcomer sees while the provider is down
                stranger = browser.new_page(viewport={"width": 1280, "height": 600})
                stranger.goto(f"{hub.url}/hub/home")
                assert DOWN_MESSAGE in stranger.inner_text("body")
                stranger.screenshot(path=str(ARTIFACTS / "oidc-3-provider-down.png"))
        finally:
            browser.close()
    no_traceback(hub)
