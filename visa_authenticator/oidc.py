"""Facility login over OpenID Connect (Keycloak and the like), with the VISA catalogue.

`VisaOAuthenticator` is oauthenticator's `GenericOAuthenticator` for the identity
step and `VisaAuthenticator` for everything after it: the claim named by
`username_claim` is the person id looked up in the catalogue, which sets the
groups, the admin flag and `auth_state["visa"]` (oauthenticator's own keys,
tokens included, are kept). The provider's own groups are ignored: the catalogue
is the authority on who may do what.

What it adds to oauthenticator, and why:

- Endpoints from the issuer's discovery document (`oidc_issuer`), fetched
  lazily, so a hub starts even while the provider is down.
- A provider that is down or answers garbage gives one clear log line and a
  clear 503/502 page, never a 500 with a traceback. At the login button the
  provider is checked first (`provider_check_interval`), so people are not sent
  to a dead login page.
- Refresh (every `auth_refresh_age`, before each spawn): an expired access token
  is renewed with the refresh token; a token the provider no longer accepts
  (session ended, grant revoked) makes `refresh_user` return False, so the person
  logs in again. A provider *outage* keeps sessions alive
  (`keep_session_if_provider_down`): nobody could log in again anyway.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Bool, Float, Unicode, default, validate

from .base import VisaAuthenticator

DOWN_MESSAGE = (
    "The facility login service is not answering. Please try again in a few minutes."
)
GARBAGE_MESSAGE = (
    "The facility login service gave an answer the hub cannot use. Please try again later; "
    "if this persists, tell the facility's IT support."
)
REFUSED_MESSAGE = (
    "The facility login service did not accept this login (it may have taken too long). "
    "Please log in again."
)


class ProviderUnavailable(Exception):
    """The OpenID provider cannot be used right now (down, misconfigured, or answering garbage).

    `garbage` tells an answer we cannot use (502) from no answer at all (503).
    """

    def __init__(self, reason: str, garbage: bool = False) -> None:
        super().__init__(reason)
        self.garbage = garbage


class ClaimMissing(web.HTTPError):
    """The provider's answer does not say who the person is: a 502 page shown as is."""

    def __init__(self) -> None:
        super().__init__(
            502,
            "The facility login did not say who you are (no user name in the answer). "
            "Please tell the facility's IT support.",
            reason="Login service error",
        )


def classify(error: BaseException) -> ProviderUnavailable | None:
    """What a failure talking to the provider means; None for errors that are not its fault.

    Tokens never reach these messages: tornado's errors carry a status and a short
    reason, JSON errors a position, and oauthenticator's own 5xx messages (which can
    quote a token response) are replaced by a fixed text.
    """
    if isinstance(error, ProviderUnavailable):
        return error
    if isinstance(error, HTTPClientError):
        if error.code == 599:
            return ProviderUnavailable(f"no answer ({error.message or type(error).__name__})")
        if error.code >= 500:
            return ProviderUnavailable(f"answered HTTP {error.code}")
        return None
    if isinstance(error, (ConnectionError, asyncio.TimeoutError, OSError)):
        return ProviderUnavailable(f"no answer ({type(error).__name__}: {error})")
    if isinstance(error, json.JSONDecodeError):
        return ProviderUnavailable(f"answered something that is not JSON ({error.msg})", garbage=True)
    if isinstance(error, web.HTTPError) and error.status_code >= 500:
        return ProviderUnavailable("answered without the expected token or claims", garbage=True)
    if isinstance(error, (ValueError, TypeError, KeyError, AttributeError)):
        return ProviderUnavailable(
            f"answered something that is not a valid OpenID Connect response ({type(error).__name__})",
            garbage=True,
        )
    return None


def page_error(problem: ProviderUnavailable) -> web.HTTPError:
    """The page a person sees for a provider problem."""
    if problem.garbage:
        return web.HTTPError(502, GARBAGE_MESSAGE, reason="Login service error")
    return web.HTTPError(503, DOWN_MESSAGE, reason="Login service unavailable")


class VisaOAuthLoginHandler(OAuthLoginHandler):
    """`/hub/oauth_login`: check the provider answers before sending the person to it."""

    async def get(self) -> None:  # type: ignore[override]
        try:
            await self.authenticator.check_provider()
        except ProviderUnavailable as e:
            self.authenticator.log.error(
                "OIDC provider %s unusable at login: %s", self.authenticator.provider_name, e
            )
            raise page_error(e) from None
        super().get()


