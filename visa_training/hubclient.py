"""The hub REST calls the training service makes, on top of `visa_collab.hubapi.HubAPI`
(timeouts, retries of reads, errors as `HubError`, tokens never logged).

Sharing a course instance with its trainers goes through the collaboration service (its audit log
and reconciliation then know the grant), which lets this service, with its own token, make a
course's *trainers* GUEST or SUPPORT on that course's instances, as the owner could
(`visa_collab.collab.Collaboration.course_grant`). No token of the participant is made: the scope
``tokens`` would let this service mint any user's, administrators' included.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from visa_collab.hubapi import HubAPI, HubError


def _q(name: str) -> str:
    return quote(name, safe="")


class TrainingHub(HubAPI):
    async def create_user(self, name: str) -> dict:
        """Create the hub user if missing (a participant who never logged in); 409 = already there."""
        try:
            return await self._call("POST", f"/users/{_q(name)}", {})
        except HubError as e:
            if e.status == 409:
                return {"name": name}
            raise

    async def delete_user(self, name: str) -> None:
        try:
            await self._call("DELETE", f"/users/{_q(name)}")
        except HubError as e:
            if e.status != 404:
                raise
        self.forget(name)

    async def spawn(self, owner: str, server: str, user_options: dict) -> dict:
        """Create and start a named server; the JSON body is its user_options (JupyterHub's REST API).
        The hub answers when the spawn is done or after its ``slow_spawn_timeout`` (10 s), later on a
        busy host: a 60 s timeout, and no answer in time is no failure (the caller watches the server).
        A server already running or starting is fine (400 "already running" / "pending")."""
        try:
            return await self._call("POST", f"/users/{_q(owner)}/servers/{_q(server)}", user_options, timeout=60)
        except HubError as e:
            if e.status == 599 or (e.status == 400 and ("already" in e.message or "pending" in e.message)):
                return {}
            raise
        finally:
            self.forget(owner)

    async def put_pool(self, name: str, body: dict) -> dict | None:
        """Fill the warm pool (``PUT /hub/api/visa/pools/<name>``); None when the hub has no pools (404)."""
        try:
            return await self._call("PUT", f"/visa/pools/{_q(name)}", body)
        except HubError as e:
            if e.status == 404:
                return None
            raise

    async def get_pool(self, name: str) -> dict | None:
        """The warm pool's status (``GET /hub/api/visa/pools/<name>``); None when the hub has no such
        pool (it restarted, or has no pools)."""
        return await self._call("GET", f"/visa/pools/{_q(name)}", ok404=True)

    async def delete_pool(self, name: str) -> None:
        try:
            await self._call("DELETE", f"/visa/pools/{_q(name)}")
        except HubError as e:
            if e.status != 404:
                raise

    async def delete_archive(self, owner: str, archive: str) -> None:
        await self._call("DELETE", f"/visa/archives/{_q(owner)}/{_q(archive)}")

    async def collab_call(self, method: str, url: str, body: Any) -> Any:
        """One call to visa-collab (`url`) with this service's own token."""
        req = HTTPRequest(url, method=method, body=None if body is None else json.dumps(body),
                          headers={"Authorization": f"token {self._token}", "Content-Type": "application/json"},
                          request_timeout=self.timeout, connect_timeout=self.timeout)
        try:
            resp = await AsyncHTTPClient().fetch(req)
        except HTTPClientError as e:
            message = e.response.body[:300].decode("utf8", "replace") if e.response is not None else str(e)
            raise HubError(e.code, message) from None
        return json.loads(resp.body) if resp.body else {}
