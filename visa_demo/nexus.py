"""Simulated neutron measurements written as NeXus/HDF5 files, for the demo data.

Small but physically shaped data, so the tools in an instance (h5py, silx,
NeXpy, Mantid) show something meaningful: a SANS detector image with the
scattering of spheres, a time-of-flight map with an elastic line and a
quasi-elastic broadening, a powder pattern for other instruments. Everything is
seeded from the run's identity, so the same catalogue gives the same data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import h5py
import numpy as np

from visa_authenticator.catalogue import Experiment, Proposal

GENERATOR_VERSION = "1"
# Which kind of measurement an instrument makes; anything else gets a powder pattern.
TECHNIQUES = {
    "D11": "sans", "D22": "sans", "D33": "sans",
    "IN4": "tof", "IN5": "tof", "IN6": "tof", "PANTHER": "tof",
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One simulated measurement: enough to regenerate it exactly."""

    number: int
    proposal: Proposal
    experiment: Experiment
    sample: str
    start: datetime
    minutes: int

    @property
    def technique(self) -> str:
        return TECHNIQUES.get(self.experiment.instrument_id.upper(), "powder")

    @property
    def seed(self) -> int:
        key = f"{self.proposal.id}/{self.experiment.id}/{self.number}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")

    @property
    def fingerprint(self) -> str:
        """Identifies the content; a file with the same fingerprint need not be rewritten."""
        parts = (
            GENERATOR_VERSION, self.number, self.proposal.id, self.proposal.title,
            self.experiment.id, self.experiment.instrument_id, self.sample,
            self.start.isoformat(), self.minutes, self.technique,
        )  # fmt: skip
        return hashlib.sha256(repr(parts).encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.number:06d}.nxs"


def runs_of(proposal: Proposal, experiment: Experiment) -> list[Run]:
    """Two runs per experiment (sample and its solvent/empty-cell reference)."""
    digest = hashlib.sha256(experiment.id.encode()).digest()
    base = 100000 + int.from_bytes(digest[:4], "big") % 800000
    start = datetime(experiment.start.year, experiment.start.month, experiment.start.day, 9)
    samples = ("sample", "reference")
    return [
        Run(
            number=base + i,
            proposal=proposal,
            experiment=experiment,
            sample=f"{experiment.id} {name}",
            start=start + timedelta(hours=3 * i),
            minutes=20 + 10 * i,
        )
        for i, name in enumerate(samples)
    ]


