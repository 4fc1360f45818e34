"""E-mail to owners over SMTP: warnings before deletion and extension decisions.

stdlib ``smtplib`` in an executor (the event loop never waits on a mail server). The server is
an URL, ``smtp://[user[:password]@]host[:port][?starttls=1]`` or ``smtps://...``, from
``VISA_OPS_SMTP_URL``. The password is never logged (errors name host and port only).
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import ssl
from datetime import datetime
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlparse

from traitlets import Float, Unicode, default, validate
from traitlets.config import Configurable

from .inventory import Instance

log = logging.getLogger("visa_ops.mail")


class MailError(Exception):
    pass


class Mailer(Configurable):
    """Sends plain-text messages through one SMTP server."""

    smtp_url = Unicode(help="SMTP server URL: smtp://[user[:password]@]host[:port][?starttls=1] or smtps://...; "
                            "empty: no mail is sent (logged as failed).").tag(config=True)
    from_address = Unicode(help="The From address of every message.").tag(config=True)
    timeout = Float(15.0, help="Seconds before an SMTP conversation is abandoned.").tag(config=True)

    @default("smtp_url")
    def _smtp_url_default(self) -> str:
        return os.environ.get("VISA_OPS_SMTP_URL", "")

    @default("from_address")
    def _from_default(self) -> str:
        return os.environ.get("VISA_OPS_MAIL_FROM", "VISA <visa-ops@localhost>")

    @validate("smtp_url")
    def _check_url(self, proposal: dict) -> str:
        url = proposal["value"]
        if url and urlparse(url).scheme not in ("smtp", "smtps"):
            raise ValueError("smtp_url must start with smtp:// or smtps://")
        return url

    def describe(self) -> str:
        """Host and port, for logs (never the credentials)."""
        u = urlparse(self.smtp_url)
        return f"{u.scheme}://{u.hostname}:{u.port or (465 if u.scheme == 'smtps' else 25)}" if self.smtp_url else "-"

    def _send_sync(self, to_addr: str, subject: str, body: str) -> None:
        if not self.smtp_url:
            raise MailError("no SMTP server configured (VISA_OPS_SMTP_URL)")
        u = urlparse(self.smtp_url)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.from_address, to_addr, subject
        msg.set_content(body)
        starttls = parse_qs(u.query).get("starttls", ["0"])[0] in ("1", "true", "yes")
        try:
            if u.scheme == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL(u.hostname or "localhost", u.port or 465,
                                                        timeout=self.timeout, context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(u.hostname or "localhost", u.port or 25, timeout=self.timeout)
            with client:
                if starttls:
                    client.starttls(context=ssl.create_default_context())
                if u.username:
                    client.login(unquote(u.username), unquote(u.password or ""))
                client.send_message(msg)
        except (OSError, smtplib.SMTPException) as e:
            # the exception text may quote the server, never our URL: name host and port only
            raise MailError(f"{self.describe()}: {type(e).__name__}: {e}") from None

    async def send(self, to_addr: str, subject: str, body: str) -> None:
        """Send one message; MailError when the server refuses or cannot be reached."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._send_sync, to_addr, subject, body)


# -- messages (pure) ---------------------------------------------------------------------------

def _when(dt: datetime) -> str:
    return dt.strftime("%A %d %B %Y, %H:%M UTC")


def _about(inst: Instance) -> str:
    lines = [f"Instance: {inst.display_name or inst.server} ({inst.owner}/{inst.server})"]
    if inst.proposal:
        lines.append(f"Proposal: {inst.proposal}")
    if inst.plan:
        lines.append(f"Plan: {inst.plan}")
    return "\n".join(lines)


def warning_message(inst: Instance, kind: str, deadline: datetime, link: str) -> tuple[str, str]:
    """(subject, body) of the warning sent before a deletion by rule."""
    name = inst.display_name or inst.server
    if kind == "lifetime":
        subject = f"Your instance {name} reaches the end of its lifetime on {deadline:%d %B %Y}"
        why = "reaches the end of its lifetime"
    else:
        subject = f"Your instance {name} will be deleted for inactivity on {deadline:%d %B %Y}"
        why = "has not been used for a while and will be deleted for inactivity"
    body = (
        f"Hello {inst.owner},\n\n"
        f"your instance {name} {why} on {_when(deadline)}.\n"
        f"Its home directory is archived before it is deleted.\n\n"
        f"{_about(inst)}\n\n"
        + ("To keep it longer, ask for more time here:\n" if kind == "lifetime"
           else "Using it (desktop, notebook, terminal) keeps it. To ask for more time:\n")
        + f"{link}\n\n-- VISA\n"
    )
    return subject, body


def decision_message(inst: Instance, days: int, status: str, comment: str, new_deadline: datetime | None,
                     link: str) -> tuple[str, str]:
    """(subject, body) telling an owner how their extension request was decided."""
    name = inst.display_name or inst.server
    accepted = status in ("accepted", "auto-accepted")
    subject = f"Your request for {days} more day(s) for {name} was {'accepted' if accepted else 'refused'}"
    lines = [f"Hello {inst.owner},", "", f"your request for {days} more day(s) for {name} was "
             f"{'accepted' if accepted else 'refused'}."]
    if comment:
        lines += ["", f"Comment: {comment}"]
    if accepted and new_deadline:
        lines += ["", f"The instance now lives until {_when(new_deadline)}."]
    lines += ["", _about(inst), "", link, "", "-- VISA", ""]
    return subject, "\n".join(lines)
