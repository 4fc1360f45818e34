"""One Channel Access IOC per demo instrument: `visa-instrument-ioc --instrument D11`.

PVs (prefix `D11:`), named like the EPICS motor record so stock clients and panels read them:
`<motor>.VAL` (setpoint) `.RBV` (readback, moves at `.VELO`) `.DMOV` (1 when done), `TEMP:SP`,
`TEMP:RBV`, `TEMP:SETTLED`, `SHUTTER` (Closed/Open), `DET:RATE`, and run control `RUN:START`,
`RUN:STOP`, `RUN:STATE`, `RUN:NUMBER`, `RUN:PROPOSAL`, `RUN:MESSAGE`, `RUN:FILE`.
Readbacks are read-only to clients; who may write the rest is the gateway's business (issue 18).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime

from caproto import AccessRights, ChannelChar, ChannelDouble, ChannelEnum, ChannelInteger, ChannelString
from traitlets import Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from visa_authenticator.catalogue_data import CatalogueData
from visa_authenticator.file_catalogue import FileCatalogue
from visa_collab.app import until_stopped

from .model import Instrument, LimitError
from .runs import RunControl, RunRefused

Putter = Callable[[object], Awaitable[object]]
MESSAGE_LENGTH = 256


class _Observed:
    """Tells its observers each value it publishes, as CA monitors get it: how the PVA face
    (`pva.py`) serves the same state without polling."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.observers: list[Callable[[object], None]] = []

    async def publish(self, flags):
        await super().publish(flags)
        for observe in self.observers:
            observe(self)


class _ReadOnly(_Observed):
    """A readback: clients may read and monitor it, never write it."""

    def check_access(self, hostname: str, username: str) -> AccessRights:
        return AccessRights.READ


