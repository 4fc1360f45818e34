"""People driving a hub with the collaboration service (the RFB client is in tests/rfb.py)."""
from __future__ import annotations

import re
from html import unescape

import requests

from tests.hubtools import Browserless, Hub

SERVICE = "/services/visa-collab/"


class Person(Browserless):
    """A logged-in person: hub pages, the collaboration service, instances shared with them."""

    def __init__(self, hub: Hub, name: str) -> None:
        super().__init__(hub, name, f"{name}-demo")
        assert self.logged_in, f"demo login of {name} failed"
        self.name = name
        self._service_xsrf: str | None = None

    # -- the collaboration service (cookie + XSRF, as its pages' scripts do) -------------------
    def service_get(self, path: str, **kw) -> requests.Response:
        return self.s.get(f"{self.hub.url}{SERVICE}{path}", timeout=30, **kw)

    def service_post_form(self, path: str, data: dict, **kw) -> requests.Response:
        return self.s.post(f"{self.hub.url}{SERVICE}{path}", data={"_xsrf": self.service_xsrf(), **data},
                           timeout=30, **kw)

    def service_xsrf(self) -> str:
        if self._service_xsrf is None:
            r = self.service_get("api/me")  # the first call goes through the hub's OAuth
            assert r.status_code == 200, (r.status_code, r.url, r.text[:300])
            self._service_xsrf = r.json()["xsrf"]
        return self._service_xsrf

    def collab(self, method: str, path: str, json=None) -> requests.Response:
        xsrf = self.service_xsrf()
        return self.s.request(method, f"{self.hub.url}{SERVICE}api/{path}", json=json, timeout=60,
                              headers={"X-XSRFToken": xsrf, "Sec-Fetch-Mode": "cors"})

    # -- instances ----------------------------------------------------------------------------
    def open_instance(self, owner: str, server: str, path: str) -> requests.Response:
        """GET a page of an instance like a browser, confirming the hub's OAuth page if shown."""
        r = self.instance_get(owner, server, path)
        if r.status_code == 200 and "/hub/api/oauth2/authorize" in r.url and "Authorize access" in r.text:
            fields = re.findall(r'<input type="hidden" name="(_xsrf|scopes)" value="([^"]*)"', r.text)
            r = self.s.post(r.url, data=[(k, unescape(v)) for k, v in fields], timeout=30)
        return r

    def instance_call(self, method: str, owner: str, server: str, path: str, **kw) -> requests.Response:
        base = f"/user/{owner}/{server}/"
        if not any(c.name == "_xsrf" and c.path == base for c in self.s.cookies):
            self.open_instance(owner, server, "visa/desktop")  # OAuth round trip, instance cookies
        xsrf = next((c.value for c in self.s.cookies if c.name == "_xsrf" and c.path == base), "")
        return self.s.request(method, f"{self.hub.url}{base}{path}", headers={"X-XSRFToken": xsrf},
                              timeout=30, allow_redirects=False, **kw)

    def cookie_header(self, owner: str, server: str) -> str:
        base = f"/user/{owner}/{server}/"
        return "; ".join(f"{c.name}={c.value}" for c in self.s.cookies if base.startswith(c.path))

    def websocket(self, owner: str, server: str, path: str, timeout: float = 30):
        import websocket

        return websocket.create_connection(
            self.hub.url.replace("http", "ws") + f"/user/{owner}/{server}/{path}",
            header=[f"Cookie: {self.cookie_header(owner, server)}"], origin=self.hub.url, timeout=timeout,
        )


__all__ = ["Person", "SERVICE"]
