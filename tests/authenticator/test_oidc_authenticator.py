"""VisaOAuthenticator on its own: defaults, failure classification, discovery, and what login and
refresh do when the real provider is down, refuses, or answers garbage (no hub needed)."""
from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from tornado import web
from tornado.httpclient import HTTPClientError

from tests.authenticator.conftest import FakeUser
from tests.authenticator.services import OidcProvider
from tests.support import free_port
from visa_authenticator.oidc import (
    DOWN_MESSAGE,
    GARBAGE_MESSAGE,
    REFUSED_MESSAGE,
    ProviderUnavailable,
    VisaOAuthenticator,
    classify,
)


class FakeCallback:
    """What the code exchange reads from the callback handler: the code in the URL."""

    def get_argument(self, name: str, default: Any = None) -> Any:
        return {"code": "not-a-real-code"}.get(name, default)


def make_auth(issuer: str, **traits: Any) -> VisaOAuthenticator:
    traits = {"enable_auth_state": True, "client_id": "x", "client_secret": "y", "enable_pkce": False,
              "oauth_callback_url": "http://127.0.0.1:1/hub/oauth_callback", **traits}  # fmt: skip
    return VisaOAuthenticator(oidc_issuer=issuer, log=logging.getLogger("visa-oidc-test"), **traits)


def test_defaults_fit_a_keycloak_and_the_catalogue() -> None:
    auth = VisaOAuthenticator()
    assert auth.username_claim == "preferred_username"
    assert auth.scope == ["openid", "profile", "email"]
    assert auth.manage_groups and auth.refresh_pre_spawn and auth.allow_all
    assert auth.auth_refresh_age == 300 and auth.keep_session_if_provider_down
    assert auth.http_request_kwargs["connect_timeout"] <= 5
    with pytest.raises(Exception, match="must be an http"):
        VisaOAuthenticator(oidc_issuer="login.example")


CLASSIFY_TABLE = [
    ("connection-refused", HTTPClientError(599, "Connection refused"), "no answer", False),
    ("provider-5xx", HTTPClientError(502), "answered HTTP 502", False),
    ("socket-error", ConnectionResetError("reset"), "no answer", False),
    ("not-json", json.JSONDecodeError("Expecting value", "<html>", 0), "not JSON", True),
    ("no-access-token", web.HTTPError(500, "Bad response: {...}"), "without the expected token", True),
    ("wrong-shape", KeyError("token_type"), "not a valid OpenID Connect response", True),
    ("refused-4xx", HTTPClientError(401), None, None),
    ("our-bug", RuntimeError("boom"), None, None),
]  # fmt: skip


@pytest.mark.parametrize("error, reason, garbage", [r[1:] for r in CLASSIFY_TABLE], ids=[r[0] for r in CLASSIFY_TABLE])
def test_classify(error: BaseException, reason: str | None, garbage: bool | None) -> None:
    problem = classify(error)
    if reason is None:
        assert problem is None
    else:
        assert reason in str(problem) and problem.garbage is garbage
        assert "Bad response" not in str(problem)  # oauthenticator's message may quote tokens


def test_missing_username_claim_is_a_clear_502(caplog: pytest.LogCaptureFixture) -> None:
    auth = VisaOAuthenticator()
    assert auth.user_info_to_username({"preferred_username": " Alice "}) == "Alice"
    with caplog.at_level(logging.ERROR), pytest.raises(web.HTTPError) as e:
        auth.user_info_to_username({"sub": "123", "email": "secret@example.org"})
    assert e.value.status_code == 502 and "did not say who you are" in e.value.get_message()
    assert "claims present: email, sub" in caplog.text and "secret@example.org" not in caplog.text
    with pytest.raises(TypeError):
        auth.user_info_to_username(["not", "a", "dict"])


async def test_refresh_without_stored_tokens_asks_for_login() -> None:
    auth = VisaOAuthenticator(enable_auth_state=True)
    assert await auth.refresh_identity(FakeUser("alice", {"visa": {}})) is False
    assert await auth.get_user_groups({"oauth_user": {"groups": ["wheel"]}}) == set()  # IdP groups ignored


