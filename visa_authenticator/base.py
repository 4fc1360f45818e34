"""What every VISA authenticator does once it knows who is logging in.

The identity step differs (demo password now, the facility's OIDC later); what
follows is shared: find the person in the facility catalogue, refuse unknown or
expired accounts with a message a person can act on, and hand JupyterHub the
entitlements (in `auth_state["visa"]`, read by the spawner) and the groups.
`refresh_user` recomputes them, so a change at the user office reaches a
logged-in user within `auth_refresh_age` and always before a spawn.

Subclasses implement `authenticate()` and end it with `await self.visa_auth_model(name)`.
It cooperates with OAuthenticator: `refresh_user` first calls `refresh_identity`
(by default the next class's `refresh_user`), so token refresh still happens,
then adds fresh entitlements.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from jupyterhub.auth import Authenticator
from tornado import web
from traitlets import Callable, Dict, Integer, Type, default, validate

from . import rules
from .cache import CachedCatalogue
from .catalogue import Catalogue, CatalogueUnavailable, Role
from .facts import gather_facts
from .file_catalogue import FileCatalogue

CATALOGUE_DOWN = "The facility catalogue is unavailable. Please try again in a few minutes."


def _utc_now() -> datetime:
    return datetime.now(UTC)


class VisaAuthenticator(Authenticator):
    """Base for VISA authenticators: catalogue look-up, entitlements, groups, refresh."""

    catalogue_class = Type(
        FileCatalogue,
        klass=Catalogue,
        config=True,
        help="""Where facts about persons, proposals and experiments come from.

        Configured in its own section, e.g. `c.FileCatalogue.path`. Providers
        that query a remote service are wrapped in a `CachedCatalogue`
        (`c.CachedCatalogue.ttl`).
        """,
    )
    default_quota = Integer(
        2,
        config=True,
        help="Instances a person may have at once unless a role or the person says otherwise "
        "(VISA: 2). -1 = unlimited, 0 = account pending approval.",
    )
    role_quotas = Dict(
        {"ADMIN": -1},
        config=True,
        help="""Per-role instance quota, e.g. {"STAFF": 5, "ADMIN": -1}.

        A person gets the most generous quota among their active roles; a
        `quota` on the person in the catalogue overrides this.
        """,
    )
    instrument_control_days = Integer(
        7,
        config=True,
        help="Days before an experiment's start and after its end during which team members "
        "with the INSTRUMENT_CONTROL role may pilot the instrument.",
    )
    open_data_limit = Integer(
        200,
        config=True,
        help="""At most this many open-data proposals (newest first) are offered to everyone.

        They are stored in every user's auth_state, so keep this modest; 0 offers none.
        """,
    )
    clock = Callable(
        _utc_now,
        config=True,
        help="Returns the current timezone-aware datetime; the hub's local date of it is "
        "'today' for role expiry and embargoes. Replace in tests.",
    )

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True  # groups proposal:<id>, instrument:<id>, role:<role> follow the catalogue

    @default("refresh_pre_spawn")
    def _default_refresh_pre_spawn(self) -> bool:
        return True  # a spawn must see today's entitlements, not those of the login

    @default("auth_refresh_age")
    def _default_auth_refresh_age(self) -> int:
        return 300

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        # the catalogue is the allow list: unknown persons are refused anyway
        return not self.allowed_users

    @validate("default_quota")
    def _validate_default_quota(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < -1:
            raise ValueError("default_quota must be -1 (unlimited), 0 or more")
        return proposal["value"]

    @validate("role_quotas")
    def _validate_role_quotas(self, proposal: dict[str, Any]) -> dict[str, int]:
        out: dict[str, int] = {}
        for role, value in proposal["value"].items():
            try:
                name = Role(str(role).upper()).value
            except ValueError:
                known = ", ".join(r.value for r in Role)
                raise ValueError(f"role_quotas: unknown role {role!r} (known: {known})") from None
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise ValueError(f"role_quotas[{role!r}] must be an integer >= -1, not {value!r}")
            out[name] = value
        return out

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._catalogue: Catalogue | None = None
        self._provider: Catalogue | None = None
        if not self.enable_auth_state:
            self.log.warning(
                "%s: Authenticator.enable_auth_state is False, so the spawner will not see "
                "proposals and quotas. Enable it (and set JUPYTERHUB_CRYPT_KEY).",
                type(self).__name__,
            )

    @property
    def catalogue_provider(self) -> Catalogue:
        """The configured catalogue itself (without the cache)."""
        if self._provider is None:
            self._provider = self.catalogue_class(parent=self)
        return self._provider

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue to query: the provider, behind a TTL cache if it is remote."""
        if self._catalogue is None:
            provider = self.catalogue_provider
            self._catalogue = (
                CachedCatalogue(parent=self, inner=provider) if provider.cacheable else provider
            )
        return self._catalogue

    @property
    def policy(self) -> rules.Policy:
        return rules.Policy(
            self.default_quota, dict(self.role_quotas), self.instrument_control_days
        )

    def now(self) -> datetime:
        """Current time in the hub's timezone (its date is 'today')."""
        return self.clock().astimezone()

    async def may_pilot(self, username: str, proposal: str, instrument: str, today: date | None = None) -> bool:
        """Does this person hold INSTRUMENT_CONTROL for an experiment of `proposal` on `instrument`
        today (± `instrument_control_days`)? Asked by hub-side code that must not import this
        package (the OpenStack instrument groups, through the hub's authenticator). Raises
        CatalogueUnavailable on an outage."""
        person = await self.catalogue.person(username)
        if person is None or not proposal:
            return False
        team = await self.catalogue.experiments_of(username)
        day = today or self.now().date()
        return rules.may_pilot(person, team, proposal, instrument, day, self.instrument_control_days)

    async def _facts(self, username: str, now: datetime) -> rules.Facts | None:
        try:
            return await gather_facts(self.catalogue, username, now.date(), self.open_data_limit)
        except CatalogueUnavailable as e:
            # an outage, not a bug: one clear line, no traceback
            self.log.error("Catalogue unavailable for %s: %s", username, e)
            raise web.HTTPError(503, CATALOGUE_DOWN, reason="Catalogue unavailable") from None
        except Exception:
            self.log.exception("Catalogue query failed for %s", username)
            raise web.HTTPError(503, CATALOGUE_DOWN, reason="Catalogue unavailable") from None

    async def visa_auth_model(
        self, username: str, auth_state: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The JupyterHub auth model for a person whose identity is established.

        Raises HTTPError 403 (shown on the login page) for an unknown or expired
        account and 503 if the catalogue cannot be reached. Keys already in
        `auth_state` (e.g. OAuth tokens) are kept.
        """
        now = self.now()
        facts = await self._facts(username, now)
        if facts is None:
            self.log.warning("Login refused: %s is not in the facility catalogue", username)
            raise web.HTTPError(
                403,
                f"The facility has no account named '{username}'. If you registered recently, "
                "try again later; otherwise contact the user office.",
                reason="Login refused",  # the error page's heading; the message follows
            )
        reason = rules.refusal(facts.person, now.date())
        if reason:
            self.log.warning("Login refused for %s: %s", username, reason)
            raise web.HTTPError(403, reason, reason="Login refused")
        entitlements = rules.entitlements(facts, now, self.policy)
        return {
            "name": username,
            "admin": entitlements["admin"] or username in self.admin_users,
            "groups": rules.groups(facts, entitlements),
            "auth_state": {**(auth_state or {}), "visa": entitlements},
        }

    async def refresh_identity(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        """Step one of `refresh_user`: is the login itself still valid?

        The next class in the MRO answers (OAuthenticator refreshes its tokens;
        plain Authenticator says True). A subclass overrides this step, not
        `refresh_user`, to handle its identity provider's failures.
        """
        return await super().refresh_user(user, handler)

    async def refresh_user(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        """Recompute entitlements; False (log in again) if the account is gone or expired.

        A catalogue outage keeps the current entitlements rather than logging
        everybody out.
        """
        if handler is not None and not hasattr(handler, "_token_authenticated"):
            # JupyterHub 6.1.1 reads this flag when a refresh says "log in again" but
            # sets it only on token-authenticated requests: on a cookie request the
            # redirect to the login page still happens, after an AttributeError traceback.
            handler._token_authenticated = False
        upstream = await self.refresh_identity(user, handler)
        if upstream is False:
            return False
        if isinstance(upstream, dict) and "auth_state" in upstream:
            auth_state = upstream["auth_state"]
        else:
            auth_state = await user.get_auth_state()
        seat_model = rules.seat_account(user.name, auth_state)
        if seat_model is not None:  # made by a course's sign-up link: the catalogue does not know it
            return seat_model
        try:
            model = await self.visa_auth_model(user.name, auth_state)
        except web.HTTPError as e:
            if e.status_code == 403:
                return False
            return upstream
        if isinstance(upstream, dict):
            model = {**upstream, **model}
        return model
