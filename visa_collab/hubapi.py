"""The few JupyterHub REST API calls the collaboration service makes, with its own token.

Every call has a timeout; reads are retried with a short backoff (the hub may be restarting),
writes are not (a share grant is idempotent in the hub, but a half-seen error is reported
rather than guessed about). Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger("visa_collab.hub")


class HubError(Exception):
    """The hub refused or failed a call; `status` is its HTTP status (599: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def _q(name: str) -> str:
    return quote(name, safe="")


class HubAPI:
    def __init__(self, api_url: str, token: str, timeout: float = 10.0, retries: int = 3) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout, self.retries = timeout, retries

    async def _call(self, method: str, path: str, body: Any = None, ok404: bool = False) -> Any:
        attempts = self.retries if method == "GET" else 1
        delay = 0.2
        for attempt in range(1, attempts + 1):
            req = HTTPRequest(
                f"{self.api_url}{path}", method=method,
                headers={"Authorization": f"token {self._token}", "Content-Type": "application/json"},
                body=None if body is None else json.dumps(body),
                allow_nonstandard_methods=True, request_timeout=self.timeout,
                connect_timeout=self.timeout,
            )
            try:
                resp = await AsyncHTTPClient().fetch(req)
            except HTTPClientError as e:
                if e.code == 404 and ok404:
                    return None
                if e.code == 599 and attempt < attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                message = ""
                if e.response is not None and e.response.body:
                    try:
                        message = json.loads(e.response.body).get("message", "")
                    except (ValueError, AttributeError):
                        message = e.response.body[:200].decode("utf8", "replace")
                raise HubError(e.code, message or str(e)) from None
            except OSError as e:
                if attempt < attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                raise HubError(599, f"hub unreachable: {e}") from None
            if not resp.body:
                return {}
            return json.loads(resp.body)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reads ------------------------------------------------------------------------------
    async def user(self, name: str) -> dict | None:
        return await self._call("GET", f"/users/{_q(name)}?include_stopped_servers=1", ok404=True)

    async def group(self, name: str) -> dict | None:
        return await self._call("GET", f"/groups/{_q(name)}", ok404=True)

    async def users(self) -> list[dict]:
        out: list[dict] = []
        offset = 0
        while True:
            page = await self._call("GET", f"/users?include_stopped_servers=1&offset={offset}&limit=200")
            out.extend(page)
            if len(page) < 200:
                return out
            offset += len(page)

    async def shares(self, owner: str, server: str) -> list[dict]:
        model = await self._call("GET", f"/shares/{_q(owner)}/{_q(server)}", ok404=True)
        if model is None:
            return []
        return model.get("items", model) if isinstance(model, dict) else model

    # -- writes -----------------------------------------------------------------------------
    async def grant(self, owner: str, server: str, member: str, scopes: list[str]) -> dict:
        return await self._call("POST", f"/shares/{_q(owner)}/{_q(server)}", {"user": member, "scopes": scopes})

    async def revoke(self, owner: str, server: str, member: str, scopes: list[str] | None = None) -> dict:
        body: dict[str, Any] = {"user": member}
        if scopes is not None:
            body["scopes"] = scopes
        return await self._call("PATCH", f"/shares/{_q(owner)}/{_q(server)}", body)

    async def stop_server(self, owner: str, server: str) -> dict:
        """Stop (not delete) a named server; the hub answers before it has stopped (202)."""
        return await self._call("DELETE", f"/users/{_q(owner)}/servers/{_q(server)}", {"remove": False})

    async def start_server(self, owner: str, server: str, user_options: dict) -> dict:
        return await self._call("POST", f"/users/{_q(owner)}/servers/{_q(server)}", {"user_options": user_options})