async def test_discovery_fills_endpoints_explicit_ones_win(oidc: OidcProvider) -> None:
    auth = make_auth(oidc.issuer + "/", userdata_url="https://userinfo.example/me")
    await auth.ensure_endpoints()
    assert auth.authorize_url == f"{oidc.issuer}/auth" and auth.token_url == f"{oidc.issuer}/token"
    assert auth.userdata_url == "https://userinfo.example/me"


@pytest.mark.parametrize("issuer_suffix, mode, garbage, fragment", [
    ("/not-an-issuer", None, True, "answered HTTP 404"),
    ("", "garbage", True, "not JSON"),
    ("", "reset", False, "no answer"),
])  # fmt: skip
async def test_check_provider_before_login(oidc: OidcProvider, issuer_suffix: str, mode: str | None,
                                           garbage: bool, fragment: str) -> None:  # fmt: skip
    auth = make_auth(oidc.issuer + issuer_suffix, provider_check_interval=0)
    if mode is None:
        with pytest.raises(ProviderUnavailable) as e:
            await auth.check_provider()
    else:
        await auth.check_provider()  # fine while the provider is fine
        with oidc.mode(mode), pytest.raises(ProviderUnavailable) as e:
            await auth.check_provider()
    assert e.value.garbage is garbage and fragment in str(e.value)


async def test_login_failures_are_clear_pages(oidc: OidcProvider, caplog: pytest.LogCaptureFixture) -> None:
    client_id, secret = oidc.register_client("http://127.0.0.1:1/hub/oauth_callback")
    auth = make_auth(oidc.issuer, client_id=client_id, client_secret=secret)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(web.HTTPError) as e:  # a code the provider does not know
            await auth.authenticate(FakeCallback())
        assert e.value.status_code == 403 and e.value.get_message() == REFUSED_MESSAGE
        for mode, status, message in (("garbage", 502, GARBAGE_MESSAGE), ("reset", 503, DOWN_MESSAGE)):
            with oidc.mode(mode), pytest.raises(web.HTTPError) as e:
                await auth.authenticate(FakeCallback())
            assert (e.value.status_code, e.value.get_message()) == (status, message)
    down = make_auth(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(web.HTTPError) as e:
        await down.authenticate(FakeCallback())
    assert (e.value.status_code, e.value.get_message()) == (503, DOWN_MESSAGE)
    lines = [r.getMessage() for r in caplog.records if r.name == "visa-oidc-test"]
    assert any("OIDC login failed: provider" in line and "not JSON" in line for line in lines)
    assert all(r.exc_info is None for r in caplog.records if r.name == "visa-oidc-test")


async def test_refresh_refused_token_vs_provider_outage(oidc: OidcProvider, caplog: pytest.LogCaptureFixture) -> None:
    client_id, secret = oidc.register_client("http://127.0.0.1:1/hub/oauth_callback")
    stale = {"token_response": {"access_token": "revoked", "token_type": "Bearer", "refresh_token": "revoked"},
             "access_token": "revoked", "refresh_token": "revoked"}  # fmt: skip
    auth = make_auth(oidc.issuer, client_id=client_id, client_secret=secret)
    with caplog.at_level(logging.INFO):
        assert await auth.refresh_identity(FakeUser("alice", stale)) is False  # refused: log in again
        assert "no longer accepts the login of alice" in caplog.text
        for mode in ("garbage", "reset"):
            with oidc.mode(mode):
                assert await auth.refresh_identity(FakeUser("alice", stale)) is True  # outage: keep
        strict = make_auth(oidc.issuer, client_id=client_id, client_secret=secret, keep_session_if_provider_down=False)
        await strict.ensure_endpoints()
        with oidc.mode("reset"):
            assert await strict.refresh_identity(FakeUser("alice", stale)) is False
    assert "keeping the session" in caplog.text and "a new login is needed" in caplog.text
    assert "revoked" not in caplog.text  # the (fake) tokens are never logged
