"""The physics of a demo instrument, as pure functions of an injectable clock.

Every device keeps the time and state of its last command and computes its present value from the
clock when asked, so a test moves a `ManualClock` instead of sleeping, and the IOC only has to
publish what the model says at each tick.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass(frozen=True)
class MotorSpec:
    """One axis of an instrument: its PV name (`<prefix><name>.VAL`), unit, limits and speed."""

    name: str
    description: str
    units: str
    low: float
    high: float
    velocity: float
    position: float


@dataclass(frozen=True)
class DeviceTable:
    """What an instrument has beside the common parts (temperature, shutter, detector, runs)."""

    motors: tuple[MotorSpec, ...]
    full_rate: float  # counts/s on the detector with the shutter open
    temperature: float = 295.0  # K at start-up
    time_constant: float = 30.0  # s: the sample environment's exponential settling


# The only per-instrument knowledge: the instruments themselves come from the catalogue, and one
# that is not listed here gets DEFAULT_DEVICES.
DEVICES: dict[str, DeviceTable] = {
    "D11": DeviceTable(
        motors=(
            MotorSpec("DET:Z", "detector distance", "m", 1.5, 39.0, 0.5, 8.0),
            MotorSpec("SAMPLE:X", "sample changer position", "mm", 0.0, 300.0, 10.0, 0.0),
            MotorSpec("SAMPLE:Y", "sample height", "mm", -20.0, 20.0, 2.0, 0.0),
        ),
        full_rate=12000.0,
    ),
    "IN5": DeviceTable(
        motors=(
            MotorSpec("SAMPLE:ROT", "sample rotation", "deg", -180.0, 180.0, 5.0, 0.0),
            MotorSpec("CHOPPER:PHASE", "chopper phase", "deg", 0.0, 360.0, 20.0, 0.0),
        ),
        full_rate=3500.0,
        temperature=1.5,
        time_constant=60.0,
    ),
}
DEFAULT_DEVICES = DeviceTable(
    motors=(MotorSpec("SAMPLE:ROT", "sample rotation", "deg", -180.0, 180.0, 5.0, 0.0),),
    full_rate=1000.0,
)


def devices_of(instrument_id: str) -> DeviceTable:
    return DEVICES.get(instrument_id.upper(), DEFAULT_DEVICES)


class LimitError(ValueError):
    """A setpoint outside what the device can do; the IOC turns it into a refused put."""


@dataclass
class Motor:
    """Moves from where it was told to go at `velocity`; a new target starts from where it is."""

    spec: MotorSpec
    clock: Clock
    _origin: float = field(init=False)
    _target: float = field(init=False)
    _since: float = field(init=False)
    velocity: float = field(init=False)

    def __post_init__(self) -> None:
        self._origin = self._target = self.spec.position
        self._since = self.clock()
        self.velocity = self.spec.velocity

    @property
    def target(self) -> float:
        return self._target

    def position(self) -> float:
        travelled = self.velocity * (self.clock() - self._since)
        distance = self._target - self._origin
        if travelled >= abs(distance):
            return self._target
        return self._origin + math.copysign(travelled, distance)

    def done(self) -> bool:
        return self.position() == self._target

    def move(self, target: float) -> None:
        if not self.spec.low <= target <= self.spec.high:
            raise LimitError(
                f"{self.spec.name} {target:g} {self.spec.units} is outside "
                f"[{self.spec.low:g}, {self.spec.high:g}]"
            )
        self._origin, self._since, self._target = self.position(), self.clock(), target

    def set_velocity(self, velocity: float) -> None:
        """A new speed applies from now on: the part already travelled is kept."""
        if velocity <= 0:
            raise LimitError(f"{self.spec.name} velocity must be positive, not {velocity:g}")
        self._origin, self._since = self.position(), self.clock()
        self.velocity = velocity


@dataclass
class SampleTemperature:
    """Relaxes exponentially towards its setpoint with `time_constant`: T = SP + (T0 - SP)e^(-t/tau)."""

    clock: Clock
    value: float
    time_constant: float
    tolerance: float = 0.1  # K: closer than this counts as settled
    _start: float = field(init=False)
    _since: float = field(init=False)
    setpoint: float = field(init=False)

    def __post_init__(self) -> None:
        self._start = self.setpoint = self.value
        self._since = self.clock()

    def temperature(self) -> float:
        elapsed = self.clock() - self._since
        return self.setpoint + (self._start - self.setpoint) * math.exp(-elapsed / self.time_constant)

    def settled(self) -> bool:
        return abs(self.temperature() - self.setpoint) < self.tolerance

    def set(self, setpoint: float) -> None:
        if not 0.0 < setpoint <= 600.0:
            raise LimitError(f"temperature setpoint {setpoint:g} K is outside (0, 600]")
        self._start, self._since, self.setpoint = self.temperature(), self.clock(), setpoint


class Instrument:
    """Motors, sample temperature, shutter and detector of one instrument, on one clock."""

    def __init__(self, instrument_id: str, clock: Clock) -> None:
        self.id = instrument_id
        self.clock = clock
        self.devices = devices_of(instrument_id)
        self.motors = {spec.name: Motor(spec, clock) for spec in self.devices.motors}
        self.sample = SampleTemperature(clock, self.devices.temperature, self.devices.time_constant)
        self.shutter_open = False

    def count_rate(self) -> float:
        """Counts/s: nothing reaches the detector with the shutter closed; with it open, a rate
        that depends on the detector distance (1/d² for a SANS detector) and wobbles slightly."""
        if not self.shutter_open:
            return 0.0
        distance = self.motors.get("DET:Z")
        geometry = (8.0 / distance.position()) ** 2 if distance else 1.0
        wobble = 1.0 + 0.02 * math.sin(self.clock() / 3.0)
        return self.devices.full_rate * geometry * wobble

    def snapshot(self) -> dict[str, float]:
        """The state a run records: positions, temperature, count rate."""
        state = {name: motor.position() for name, motor in self.motors.items()}
        state["TEMP"] = self.sample.temperature()
        state["DET:RATE"] = self.count_rate()
        return state