class VisaOAuthenticator(VisaAuthenticator, GenericOAuthenticator):
    """OpenID Connect login; entitlements, groups and admin flag from the facility catalogue."""

    login_handler = VisaOAuthLoginHandler

    oidc_issuer = Unicode(
        "",
        config=True,
        help="""Issuer URL of the OpenID provider, e.g.
        `https://login.facility.example/realms/facility` (Keycloak).

        `authorize_url`, `token_url` and `userdata_url` not set explicitly are taken
        from `<issuer>/.well-known/openid-configuration`, fetched at the first login
        (so the hub starts while the provider is down) and again after
        `oidc_discovery_ttl` seconds.
        """,
    )
    oidc_discovery_ttl = Float(
        3600.0,
        config=True,
        help="Seconds the provider's discovery document (its endpoints) is reused.",
    )
    provider_check_interval = Float(
        10.0,
        config=True,
        help="""When someone clicks "Sign in", the discovery document is fetched again
        if older than this (seconds): a provider that is down then gives a clear
        page at the hub instead of a browser error at the provider. 0 checks every time.
        Needs `oidc_issuer`.
        """,
    )
    keep_session_if_provider_down = Bool(
        True,
        config=True,
        help="""When a refresh cannot reach the provider (down, HTTP 5xx, garbage),
        keep the person logged in (their entitlements are still refreshed from the
        catalogue) and log an error. False logs them out instead; they cannot log in
        again until the provider is back. A token the provider *refuses* always
        ends the session.
        """,
    )

    @default("username_claim")
    def _default_username_claim(self) -> str:
        return "preferred_username"  # Keycloak's login name; the catalogue's person id

    @default("scope")
    def _default_scope(self) -> list[str]:
        return ["openid", "profile", "email"]

    @default("login_service")
    def _default_login_service(self) -> str:
        return "your facility account"

    @default("http_request_kwargs")
    def _default_http_request_kwargs(self) -> dict[str, Any]:
        # tornado waits 20 s by default; a person waiting on a login page should not
        return {"connect_timeout": 5.0, "request_timeout": 15.0}

    @validate("oidc_issuer")
    def _validate_issuer(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"].rstrip("/")
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"oidc_issuer must be an http(s) URL, not {value!r}")
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._metadata_lock = asyncio.Lock()
        # endpoints the administrator set explicitly are never replaced by discovery
        self._explicit = {n for n in ("authorize_url", "token_url", "userdata_url") if getattr(self, n)}

    @property
    def provider_name(self) -> str:
        """How log lines name the provider."""
        return self.oidc_issuer or self.token_url or "(OIDC provider not configured)"

    # -- discovery -----------------------------------------------------------------------------

    async def provider_metadata(self, max_age: float) -> dict[str, Any]:
        """The issuer's discovery document, fetched if older than `max_age` seconds."""
        if not self.oidc_issuer:
            raise ProviderUnavailable("oidc_issuer is not set")
        async with self._metadata_lock:  # fifty people clicking at once make one request
            if self._metadata is not None and time.monotonic() - self._metadata_at < max_age:
                return self._metadata
            url = f"{self.oidc_issuer}/.well-known/openid-configuration"
            try:
                doc = await self.httpfetch(url, label="fetching OIDC discovery document", method="GET",
                                           headers={"Accept": "application/json"})  # fmt: skip
            except Exception as e:
                problem = classify(e) or ProviderUnavailable(f"discovery failed ({type(e).__name__})")
                if isinstance(e, HTTPClientError) and e.code < 500:
                    problem = ProviderUnavailable(f"discovery document answered HTTP {e.code}", garbage=True)
                raise problem from None
            self._metadata = self._check_metadata(doc)
            self._metadata_at = time.monotonic()
            for name, key in (("authorize_url", "authorization_endpoint"), ("token_url", "token_endpoint"),
                              ("userdata_url", "userinfo_endpoint")):  # fmt: skip
                if name not in self._explicit:
                    setattr(self, name, self._metadata[key])
            return self._metadata

    def _check_metadata(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise ProviderUnavailable("discovery document is not a JSON object", garbage=True)
        if str(doc.get("issuer", "")).rstrip("/") != self.oidc_issuer:
            raise ProviderUnavailable(
                f"discovery document names issuer {str(doc.get('issuer'))[:200]!r}, "
                f"not {self.oidc_issuer!r}", garbage=True,
            )  # fmt: skip
        for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
            if not str(doc.get(key, "")).startswith(("https://", "http://")):
                raise ProviderUnavailable(f"discovery document has no valid {key}", garbage=True)
        return doc

    async def ensure_endpoints(self) -> None:
        """Endpoints known (from configuration or discovery), or ProviderUnavailable."""
        if self.oidc_issuer:
            await self.provider_metadata(self.oidc_discovery_ttl)
        elif not (self.authorize_url and self.token_url and self.userdata_url):
            raise ProviderUnavailable(
                "neither oidc_issuer nor authorize_url, token_url and userdata_url are set"
            )

    async def check_provider(self) -> None:
        """Before sending someone to log in: does the provider answer?"""
        if self.oidc_issuer:
            await self.provider_metadata(self.provider_check_interval)
        else:
            await self.ensure_endpoints()

    # -- login -----------------------------------------------------------------------------------

    async def authenticate(self, handler: Any, data: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        """oauthenticator's code exchange and userinfo, then the catalogue (`visa_auth_model`)."""
        try:
            await self.ensure_endpoints()
            model = await super().authenticate(handler, data, **kwargs)
        except Exception as e:
            if isinstance(e, ClaimMissing) or (isinstance(e, web.HTTPError) and e.status_code < 500):
                raise  # already a page meant for the person
            if isinstance(e, HTTPClientError) and e.code < 500:  # the code was refused (reused, expired)
                self.log.warning("OIDC login refused by provider %s: HTTP %s", self.provider_name, e.code)
                raise web.HTTPError(403, REFUSED_MESSAGE, reason="Login not completed") from None
            problem = classify(e)
            if problem is None:
                raise  # our bug: JupyterHub logs it in full and shows a generic page
            self.log.error("OIDC login failed: provider %s %s", self.provider_name, problem)
            self.log.debug("OIDC login failure, in full", exc_info=True)  # a bug shown as garbage
            raise page_error(problem) from None
        if not model:
            return None
        return await self.visa_auth_model(model["name"], model["auth_state"])

    def user_info_to_username(self, user_info: Any) -> str:
        """The person id from the claim named by `username_claim`, or a clear 502 page.

        The log line lists the claims present (names only: their values are personal).
        """
        if not isinstance(user_info, dict):
            raise TypeError("userinfo is not a JSON object")
        if callable(self.username_claim):
            value = self.username_claim(user_info)
        else:
            value = user_info.get(self.username_claim)
        if not isinstance(value, str) or not value.strip():
            self.log.error(
                "OIDC userinfo from %s has no usable %r claim (claims present: %s); "
                "set VisaOAuthenticator.username_claim or the provider's client scopes",
                self.provider_name, self.username_claim, ", ".join(sorted(user_info)) or "none",
            )  # fmt: skip
            raise ClaimMissing()
        return value.strip()

    async def get_user_groups(self, auth_state: dict[str, Any]) -> set[str]:
        """No groups from the provider: `visa_auth_model` sets them from the catalogue."""
        return set()

    # -- refresh ---------------------------------------------------------------------------------

    async def refresh_identity(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        """Renew the tokens; False when the provider refuses them, as configured when it is down."""
        if not self.enable_auth_state:
            return True
        auth_state = await user.get_auth_state()
        if not auth_state or not auth_state.get("token_response"):
            self.log.info("No OIDC tokens stored for %s: a new login is needed", user.name)
            return False
        try:
            await self.ensure_endpoints()
            result = await super().refresh_identity(user, handler)
        except Exception as e:
            problem = classify(e)  # a missing claim counts as garbage here
            if problem is None:
                raise
            keep = self.keep_session_if_provider_down
            self.log.error(
                "OIDC refresh for %s: provider %s %s; %s",
                user.name, self.provider_name, problem,
                "keeping the session" if keep else "a new login is needed",
            )  # fmt: skip
            self.log.debug("OIDC refresh failure, in full", exc_info=True)
            return keep
        if result is False:
            self.log.warning("OIDC provider %s no longer accepts the login of %s: "
                             "a new login is needed", self.provider_name, user.name)  # fmt: skip
        elif isinstance(result, dict) and result.get("name") != user.name:
            self.log.warning("OIDC refresh for %s returned the identity of %r: a new login is needed",
                             user.name, result.get("name"))  # fmt: skip
            return False
        return result
