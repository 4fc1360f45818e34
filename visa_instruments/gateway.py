"""The instrument gateway: p4p's own PVA gateway, deciding from the hub's truth by peer address.

`visa-instrument-gateway` runs on the hub side. Its upstream is the IOCs' PVA faces (found over
TCP, `EPICS_PVA_NAME_SERVERS`); its server side listens on one address (default 127.0.0.1:5076),
which instances reach over TCP only (`EPICS_PVA_NAME_SERVERS=<gateway>`, no UDP). The proxying is
p4p's (`p4p.gw.GWHandler` + `p4p._gw.Provider`, the code behind `pvagw`); what we replace is its
configuration files: `VisaAccess` (access.py) is both the PVList (who may even find a PV) and the
ACF engine (who may put), re-evaluated every `reevaluate_interval` seconds from the hub's database
and the catalogue, and applied to open channels. Every put is audited (audit.py).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from urllib.parse import urlparse

from jupyterhub.utils import url_path_join
from p4p import _gw
from p4p.client.thread import Context
from p4p.gw import GWHandler
from p4p.server import Server, removeProvider
from traitlets import Dict, Float, Int, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from visa_authenticator.catalogue_data import CatalogueData
from visa_authenticator.file_catalogue import FileCatalogue
from visa_collab.app import until_stopped

from .access import HubInstances, HubSnapshot, InstanceSource, VisaAccess, decide_all
from .audit import AuditLog, ValueHistory, WriteRecord, display_value, parse_audit_line
from .gateway_api import make_app

_names = itertools.count()
# p4p drops an unused upstream channel at its second sweep; pvagw sweeps every 30 s, "longer than
# twice the longest search interval": sooner, a client's next search finds its upstream gone again
SWEEP_PERIOD = 30.0
#: at least this long between two passes that searches from unknown peers bring forward
EARLY_PASS_SPACING = 1.0
#: how long such a search waits for that pass (on p4p's worker thread, never the event loop)
EARLY_PASS_WAIT = 3.0
NEW_VALUE_WAIT = 1.0  # seconds the audit waits for the value an enum put produced


class VisaGWHandler(GWHandler):
    """p4p's handler with `VisaAccess` as both PVList and ACF; its audit lines go to `on_audit`."""

    def __init__(self, access: VisaAccess, on_audit: Callable[[list[str]], None]) -> None:
        super().__init__(access, access, readOnly=False)
        self.on_audit = on_audit

    def makeChannel(self, op):
        channel = super().makeChannel(op)
        if channel is not None:
            name = op.name.decode() if isinstance(op.name, bytes) else op.name
            self.acf.remember(channel, op.peer, name, op.account)
        return channel

    def audit(self, msgs) -> None:
        self.on_audit(list(msgs))


def tcp_client_conf(name_servers: Sequence[str]) -> dict[str, str]:
    """A PVA client that searches only by TCP, at these `host:port`s."""
    return {"EPICS_PVA_NAME_SERVERS": " ".join(name_servers), "EPICS_PVA_AUTO_ADDR_LIST": "NO",
            "EPICS_PVA_ADDR_LIST": ""}


