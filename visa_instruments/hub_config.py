"""The demo facility's instruments as hub-managed services: ``visa_instruments.hub_config.apply(c, ...)``.

At a facility the IOCs are the facility's own and only the gateway belongs to the hub's side
(docs/instrument.md, "A facility's own IOCs"). In the demo, each instrument of the catalogue
named in ``instruments`` runs as an IOC process started with the hub (``visa-ioc-<id>``: Channel
Access for the facility's tools, PVAccess for the gateway, both on 127.0.0.1 where no instance
route leads), and the gateway (``visa-instrument-gateway``) serves them to the instances, deciding
from the hub's database who may write. Instances reach the gateway through the route their backend
gives them (``Backend.instrument_gateway``), set here to the gateway's address.

Ports are chosen once per state directory and kept (like the other services'), so a restarted hub
finds its instruments where its instances expect them.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from visa_collab.db import private_sqlite
from visa_collab.hub_config import _add_role, _free_port, _get, _persisted
from visa_collab.roles import ADMIN_SCOPE

GATEWAY_SERVICE = "visa-instruments"  # its audit API: /services/visa-instruments/api/audit
DEMO_INSTRUMENTS = ("D11", "IN5")


def ports_in_use(c: Any) -> set[int]:
    """Ports the hub's config already names (its public, API and proxy-API ports, every service's
    URL): chosen before anything listens, so a free port picked now could be one of them."""
    urls = [_get(c.JupyterHub, "bind_url", ""), _get(c.JupyterHub, "hub_bind_url", ""),
            _get(c.ConfigurableHTTPProxy, "api_url", "")]
    urls += [str(s.get("url", "")) for s in _get(c.JupyterHub, "services", [])]
    ports = {p for p in (_get(c.JupyterHub, "port", 0), _get(c.JupyterHub, "hub_port", 0)) if p}
    for url in urls:
        try:
            if url and urlparse(url).port:
                ports.add(int(urlparse(url).port))
        except ValueError:
            continue
    return ports


def distinct_port(path: Path, taken: set[int]) -> int:
    """The port kept in `path` (chosen free once), chosen again if it is one `taken` already; added
    to `taken`. Two services on one port would leave one of them dead, or reachable where the other
    was meant to be."""
    port = int(_persisted(path, _free_port))
    while port in taken:
        port = _free_port()
        path.write_text(str(port))
    taken.add(port)
    return port


def ioc_service(instrument: str, *, catalogue: str, data_root: str, state: Path, today: str,
                python: str, taken: set[int]) -> tuple[dict, int]:
    """The hub service running one demo instrument's IOC, and its PVA port (the gateway's upstream)."""
    key = instrument.lower()
    ports = {name: distinct_port(state / f"visa_ioc_{key}_{name}_port", taken) for name in ("ca", "repeater", "pva")}
    command = [python, "-m", "visa_instruments.ioc", "--catalogue", catalogue, "--instrument", instrument,
               "--data-root", data_root, "--port", str(ports["ca"]), "--repeater-port", str(ports["repeater"]),
               "--pva-port", str(ports["pva"])]
    if today:
        command += ["--today", today]
    service = {
        "name": f"visa-ioc-{key}",
        "command": command,
        "cwd": str(state),
        "info": {"description": f"Demo instrument {instrument}: EPICS IOC (CA port {ports['ca']}, "
                                f"PVA port {ports['pva']}, 127.0.0.1 only)"},
    }
    return service, ports["pva"]


def apply(c: Any, *, state_dir: str | os.PathLike, catalogue: str, hub_db_url: str,
          instruments: Sequence[str] = DEMO_INSTRUMENTS, today: str = "",
          env: Mapping[str, str] | None = None, python: str = sys.executable) -> str:
    """Add the IOCs and the gateway to ``c.JupyterHub.services``; point the backends at the gateway.

    `today`: the demo's facility date (visa_demo.clock) for the IOCs' schedules and the gateway's
    windows. Environment: ``VISA_INSTRUMENTS_AUDIT_DB_URL`` (default: SQLite, 0600, in the state
    directory). Returns the gateway's ``host:port``.
    """
    env = os.environ if env is None else env
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    data_root = _get(c.VisaSpawner, "data_root", "") or str(state / "data")
    services = [s for s in _get(c.JupyterHub, "services", [])
                if s.get("name") != GATEWAY_SERVICE and not str(s.get("name", "")).startswith("visa-ioc-")]
    upstreams = []
    taken = ports_in_use(c)
    for instrument in instruments:
        service, pva_port = ioc_service(instrument, catalogue=catalogue, data_root=data_root, state=state,
                                        today=today, python=python, taken=taken)
        services.append(service)
        upstreams += ["--upstream", f"{instrument}=127.0.0.1:{pva_port}"]
    gateway_port = distinct_port(state / "visa_instrument_gateway_port", taken)
    audit_url = env.get("VISA_INSTRUMENTS_AUDIT_DB_URL") or f"sqlite:///{state / 'visa_instruments.sqlite'}"
    private_sqlite(audit_url)
    command = [python, "-m", "visa_instruments.gateway", *upstreams, "--hub-db-url", hub_db_url,
               "--catalogue", catalogue, "--port", str(gateway_port), "--audit-db-url", audit_url]
    if today:
        command += ["--today", today]
    http_port = distinct_port(state / "visa_instruments_http_port", taken)
    oauth_scopes = [f"access:services!service={GATEWAY_SERVICE}"]
    if ADMIN_SCOPE in _get(c.JupyterHub, "custom_scopes", {}):
        oauth_scopes.append(ADMIN_SCOPE)  # admins' tokens say so: the audit API needs no extra hub call
    services.append({
        "name": GATEWAY_SERVICE,
        "url": f"http://127.0.0.1:{http_port}",  # the audit API; PVAccess is on gateway_port
        "command": command,
        "cwd": str(state),
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": oauth_scopes,
        "info": {"description": f"Instrument gateway (PVAccess, 127.0.0.1:{gateway_port}): who may read "
                                "and write, from the hub's database; the write audit"},
    })
    c.JupyterHub.services = services
    # who may ask: anyone signed in; the API answers admins and the instrument's scientists only
    _add_role(c, {"name": "user", "scopes": ["self", f"access:services!service={GATEWAY_SERVICE}"]})
    address = f"127.0.0.1:{gateway_port}"
    c.Backend.instrument_gateway = address
    return address