def sans_image(run: Run, size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts on a 2D detector: sphere form factor, background, a beam stop."""
    rng = np.random.default_rng(run.seed)
    pixel = 0.0075  # m
    centre = size / 2 + rng.uniform(-2, 2, 2)
    x = (np.arange(size) - centre[1]) * pixel
    y = (np.arange(size) - centre[0]) * pixel
    r = np.hypot(*np.meshgrid(x, y))
    wavelength, distance = 6e-10, 8.0
    q = 4 * np.pi / wavelength * np.sin(np.arctan(r / distance) / 2) * 1e-10  # 1/angstrom
    radius = 30 + 10 * rng.random() if run.sample.endswith("sample") else 5.0
    qr = np.maximum(q * radius, 1e-6)
    form = (3 * (np.sin(qr) - qr * np.cos(qr)) / qr**3) ** 2
    intensity = 2000 * form * run.minutes / 20 + 3
    counts = rng.poisson(intensity).astype(np.int32)
    counts[r < 4 * pixel] = 0  # beam stop
    return counts, x, y


def tof_map(
    run: Run, angles: int = 64, channels: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts versus scattering angle and time of flight: elastic line, quasi-elastic wings."""
    rng = np.random.default_rng(run.seed)
    two_theta = np.linspace(10.0, 130.0, angles)
    tof = np.linspace(4000.0, 12000.0, channels)  # microseconds
    elastic = 6500.0
    width = 40.0 + 120.0 * np.sin(np.radians(two_theta) / 2) ** 2
    lorentz = width[:, None] / ((tof[None, :] - elastic) ** 2 + width[:, None] ** 2)
    gauss = np.exp(-0.5 * ((tof[None, :] - elastic) / 35.0) ** 2)
    strength = 0.4 if run.sample.endswith("sample") else 0.05
    intensity = 400 * gauss + 6000 * strength * lorentz + 2
    counts = rng.poisson(intensity * run.minutes / 20).astype(np.int32)
    return counts, two_theta, tof


def powder_pattern(run: Run, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Counts versus 2-theta with a few Bragg peaks on a sloping background."""
    rng = np.random.default_rng(run.seed)
    two_theta = np.linspace(5.0, 150.0, points)
    peaks = rng.uniform(15, 140, 8)
    heights = rng.uniform(200, 2000, 8)
    intensity = 50 + 0.2 * two_theta
    for centre, height in zip(peaks, heights, strict=True):
        intensity = intensity + height * np.exp(-0.5 * ((two_theta - centre) / 0.4) ** 2)
    return rng.poisson(intensity).astype(np.int32), two_theta


def _field(group: h5py.Group, name: str, value: object, units: str | None = None) -> None:
    ds = group.create_dataset(name, data=value)
    if units:
        ds.attrs["units"] = units


Axis = tuple[str, np.ndarray, str]  # name, values, units


def _nxdata(group: h5py.Group, name: str, counts: np.ndarray, axes: list[Axis]) -> None:
    data = group.create_group(name)
    data.attrs["NX_class"] = "NXdata"
    data.attrs["signal"] = "counts"
    data.attrs["axes"] = [a[0] for a in axes]
    for index, (axis, _values, _units) in enumerate(axes):
        data.attrs[f"{axis}_indices"] = index
    ds = data.create_dataset("counts", data=counts, compression="gzip", compression_opts=4)
    ds.attrs["units"] = "counts"
    for axis, values, units in axes:
        _field(data, axis, values, units)


def write_run(path: str, run: Run) -> None:
    """Write one run as a NeXus file (NXroot > NXentry > NXinstrument, NXsample, NXdata)."""
    end = run.start + timedelta(minutes=run.minutes)
    title = f"{run.proposal.title} - {run.sample}"
    with h5py.File(path, "w") as f:
        f.attrs.update(
            {
                "NX_class": "NXroot", "default": "entry", "file_name": run.filename,
                "file_time": run.start.isoformat(), "creator": "visa-make-demo-data",
                "NeXus_version": "4.4", "visa_demo_fingerprint": run.fingerprint,
            }
        )  # fmt: skip
        entry = f.create_group("entry")
        entry.attrs.update(
            {
                "NX_class": "NXentry", "default": "data", "title": title,
                "proposal_id": run.proposal.id, "experiment_id": run.experiment.id,
                "start_time": run.start.isoformat(),
            }
        )  # fmt: skip
        _field(entry, "title", title)
        _field(entry, "experiment_identifier", run.proposal.id)
        _field(entry, "entry_identifier", str(run.number))
        _field(entry, "start_time", run.start.isoformat())
        _field(entry, "end_time", end.isoformat())
        _field(entry, "duration", run.minutes * 60, "s")
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        _field(instrument, "name", run.experiment.instrument_id)
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        _field(sample, "name", run.sample)
        if run.technique == "sans":
            counts, x, y = sans_image(run)
            _nxdata(entry, "data", counts, [("y", y, "m"), ("x", x, "m")])
        elif run.technique == "tof":
            counts, two_theta, tof = tof_map(run)
            angle_axis: Axis = ("polar_angle", two_theta, "degree")
            tof_axis: Axis = ("time_of_flight", tof, "microsecond")
            _nxdata(entry, "data", counts, [angle_axis, tof_axis])
            _nxdata(entry, "spectrum", counts.sum(axis=0, dtype=np.int32), [tof_axis])
        else:
            counts, two_theta = powder_pattern(run)
            _nxdata(entry, "data", counts, [("polar_angle", two_theta, "degree")])