class _Commanded(_Observed):
    """A setpoint whose put is handed to the device first; the device refuses by raising."""

    def __init__(self, *args, on_put: Putter, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_put = on_put

    async def verify_value(self, data):
        data = await super().verify_value(data)
        return await self.on_put(data)


class ReadOnlyDouble(_ReadOnly, ChannelDouble): ...
class ReadOnlyInteger(_ReadOnly, ChannelInteger): ...
class ReadOnlyEnum(_ReadOnly, ChannelEnum): ...
class ReadOnlyText(_ReadOnly, ChannelChar): ...
class ReadOnlyString(_ReadOnly, ChannelString): ...
class CommandedDouble(_Commanded, ChannelDouble): ...
class CommandedInteger(_Commanded, ChannelInteger): ...
class CommandedEnum(_Commanded, ChannelEnum): ...
class CommandedString(_Commanded, ChannelString): ...


def _scalar(value: object) -> object:
    return value[0] if isinstance(value, list | tuple) else value


def _text(value: str) -> ReadOnlyText:
    return ReadOnlyText(value=value, max_length=MESSAGE_LENGTH)


class InstrumentIOC(LoggingConfigurable):
    """Serves one instrument's PVs and keeps the readbacks moving with the physics model."""

    catalogue = Unicode(help="The YAML catalogue (docs/catalogue.md): instruments and experiments.").tag(config=True)
    instrument = Unicode(help="Id of the instrument in the catalogue, e.g. D11.").tag(config=True)
    data_root = Unicode(help="Data root; a run writes into <data_root>/<proposal>/.").tag(config=True)
    prefix = Unicode(help="PV prefix; defaults to '<instrument>:'.").tag(config=True)
    interface = Unicode("127.0.0.1", help="Address the CA server binds (UDP search and TCP).").tag(config=True)
    port = Int(5064, help="CA server port (EPICS_CA_SERVER_PORT); clients search on it.").tag(config=True)
    repeater_port = Int(5065, help="CA repeater/beacon port (EPICS_CA_REPEATER_PORT).").tag(config=True)
    pva_port = Int(
        5075,
        help="PVAccess port (TCP, and UDP for searches) of the PVA face on `interface`, which the "
             "gateway reaches (`pva.py`); 0: no PVA face.",
    ).tag(config=True)
    tick = Float(0.1, help="Seconds between readback updates (motor RBV, temperature, rate).").tag(config=True)
    today = Unicode(
        "",
        help="Fixed date (YYYY-MM-DD) for the schedule, e.g. the demo's 2026-11-24; empty: the real date.",
    ).tag(config=True)

    @default("prefix")
    def _default_prefix(self) -> str:
        return f"{self.instrument}:"

    def __init__(self, catalogue_data: Callable[[], CatalogueData] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] | None = None, **kwargs) -> None:
        """`catalogue_data`, `clock` and `now` are for tests; by default the catalogue file is
        re-read when it changes, the physics runs on the monotonic clock and `now` honours `today`."""
        super().__init__(**kwargs)
        if catalogue_data is None:
            catalogue_data = FileCatalogue(path=self.catalogue, log=self.log).data
        instruments = catalogue_data().instruments
        if self.instrument not in {i.id for i in instruments}:
            known = ", ".join(i.id for i in instruments)
            raise ValueError(f"instrument {self.instrument!r} is not in the catalogue ({known})")
        self.model = Instrument(self.instrument, clock)
        self.runs = RunControl(catalogue_data, self.instrument, self.data_root, now or self._now)
        self.run_number = 0
        self._starting = asyncio.Lock()  # a second START while the file is written is refused
        self.pvdb = self._build()

    def _now(self) -> datetime:
        if self.today:
            fixed = date.fromisoformat(self.today)
            return datetime.combine(fixed, datetime.now().time())
        return datetime.now()

    def pv(self, name: str):
        return self.pvdb[self.prefix + name]

    def _build(self) -> dict:
        pvs: dict[str, object] = {}
        for name, motor in self.model.motors.items():
            spec = motor.spec
            limits = dict(units=spec.units, precision=3, lower_ctrl_limit=spec.low,
                          upper_ctrl_limit=spec.high, lower_disp_limit=spec.low,
                          upper_disp_limit=spec.high)
            pvs[f"{name}.VAL"] = CommandedDouble(value=motor.target, on_put=self._mover(name), **limits)
            pvs[f"{name}.RBV"] = ReadOnlyDouble(value=motor.position(), **limits)
            pvs[f"{name}.DMOV"] = ReadOnlyInteger(value=1)
            pvs[f"{name}.VELO"] = CommandedDouble(value=motor.velocity, units=f"{spec.units}/s",
                                                  precision=3, on_put=self._speed(name))
            pvs[f"{name}.DESC"] = ReadOnlyString(value=spec.description[:39])
        sample = self.model.sample
        pvs["TEMP:SP"] = CommandedDouble(value=sample.setpoint, units="K", precision=2, on_put=self._set_temperature)
        pvs["TEMP:RBV"] = ReadOnlyDouble(value=sample.temperature(), units="K", precision=2)
        pvs["TEMP:SETTLED"] = ReadOnlyInteger(value=1)
        pvs["SHUTTER"] = CommandedEnum(value="Closed", enum_strings=["Closed", "Open"], on_put=self._shutter)
        pvs["DET:RATE"] = ReadOnlyDouble(value=0.0, units="counts/s", precision=1)
        pvs["RUN:START"] = CommandedInteger(value=0, on_put=self._start_run)
        pvs["RUN:STOP"] = CommandedInteger(value=0, on_put=self._stop_run)
        pvs["RUN:STATE"] = ReadOnlyEnum(value="Idle", enum_strings=["Idle", "Running"])
        pvs["RUN:NUMBER"] = ReadOnlyInteger(value=0)
        pvs["RUN:PROPOSAL"] = CommandedString(value="", on_put=self._choose_proposal)
        pvs["RUN:MESSAGE"] = _text("")
        pvs["RUN:FILE"] = _text("")
        return {self.prefix + name: pv for name, pv in pvs.items()}

    # --- puts: each hands the value to the model, which refuses by raising LimitError

    def _mover(self, name: str) -> Putter:
        async def move(value):
            self.model.motors[name].move(float(_scalar(value)))
            await self.publish()
            return value
        return move

    def _speed(self, name: str) -> Putter:
        async def speed(value):
            self.model.motors[name].set_velocity(float(_scalar(value)))
            return value
        return speed

    async def _set_temperature(self, value):
        self.model.sample.set(float(_scalar(value)))
        await self.publish()
        return value

    async def _shutter(self, value):
        self.model.shutter_open = _scalar(value) == "Open"
        await self.publish()
        return value

    async def _choose_proposal(self, value):
        if self.pv("RUN:STATE").value == "Running":
            await self._say(f"run {self.run_number} is in progress: stop it before changing proposal")
            raise LimitError("a run is in progress")
        return value

    async def _say(self, message: str) -> None:
        self.log.info("%s: %s", self.instrument, message)
        await self.pv("RUN:MESSAGE").write(message[:MESSAGE_LENGTH], verify_value=False)

    async def _start_run(self, value):
        """Refused with RUN:MESSAGE (and an error to the client) unless an experiment is scheduled;
        the put completes once the file is written."""
        if self._starting.locked():
            await self._say("a run is starting: wait for it")
            raise RunRefused("a run is starting")
        if self.pv("RUN:STATE").value == "Running":
            await self._say(f"run {self.run_number} is in progress: stop it first")
            raise RunRefused("a run is in progress")
        proposal = str(self.pv("RUN:PROPOSAL").value).strip()
        loop = asyncio.get_running_loop()
        async with self._starting:  # until RUN:STATE says Running
            try:
                started = await loop.run_in_executor(None, self.runs.start, proposal, self.model.snapshot())
            except RunRefused as refused:
                await self._say(f"run refused: {refused}")
                raise
            except OSError as e:  # the data root: full, missing, not writable
                self.log.exception("%s: writing the run's file failed", self.instrument)
                await self._say(f"run failed: cannot write the file ({e.strerror or e})")
                raise RunRefused(f"cannot write the file ({e.strerror or e})") from None
            self.run_number = started.number
            await self.pv("RUN:NUMBER").write(started.number, verify_value=False)
            await self.pv("RUN:PROPOSAL").write(started.proposal_id, verify_value=False)
            await self.pv("RUN:FILE").write(started.path, verify_value=False)
            await self.pv("RUN:STATE").write("Running", verify_value=False)
        await self._say(f"run {started.number} started for {started.proposal_id} ({started.experiment_id})")
        return value

    async def _stop_run(self, value):
        if self.pv("RUN:STATE").value != "Running":
            await self._say("no run in progress")
            return value
        await self.pv("RUN:STATE").write("Idle", verify_value=False)
        await self._say(f"run {self.run_number} stopped")
        return value

    # --- readbacks

    async def publish(self) -> None:
        """Write the model's present values into the readbacks that changed (monitors fire only
        on a change, so an idle instrument sends nothing)."""
        values: dict[str, object] = {}
        for name, motor in self.model.motors.items():
            values[f"{name}.RBV"] = motor.position()
            values[f"{name}.DMOV"] = int(motor.done())
        values["TEMP:RBV"] = round(self.model.sample.temperature(), 4)
        values["TEMP:SETTLED"] = int(self.model.sample.settled())
        values["DET:RATE"] = round(self.model.count_rate(), 1)
        for name, value in values.items():
            pv = self.pv(name)
            if pv.value != value:
                await pv.write(value, verify_value=False)

    async def update_forever(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception:  # a periodic task logs and carries on
                self.log.exception("%s: updating readbacks failed", self.instrument)
            await asyncio.sleep(self.tick)

    def ca_environment(self) -> dict[str, str]:
        """What caproto reads to bind and announce: only on `interface`, beacons to it too."""
        return {
            "EPICS_CA_SERVER_PORT": str(self.port),
            "EPICS_CA_REPEATER_PORT": str(self.repeater_port),
            "EPICS_CAS_INTF_ADDR_LIST": self.interface,
            "EPICS_CAS_BEACON_ADDR_LIST": self.interface,
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_PORT": str(self.repeater_port),
        }

    async def serve(self) -> None:
        from caproto.asyncio.server import Context

        os.environ.update(self.ca_environment())
        context = Context(self.pvdb, [self.interface])
        pva = None
        if self.pva_port:
            from .pva import PVAFace

            pva = PVAFace(self.pvdb, self.interface, self.pva_port, self.pva_port)
            pva.start()
        updates = asyncio.create_task(self.update_forever())
        server = asyncio.create_task(context.run(log_pv_names=False))
        stopped = asyncio.create_task(until_stopped())
        try:
            # the hub stops a service with SIGINT first: caproto alone ignored it for the 10 s grace
            await asyncio.wait([server, stopped], return_when=asyncio.FIRST_COMPLETED)
            if server.done():
                server.result()  # a failed server is this IOC's failure
        finally:
            for task in (updates, server, stopped):
                task.cancel()
            if pva is not None:
                pva.stop()

    def start_repeater(self) -> None:
        """caproto's CA repeater on this IOC's beacon port, as an EPICS host runs beside its IOCs.

        Without it every beacon to ``repeater_port`` is refused and caproto logs a traceback each time.
        A repeater already bound there (another IOC's, a site's) is left to do the job.
        """
        from caproto.sync import repeater

        os.environ.update(self.ca_environment())
        threading.Thread(target=repeater.run, args=(self.interface,), name="ca-repeater", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="visa-instrument-ioc",
        description="Serve one instrument of a YAML catalogue as an EPICS Channel Access IOC.",
    )
    parser.add_argument("--catalogue", required=True, help="the YAML catalogue (docs/catalogue.md)")
    parser.add_argument("--instrument", required=True, help="instrument id, e.g. D11")
    parser.add_argument("--data-root", required=True, help="runs write into DATA_ROOT/<proposal>/")
    parser.add_argument("--interface", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5064, help="CA server port (default 5064)")
    parser.add_argument("--repeater-port", type=int, default=5065, help="CA repeater/beacon port")
    parser.add_argument("--pva-port", type=int, default=5075,
                        help="PVAccess port of the PVA face the gateway reads (default 5075; 0: none)")
    parser.add_argument("--prefix", help="PV prefix (default '<instrument>:')")
    parser.add_argument("--today", default="", help="fixed date YYYY-MM-DD for the schedule (demo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = dict(catalogue=args.catalogue, instrument=args.instrument, data_root=args.data_root,
                   interface=args.interface, port=args.port, repeater_port=args.repeater_port,
                   pva_port=args.pva_port, today=args.today)
    if args.prefix:
        options["prefix"] = args.prefix
    try:
        ioc = InstrumentIOC(log=logging.getLogger("visa-instrument-ioc"), **options)
    except Exception as e:  # a bad catalogue or instrument: one line, no traceback
        print(f"visa-instrument-ioc: {e}", file=sys.stderr)
        return 2
    print(f"visa-instrument-ioc: {args.instrument} on {args.interface}:{args.port}, "
          f"PVA port {args.pva_port}, {len(ioc.pvdb)} PVs with prefix {ioc.prefix}", flush=True)
    ioc.start_repeater()
    asyncio.run(ioc.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
