"""The IOC's PVAccess face: the same `InstrumentIOC` PVs served by `p4p.server`, same names.

The gateway (`gateway.py`) speaks PVA only upstream, so each IOC serves its state twice: Channel
Access for the facility's own tools and PVAccess for the gateway. Both faces are views of the one
caproto `pvdb`: a value published on the CA side is posted to the PVA side (`_Observed` in
`ioc.py`), and a PVA put goes through the CA side's `write()`, so the limits, run control and
read-only readbacks are checked in one place. It binds 127.0.0.1 (an option) and answers searches
by TCP (`EPICS_PVA_NAME_SERVERS`), so the gateway needs no UDP path to it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from caproto import AccessRights, ChannelChar, ChannelData, ChannelDouble, ChannelEnum, ChannelInteger, ChannelString
from p4p.nt import NTEnum, NTScalar
from p4p.server import Server
from p4p.server.asyncio import SharedPV

log = logging.getLogger("visa_instruments.pva")


def _initial(pv: ChannelData) -> tuple[object, dict]:
    """The NT type and first value of one CA PV (limits and units as PVA display/control)."""
    if isinstance(pv, ChannelEnum):
        return NTEnum(), {"index": pv.enum_strings.index(pv.value), "choices": list(pv.enum_strings)}
    if isinstance(pv, ChannelDouble):
        display = {"units": pv.units or "", "precision": pv.precision or 0,
                   "limitLow": pv.lower_disp_limit, "limitHigh": pv.upper_disp_limit}
        control = {"limitLow": pv.lower_ctrl_limit, "limitHigh": pv.upper_ctrl_limit}
        return (NTScalar("d", display=True, control=True, form=True),
                {"value": float(pv.value), "display": display, "control": control})
    if isinstance(pv, ChannelInteger):
        return NTScalar("i"), int(pv.value)
    if isinstance(pv, ChannelString | ChannelChar):
        return NTScalar("s"), str(pv.value)
    raise TypeError(f"no PVA type for {type(pv).__name__}")


def _pva_value(pv: ChannelData) -> object:
    """The CA PV's present value as the PVA side posts it."""
    if isinstance(pv, ChannelEnum):
        return pv.enum_strings.index(pv.value)
    if isinstance(pv, ChannelDouble):
        return float(pv.value)
    if isinstance(pv, ChannelInteger):
        return int(pv.value)
    return str(pv.value)


def _ca_value(pv: ChannelData, put: object) -> object:
    """A PVA put's value as the CA side's `write()` takes it (an enum by its choice)."""
    if isinstance(pv, ChannelEnum):
        index = int(put)
        if not 0 <= index < len(pv.enum_strings):
            raise ValueError(f"no choice {index}: {', '.join(pv.enum_strings)}")
        return pv.enum_strings[index]
    if isinstance(pv, ChannelDouble):
        return float(put)
    if isinstance(pv, ChannelInteger):
        return int(put)
    return str(put)


class _Bridge:
    """One PVA PV's handler: a put is a CA-side write (its checks), refused puts are errors."""

    def __init__(self, name: str, ca_pv: ChannelData) -> None:
        self.name, self.ca_pv = name, ca_pv

    async def put(self, pv: SharedPV, op) -> None:
        if not self.ca_pv.check_access("pva", "pva") & AccessRights.WRITE:  # the CA side's own rule
            op.done(error=f"{self.name} is read-only")
            return
        try:
            await self.ca_pv.write(_ca_value(self.ca_pv, op.value()))
        except Exception as refused:  # LimitError, RunRefused, a bad value: the client sees why
            log.info("PVA put to %s refused: %s", self.name, refused)
            op.done(error=str(refused) or type(refused).__name__)
            return
        op.done()  # the CA side's publish() has posted the new value already


class PVAFace:
    """Serves `pvdb` (an `InstrumentIOC`'s) over PVAccess; start() inside the IOC's event loop."""

    def __init__(self, pvdb: Mapping[str, ChannelData], interface: str = "127.0.0.1", port: int = 5075,
                 broadcast_port: int = 5076) -> None:
        self.pvdb = pvdb
        self.conf = {
            "EPICS_PVAS_INTF_ADDR_LIST": interface,
            "EPICS_PVAS_SERVER_PORT": str(port),
            "EPICS_PVAS_BROADCAST_PORT": str(broadcast_port),
            "EPICS_PVAS_BEACON_ADDR_LIST": "",
            "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
        }
        self.pvs: dict[str, SharedPV] = {}
        self.server: Server | None = None

    def start(self) -> None:
        """Open the PVs and the server (needs the running loop: SharedPV handlers run on it)."""
        for name, ca_pv in self.pvdb.items():
            nt, initial = _initial(ca_pv)
            shared = SharedPV(nt=nt, initial=initial, timestamp=time.time(), handler=_Bridge(name, ca_pv))
            ca_pv.observers.append(self._poster(shared))
            self.pvs[name] = shared
        self.server = Server(providers=[self.pvs], conf=self.conf, useenv=False)

    @staticmethod
    def _poster(shared: SharedPV):
        def post(ca_pv: ChannelData) -> None:
            shared.post(_pva_value(ca_pv), timestamp=time.time())
        return post

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
