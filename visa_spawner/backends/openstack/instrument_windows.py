"""Instrument groups follow the experiment windows on running servers (issue 18, part 3).

At create the spawner puts `visa-instrument-<id>` on the server while the window is open
(`InstanceSpec.instrument_control`, from auth_state). A window opens and closes while servers run,
and auth_state is only refreshed at login and spawn, so each reconciler pass asks again, from the
catalogue, as the instrument gateway does (the hub's authenticator's `may_pilot`, over
`visa_authenticator.rules.may_pilot`; asked through the object, never imported): for each running
server of an OpenStack plan and each of its instruments (`user_options.instruments`) that has a
group configured, the group is on the server's ports when the owner holds INSTRUMENT_CONTROL for
an experiment of the server's proposal on that instrument today (± `instrument_control_days`), off
otherwise. The catalogue, the date and the margin are the hub's authenticator's, so the pass and
the spawner decide alike.

Neutron is asked (`SecurityGroups.set_instrument_access`, in the backend's bounded pool) the first
time a server is seen by this process and whenever the decision changes; not every pass, so a
thousand servers cost no port listings while nothing changes.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from visa_spawner.backends.openstack.security import SecurityGroups

log = logging.getLogger("visa_spawner.openstack.instrument_windows")


@dataclass(frozen=True)
class RunningServer:
    """A ready hub record of an OpenStack plan whose server is in the cloud."""

    owner: str
    proposal: str
    instruments: tuple[str, ...]
    server_id: str


def running_servers(records: Iterable[tuple[str, str, Mapping[str, Any]]], cloud: Mapping[str, Mapping[str, Any]],
                    name_for: Callable[[str, str], str], plans: Iterable[str]) -> list[RunningServer]:
    """The reconciler's records (owner, server name, hub model) matched to the cloud's servers by
    name: ready, not pending, of an OpenStack plan, with instruments, the server ACTIVE."""
    plans = set(plans)
    out = []
    for owner, name, model in records:
        options = model.get("user_options") or {}
        server = cloud.get(name_for(owner, name))
        instruments = tuple(str(i) for i in options.get("instruments") or () if i)
        if (model.get("ready") and not model.get("pending") and options.get("plan") in plans and instruments
                and server is not None and server.get("status") == "ACTIVE"):
            out.append(RunningServer(owner, str(options.get("proposal") or ""), instruments, str(server["server_id"])))
    return out


class InstrumentWindows:
    """Keeps each running server's instrument groups in step with its owner's windows."""

    def __init__(self, security: SecurityGroups, may_pilot: Callable[[str, str, str, date], Awaitable[bool]],
                 today: Callable[[], date]) -> None:
        self.security, self.may_pilot, self.today = security, may_pilot, today
        self.applied: dict[tuple[str, str], bool] = {}  # (server id, instrument) -> what Neutron was told

    @classmethod
    def for_hub(cls, security: SecurityGroups, authenticator: Any) -> InstrumentWindows | None:
        """From the hub's authenticator (a VisaAuthenticator: `may_pilot` over its catalogue, clock
        and margin); None when it has none or no instrument has a group (nothing to follow)."""
        may_pilot = getattr(authenticator, "may_pilot", None)
        if not security.instruments or may_pilot is None:
            return None
        return cls(security, may_pilot, lambda: authenticator.now().date())

    async def window_open(self, owner: str, proposal: str, instrument: str, today: date) -> bool:
        return await self.may_pilot(owner, proposal, instrument, today)

    async def follow(self, servers: Iterable[RunningServer]) -> dict[str, int]:
        """One pass: attach or detach where the decision is new. A catalogue outage changes
        nothing (the groups stay as they are; the gateway still refuses writes on its own)."""
        today = self.today()
        counts = {"instrument_attached": 0, "instrument_detached": 0}
        seen = set()
        for server in servers:
            for instrument in server.instruments:
                if instrument not in self.security.instruments:
                    continue
                key = (server.server_id, instrument)
                seen.add(key)
                try:
                    allowed = await self.window_open(server.owner, server.proposal, instrument, today)
                except Exception as e:  # the catalogue's outage (CatalogueUnavailable) or the like
                    log.warning("Instrument windows: catalogue unavailable (%s); groups left as they are", e)
                    return counts
                if self.applied.get(key) == allowed:
                    continue
                try:
                    await self.security.set_instrument_access(server.server_id, instrument, allowed)
                except Exception as e:  # BackendError and the like: this server is tried again next pass
                    log.error("Instrument windows: %s %s on server %s failed: %s", "opening" if allowed else "closing",
                              instrument, server.server_id, str(e)[:300])
                    continue
                counts["instrument_attached" if allowed else "instrument_detached"] += 1
                self.applied[key] = allowed
        for key in set(self.applied) - seen:  # stopped or deleted servers
            del self.applied[key]
        return counts
