"""Instances phoning home: real progress from inside a booting VM.

The instance's start script (`cloudinit.START_SCRIPT`) POSTs each stage it reaches to
`/hub/api/visa/phone-home`, authenticated with the single-user server's own JupyterHub API token
(the one in its user-data). The hub side is two small pieces:

- `PhoneHomeHandler`: a hub API handler (`JupyterHub.extra_handlers`). It accepts a request only
  from a valid hub token, validates the small JSON body, and hands it to the board.
- `BOARD`: a process-wide mailbox. A backend's `create` registers an inbox for the token it put in
  the user-data (kept as a SHA-256 fingerprint, never the token) and reads the stages from it. A
  report for a token nobody waits for (a hub that restarted since) is answered 404 and dropped.
"""
from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
from dataclasses import dataclass, field

from jupyterhub.apihandlers import APIHandler
from tornado import web

from .cloudinit import STAGES


def fingerprint(token: str) -> str:
    return hashlib.sha256(b"visa-phone-home\0" + token.encode()).hexdigest()


@dataclass
class Report:
    stage: str
    message: str = ""
    address: str = ""
    port: int = 0


def parse_report(body: bytes) -> Report:
    """Validate a phone-home body; ValueError with a short reason if it is not one."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise ValueError("body is not JSON") from None
    if not isinstance(data, dict) or data.get("stage") not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}")
    message = data.get("message", "")
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    address, port = data.get("address", ""), data.get("port", 0)
    if address:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise ValueError("address must be an IP address") from None
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError("port must be an integer 0-65535")
    return Report(stage=data["stage"], message="".join(c for c in message[:500] if c.isprintable()),
                  address=address, port=port)


@dataclass
class Inbox:
    key: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


class PhoneHomeBoard:
    """Inboxes by token fingerprint; used only from the hub's event loop."""

    def __init__(self) -> None:
        self._inboxes: dict[str, Inbox] = {}

    def register(self, token: str) -> Inbox:
        inbox = Inbox(fingerprint(token))
        self._inboxes[inbox.key] = inbox
        return inbox

    def unregister(self, inbox: Inbox) -> None:
        if self._inboxes.get(inbox.key) is inbox:
            del self._inboxes[inbox.key]

    def post(self, token: str, report: Report) -> bool:
        inbox = self._inboxes.get(fingerprint(token))
        if inbox is None:
            return False
        inbox.queue.put_nowait(report)
        return True


BOARD = PhoneHomeBoard()


class PhoneHomeHandler(APIHandler):
    """POST /hub/api/visa/phone-home with `Authorization: token <the server's API token>`."""

    async def post(self) -> None:
        token = self.get_auth_token()
        if not token or self.current_user is None:
            raise web.HTTPError(403, "a valid server token is required")
        try:
            report = parse_report(self.request.body)
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None
        if not BOARD.post(token, report):
            raise web.HTTPError(404, "no start is waiting for this instance")
        self.set_status(204)
        self.finish()


handlers = [(r"/api/visa/phone-home", PhoneHomeHandler)]