class InstrumentGateway(LoggingConfigurable):
    """The gateway service: p4p's gateway between instances and the instruments' IOCs."""

    interface = Unicode(
        "127.0.0.1", help="Address the gateway's PVA server binds (instances connect here).",
    ).tag(config=True)
    port = Int(5076, help="The gateway's PVA port (TCP; UDP searches on the same number).").tag(config=True)
    upstreams = Dict(
        help="Instrument id -> 'host:port' of its IOC's PVA face, e.g. {'D11': '127.0.0.1:5075'}.",
    ).tag(config=True)
    prefixes = Dict(help="Instrument id -> PV prefix, when not '<id>:'.").tag(config=True)
    hub_db_url = Unicode(
        help="The hub's database URL (read-only: running instances, shares, instrument groups).",
    ).tag(config=True)
    catalogue = Unicode(
        help="The YAML catalogue (experiments, windows, roles); re-read when it changes.",
    ).tag(config=True)
    instrument_control_days = Int(
        7, help="Days before an experiment's start and after its end when its team may pilot (rules.Policy).",
    ).tag(config=True)
    reevaluate_interval = Float(
        30.0, help="Seconds between re-evaluations of every instance's rights, applied to open channels.",
    ).tag(config=True)
    today = Unicode(
        "", help="Fixed date (YYYY-MM-DD) for the windows (the demo); empty: the real date.",
    ).tag(config=True)
    audit_db_url = Unicode(
        "sqlite:///visa-instruments.sqlite", help="Where the writes are audited (SQLAlchemy URL).",
    ).tag(config=True)

    @validate("reevaluate_interval")
    def _positive(self, proposal):
        if not 0 < proposal.value <= 30:
            raise ValueError("reevaluate_interval must be in (0, 30] s: writes must stop within 60 s")
        return proposal.value

    @default("prefixes")
    def _default_prefixes(self) -> dict:
        return {instrument: f"{instrument}:" for instrument in self.upstreams}

    def __init__(self, source: InstanceSource | None = None, catalogue_data: Callable[[], CatalogueData] | None = None,
                 now: Callable[[], date] | None = None, **kwargs) -> None:
        """`source`, `catalogue_data` and `now` (today's date) are for tests; by default the hub's
        database, the catalogue file and the real date (or `today`)."""
        super().__init__(**kwargs)
        self.source = source or HubInstances(self.hub_db_url)
        self.catalogue_data = catalogue_data or FileCatalogue(path=self.catalogue, log=self.log).data
        self.now = now or self._today
        self.access = VisaAccess({prefix: i for i, prefix in self.prefixes.items()})
        self.history = ValueHistory()
        self.audit_log = AuditLog.from_url(self.audit_db_url)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="gw-audit")  # in order, off the loop
        self.evaluations = 0
        self.snapshot = HubSnapshot()
        self.server: Server | None = None

    def _today(self) -> date:
        return date.fromisoformat(self.today) if self.today else date.today()

    # --- decisions

    def scientists(self, instrument: str) -> frozenset[str]:
        """The instrument's scientists (hub group `instrument:<id>`) at the last evaluation."""
        return self.snapshot.scientists(instrument)

    async def evaluate(self) -> None:
        """One pass: the hub's instances and the catalogue → levels, applied to open channels."""
        loop = asyncio.get_running_loop()
        snapshot = await self.source.snapshot()
        catalogue = await loop.run_in_executor(None, self.catalogue_data)
        levels = decide_all(snapshot, self.upstreams, catalogue, self.now(), self.instrument_control_days)
        self.snapshot = snapshot
        if self.access.apply(levels, snapshot.instances) and self.server is not None:
            self.handler.provider.clearBan()  # a peer refused before may search again
        self.evaluations += 1

    def _unknown_peer(self, _addr: str) -> None:
        """A search from an address that is no known instance, on p4p's worker thread: maybe an
        instance started since the last pass. Run a pass now (at most one a second) and let this
        search wait for it, so the instance's first search is answered: a refused client searches
        again only seconds later (pvxs backs off)."""
        try:
            if asyncio.get_running_loop() is self._loop:  # never block the loop itself
                return
        except RuntimeError:
            pass
        done = asyncio.run_coroutine_threadsafe(self._early_pass(), self._loop)
        try:
            done.result(EARLY_PASS_WAIT)
        except Exception:  # slow or failed: the search is refused this time, the client retries
            self.log.warning("Instrument gateway: no early pass for a new peer within %s s", EARLY_PASS_WAIT)

    async def _early_pass(self) -> None:
        async with self._early_lock:  # searches arriving together share one pass
            if self._loop.time() - self._last_early < EARLY_PASS_SPACING:
                return
            self._last_early = self._loop.time()
            await self.evaluate()

    async def evaluate_forever(self) -> None:
        loop = asyncio.get_running_loop()
        swept = loop.time()
        while True:
            await asyncio.sleep(self.reevaluate_interval)
            try:
                await self.evaluate()
            except Exception:  # a periodic task logs and carries on; the last decisions stay
                self.log.exception("Instrument gateway: re-evaluating rights failed")
            if loop.time() - swept >= SWEEP_PERIOD:
                swept = loop.time()
                try:
                    self.handler.sweep()
                except Exception:
                    self.log.exception("Instrument gateway: sweeping the channel cache failed")

    # --- audit

    def _watch(self, pv: str) -> None:
        """Keep the recent upstream values of each PV a client opened (old values for the audit)."""
        if self.history.watching(pv):
            return
        self.history.watch(pv)
        self._subscriptions.append(self.client.monitor(
            pv, lambda value, pv=pv: self.history.seen(pv, display_value(value)), notify_disconnect=False))

    def on_audit(self, msgs: list[str]) -> None:
        """On p4p's worker thread: parse, decide allowed now, write in order on the audit thread."""
        for line in msgs:
            put = parse_audit_line(line, self.access.claimed)
            if put is None:
                self.log.warning("Instrument gateway: unreadable audit line %r", line[:300])
                continue
            ip = put.peer.rsplit(":", 1)[0]
            instance = self.access.instance(ip)
            record = WriteRecord(
                at=put.at, peer=put.peer, owner=instance.owner if instance else "",
                server=instance.server if instance else "", instrument=self.access.instrument_of(put.pv) or "",
                pv=put.pv, old_value=self.history.before(put.pv, put.at.timestamp()), new_value=put.value,
                allowed=self.access.may_write(put.peer, put.pv), claimed_account=put.account[:255],
            )
            self.log.info("Instrument write %s: %s %s -> %s by %s (%s)", "allowed" if record.allowed else "REFUSED",
                          record.pv, record.old_value, record.new_value, instance.name if instance else put.peer,
                          put.peer)
            self._writer.submit(self._record, record)

    def _record(self, record: WriteRecord) -> None:
        try:
            if record.new_value is None and record.allowed:  # an enum: its line has no value
                new = self.history.after(record.pv, record.at.timestamp(), NEW_VALUE_WAIT)
                record = dataclasses.replace(record, new_value=new)
            self.audit_log.record(record)
        except Exception:
            self.log.exception("Instrument gateway: recording a write in the audit failed")

    # --- the p4p gateway

    async def start(self) -> None:
        """Decide once, then open the upstream client and the server (p4p's threads). A hub
        database not readable yet leaves every peer with nothing until a later pass succeeds."""
        try:
            await self.evaluate()
        except Exception:
            self.log.exception("Instrument gateway: first evaluation failed; nobody may read or write yet")
        self.client = Context("pva", conf=tcp_client_conf(self.upstreams.values()), useenv=False)
        self._subscriptions: list = []
        self.access.on_channel = self._watch
        self._loop = asyncio.get_running_loop()
        self._early_lock = asyncio.Lock()
        self._last_early = -EARLY_PASS_SPACING
        self.access.on_unknown = self._unknown_peer
        self.handler = VisaGWHandler(self.access, self.on_audit)
        name = f"visa-gw-{next(_names)}"
        self.handler.provider = _gw.Provider(name, self.client, self.handler)  # installs `name`
        try:
            self.server = Server(providers=[(self.handler.provider, 10)], useenv=False, conf={
                "EPICS_PVAS_INTF_ADDR_LIST": self.interface,
                "EPICS_PVAS_SERVER_PORT": str(self.port),
                "EPICS_PVAS_BROADCAST_PORT": str(self.port),
                "EPICS_PVAS_BEACON_ADDR_LIST": "",
                "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
            })
        finally:
            removeProvider(name)
        self.handler.provider.ignoreByGUID([self.server._S])  # never proxy itself
        self._evaluating = asyncio.create_task(self.evaluate_forever())
        self.log.info("Instrument gateway on %s:%s for %s", self.interface, self.port,
                      ", ".join(f"{i} ({u})" for i, u in self.upstreams.items()))

    async def stop(self) -> None:
        self._evaluating.cancel()
        if self.server is not None:
            self.server.stop()
            self.server = None
        for subscription in self._subscriptions:
            subscription.close()
        self.client.close()
        await asyncio.get_running_loop().run_in_executor(None, self._writer.shutdown)  # pending audit rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="visa-instrument-gateway",
        description="p4p's PVA gateway in front of the instruments' IOCs, rights from the hub's database.",
    )
    parser.add_argument("--upstream", action="append", required=True, metavar="ID=HOST:PORT",
                        help="an instrument and its IOC's PVA face, e.g. D11=127.0.0.1:5075 (repeat)")
    parser.add_argument("--hub-db-url", required=True, help="the hub's database URL (read-only)")
    parser.add_argument("--catalogue", required=True, help="the YAML catalogue (docs/catalogue.md)")
    parser.add_argument("--interface", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5076, help="PVA port to serve on (default 5076)")
    parser.add_argument("--audit-db-url", default="sqlite:///visa-instruments.sqlite", help="audit database URL")
    parser.add_argument("--reevaluate-interval", type=float, default=30.0, help="seconds, at most 30")
    parser.add_argument("--instrument-control-days", type=int, default=7, help="window margin in days")
    parser.add_argument("--today", default="", help="fixed date YYYY-MM-DD for the windows (demo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        upstreams = dict(_upstream(item) for item in args.upstream)
        gateway = InstrumentGateway(
            log=logging.getLogger("visa-instrument-gateway"), upstreams=upstreams, hub_db_url=args.hub_db_url,
            catalogue=args.catalogue, interface=args.interface, port=args.port, audit_db_url=args.audit_db_url,
            reevaluate_interval=args.reevaluate_interval, instrument_control_days=args.instrument_control_days,
            today=args.today)
    except Exception as e:  # bad options: one line, no traceback
        print(f"visa-instrument-gateway: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(gateway))


def _upstream(item: str) -> tuple[str, str]:
    instrument, sep, address = item.partition("=")
    host, colon, port = address.rpartition(":")
    if not (sep and instrument and host and colon and port.isdigit()):
        raise ValueError(f"--upstream {item!r} is not ID=HOST:PORT (e.g. D11=127.0.0.1:5075)")
    return instrument, address


async def _serve(gateway: InstrumentGateway) -> int:
    """The gateway, and its audit API when the hub runs it as a service (JUPYTERHUB_SERVICE_URL)."""
    await gateway.start()
    print(f"visa-instrument-gateway: serving on {gateway.interface}:{gateway.port}", flush=True)
    if os.environ.get("JUPYTERHUB_SERVICE_URL"):
        url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/visa-instruments/")
        hub_prefix = url_path_join(os.environ.get("JUPYTERHUB_BASE_URL", "/"), "hub/")
        make_app(gateway, prefix, hub_prefix, secrets.token_bytes(32)).listen(url.port or 80, url.hostname)
        gateway.log.info("Instrument write audit at %s%sapi/audit", url.geturl().rstrip("/"), prefix)
    try:
        await until_stopped()
    finally:
        await gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
