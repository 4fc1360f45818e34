"""Password login for the demo hub, over the same catalogue and rules as production.

Passwords are the `demo_password` fields of the YAML catalogue and are shown on
the login page on purpose: a newcomer must be able to try each role. Never use
this authenticator on a hub that holds real data.
"""

from __future__ import annotations

import hmac
from datetime import date
from typing import Any

from tornado import web
from traitlets import Bool, validate

from . import rules
from .base import VisaAuthenticator
from .catalogue import Role
from .catalogue_data import CatalogueData
from .file_catalogue import FileCatalogue


def demo_accounts(data: CatalogueData, today: date) -> list[dict[str, str]]:
    """Rows for the login page: who each demo person is and how to log in as them."""
    rows = []
    for person in data.persons:
        password = data.demo_passwords.get(person.id)
        if not password:
            continue
        roles = rules.active_roles(person, today)
        team = sorted({e.proposal_id for e in data.experiments_of(person.id)})
        instruments = [i.id for i in data.instruments_of(person.id)]
        reach = [f"{p} (team)" for p in team]
        held = {Role(r) for r in roles}
        if rules.SCIENTIST_ROLES & held:
            reach += [f"all of {i} (scientist)" for i in instruments]
        if not reach and rules.NO_PROPOSAL_ROLES & held:
            reach = ["none needed (staff)"]
        note = "" if roles else "expired"
        if person.quota == 0:
            note = "awaiting approval (quota 0)"
        rows.append(
            {
                "username": person.id,
                "name": person.name,
                "roles": ", ".join(roles) or "none",
                "proposals": ", ".join(reach) or "-",
                "note": note,
                "password": password,
            }
        )
    return rows


class VisaDemoAuthenticator(VisaAuthenticator):
    """Demo login: user name plus the `demo_password` given in the YAML catalogue."""

    show_demo_accounts = Bool(
        True,
        config=True,
        help="List the demo accounts, their roles, proposals and passwords on the login page.",
    )

    @validate("catalogue_class")
    def _validate_catalogue_class(self, proposal: dict[str, Any]) -> type:
        if not issubclass(proposal["value"], FileCatalogue):
            raise ValueError(
                "VisaDemoAuthenticator reads demo passwords from the YAML catalogue: "
                "catalogue_class must be FileCatalogue or a subclass"
            )
        return proposal["value"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log.warning(
            "VisaDemoAuthenticator: demo passwords come from %s and are shown on the login "
            "page. For demonstrations only.",
            self.file_catalogue.path or "(FileCatalogue.path not set)",
        )

    @property
    def file_catalogue(self) -> FileCatalogue:
        provider = self.catalogue_provider
        assert isinstance(provider, FileCatalogue)
        return provider

    @property
    def demo_accounts(self) -> list[dict[str, str]]:
        """Read by templates/login.html; empty (never an error) if the catalogue is unusable."""
        if not self.show_demo_accounts:
            return []
        try:
            return demo_accounts(self.file_catalogue.data(), self.now().date())
        except Exception:
            self.log.exception("Cannot list demo accounts")
            return []

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> dict[str, Any] | None:
        """Check the demo password, then build the model like any VISA authenticator."""
        username = self.normalize_username(str(data.get("username") or "").strip())
        password = str(data.get("password") or "")
        if not username:
            return None
        try:
            catalogue_data = self.file_catalogue.data()
        except Exception:
            self.log.exception("Demo catalogue unavailable")
            message = "The demo catalogue is unavailable; see the hub log."
            raise web.HTTPError(503, message) from None
        if catalogue_data.person(username) is None:
            # visa_auth_model gives the clear "no such account" refusal
            return await self.visa_auth_model(username)
        expected = catalogue_data.demo_passwords.get(username)
        if not expected or not hmac.compare_digest(
            password.encode("utf-8"), expected.encode("utf-8")
        ):
            self.log.warning("Demo login failed for %s: wrong or no demo password", username)
            return None
        return await self.visa_auth_model(username)
