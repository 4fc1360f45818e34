"""Instances phoning home: real progress from inside a booting VM.

The instance's start script (`cloudinit.START_SCRIPT`) POSTs each stage it reaches to
`/hub/api/visa/phone-home`, authenticated with the single-user server's own JupyterHub API token
(the one in its user-data). The hub side is two small pieces:

- `PhoneHomeHandler`: a hub API handler (`JupyterHub.extra_handlers`). It accepts a request only
  from a valid hub token, validates the small JSON body, and hands it to the board.
- `BOARD`: a process-wide mailbox. A backend's `create` registers an inbox for the token it put in
  the user-data (kept as a SHA-256 fingerprint, never the token) and reads the stages from it. A
  report for a token nobody waits for (a hub that restarted since) is answered 404 and dropped.

A server started again after shelving boots with its first user-data, whose token the hub revoked
at the stop. Its start script POSTs `/hub/api/visa/resume` with `Authorization: visa-resume <key>`
(a random key of that server's user-data; the hub keeps its fingerprint in the server's metadata):
while a start of that server is waiting, the backend has offered this start's instance config
under the fingerprint and `ResumeHandler` answers it; otherwise 404 and the server stays idle.

A server built ahead for a warm pool (`openstack/pool.py`) boots with a config that has no owner:
its start script asks with `{"wait": <s>}` and, for a key the pool told the board to `expect`, the
hub holds the request until the pool offers an adopter's config (or the wait ends: 404, ask again).
Its first call also tells the pool that the server has booted. Keys nobody expects never wait.
"""
from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
from dataclasses import dataclass, field

from jupyterhub.apihandlers import APIHandler
from tornado import web

from visa_spawner.backends.guest.protocol import SCRIPT_STAGES


def fingerprint(token: str) -> str:
    return hashlib.sha256(b"visa-phone-home\0" + token.encode()).hexdigest()


def resume_fingerprint(key: str) -> str:
    """What the hub keeps of a resume key (in the server's metadata: visible to the project)."""
    return hashlib.sha256(b"visa-resume\0" + key.encode()).hexdigest()[:40]


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
    if not isinstance(data, dict) or data.get("stage") not in SCRIPT_STAGES:
        raise ValueError(f"stage must be one of {', '.join(SCRIPT_STAGES)}")
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
        self._resumes: dict[str, dict] = {}
        #: fingerprints of pooled servers' keys → set when the server first asks (it has booted)
        self._expected: dict[str, asyncio.Event] = {}
        self._offered: dict[str, asyncio.Event] = {}

    def register(self, token: str) -> Inbox:
        inbox = Inbox(fingerprint(token))
        self._inboxes[inbox.key] = inbox
        return inbox

    def unregister(self, inbox: Inbox) -> None:
        if self._inboxes.get(inbox.key) is inbox:
            del self._inboxes[inbox.key]

    def offer_resume(self, key_fingerprint: str, config: dict) -> None:
        """This start's instance config, for the server holding the key (until withdrawn)."""
        self._resumes[key_fingerprint] = config
        if key_fingerprint in self._offered:
            self._offered[key_fingerprint].set()

    def expect(self, key_fingerprint: str) -> asyncio.Event:
        """A pooled server will wait with this key; the event is set when it first asks."""
        self._offered[key_fingerprint] = asyncio.Event()
        return self._expected.setdefault(key_fingerprint, asyncio.Event())

    def forget(self, key_fingerprint: str) -> None:
        """The pooled server is adopted or gone: its key waits no more."""
        self._expected.pop(key_fingerprint, None)
        offered = self._offered.pop(key_fingerprint, None)
        if offered is not None:
            offered.set()  # a held request answers now (404 unless a config was offered)

    async def wait_resume(self, key: str, wait: float) -> dict | None:
        """`resume_config`, held up to `wait` s for a key a pool expects."""
        key_fingerprint = resume_fingerprint(key)
        if key_fingerprint in self._expected:
            self._expected[key_fingerprint].set()
            if key_fingerprint not in self._resumes and wait > 0:
                try:
                    await asyncio.wait_for(self._offered[key_fingerprint].wait(), wait)
                except TimeoutError:
                    pass
        return self._resumes.get(key_fingerprint)

    def withdraw_resume(self, key_fingerprint: str) -> None:
        self._resumes.pop(key_fingerprint, None)

    def resume_config(self, key: str) -> dict | None:
        return self._resumes.get(resume_fingerprint(key))

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


class ResumeHandler(APIHandler):
    """POST /hub/api/visa/resume with `Authorization: visa-resume <key>`: the waiting start's config."""

    def check_xsrf_cookie(self) -> None:
        """Called by a server's start script, never by a browser: the key is the credential."""

    def _wait(self) -> float:
        """Seconds a pooled server asks the hub to hold its request (`{"wait": s}`, at most 30)."""
        try:
            wait = json.loads(self.request.body or b"{}").get("wait", 0)
        except (ValueError, AttributeError):
            raise web.HTTPError(400, 'the body is {} or {"wait": <seconds>}') from None
        if not isinstance(wait, int | float) or isinstance(wait, bool):
            raise web.HTTPError(400, "wait is a number of seconds")
        return min(max(float(wait), 0.0), 30.0)

    async def post(self) -> None:
        scheme, _, key = (self.request.headers.get("Authorization") or "").partition(" ")
        if scheme != "visa-resume" or not 20 <= len(key.strip()) <= 200:
            raise web.HTTPError(403, "a resume key is required")
        config = await BOARD.wait_resume(key.strip(), self._wait())
        if config is None:
            raise web.HTTPError(404, "no start is waiting for this server")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(config))


handlers = [(r"/api/visa/phone-home", PhoneHomeHandler), (r"/api/visa/resume", ResumeHandler)]
