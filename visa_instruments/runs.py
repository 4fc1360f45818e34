"""Run control: a run is allowed only while one of the catalogue's experiments is scheduled on
the instrument, and writes a NeXus file into that proposal's data directory.

The detector data come from `visa_demo.nexus` (the same simulated measurements as the demo data);
the instrument's state at the start of the run (positions, temperature, rate) is added to the file.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import h5py

from visa_authenticator.catalogue import Experiment
from visa_authenticator.catalogue_data import CatalogueData
from visa_demo.data import _ensure_dir, _replace
from visa_demo.nexus import Run, runs_of, write_run

RUN_FILE = re.compile(r"^(\d{6})\.nxs$")
RUN_MINUTES = 20  # the nominal counting time written into the file


class RunRefused(Exception):
    """Why a run cannot start, in words for the operator (shown as RUN:MESSAGE)."""


@dataclass(frozen=True)
class StartedRun:
    number: int
    proposal_id: str
    experiment_id: str
    path: str


class RunControl:
    """Decides whether a run may start now and writes its file (blocking: call from an executor)."""

    def __init__(self, catalogue: Callable[[], CatalogueData], instrument_id: str, data_root: str,
                 now: Callable[[], datetime] = datetime.now) -> None:
        self.catalogue = catalogue  # asked for each decision: an edited schedule applies at once
        self.instrument_id = instrument_id
        self.data_root = data_root
        self.now = now

    def scheduled(self) -> tuple[Experiment, ...]:
        """Experiments on this instrument whose dates include today."""
        today = self.now().date()
        return tuple(
            e for e in self.catalogue().experiments_on([self.instrument_id]) if e.start <= today <= e.end
        )

    def experiment_for(self, proposal_id: str) -> Experiment:
        """The scheduled experiment to run for (the only one when `proposal_id` is empty)."""
        scheduled = self.scheduled()
        today = self.now().date().isoformat()
        if not scheduled:
            raise RunRefused(f"no experiment is scheduled on {self.instrument_id} on {today}")
        if not proposal_id:
            if len(scheduled) > 1:
                names = ", ".join(e.proposal_id for e in scheduled)
                raise RunRefused(f"several proposals are scheduled ({names}): set RUN:PROPOSAL")
            return scheduled[0]
        for experiment in scheduled:
            if experiment.proposal_id == proposal_id:
                return experiment
        raise RunRefused(
            f"{proposal_id} has no experiment on {self.instrument_id} on {today}"
        )

    def next_number(self, experiment: Experiment, directory: str) -> int:
        """One past the highest run of this proposal's directory and of the demo data's runs, so
        neither a file of ours nor one `visa-make-demo-data` writes later is overwritten."""
        proposal = self.catalogue().proposal(experiment.proposal_id)
        numbers = [run.number for run in runs_of(proposal, experiment)] if proposal else [100000]
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            names = []
        numbers += [int(m.group(1)) for m in map(RUN_FILE.match, names) if m]
        return max(numbers) + 1

    def start(self, proposal_id: str, state: dict[str, float]) -> StartedRun:
        """Write the run's file (mode 0644, whole or not at all) and say where it is."""
        experiment = self.experiment_for(proposal_id)
        proposal = self.catalogue().proposal(experiment.proposal_id)
        if proposal is None:
            raise RunRefused(f"{experiment.proposal_id} is not in the catalogue")
        directory = os.path.join(self.data_root, proposal.id)
        _ensure_dir(directory)
        run = Run(
            number=self.next_number(experiment, directory),
            proposal=proposal,
            experiment=experiment,
            sample=f"{experiment.id} sample",
            start=self.now().replace(microsecond=0),
            minutes=RUN_MINUTES,
        )
        path = os.path.join(directory, run.filename)
        _replace(path, lambda tmp: write_measured_run(tmp, run, self.instrument_id, state))
        return StartedRun(run.number, proposal.id, experiment.id, path)


def write_measured_run(path: str, run: Run, instrument_id: str, state: dict[str, float]) -> None:
    """The simulated measurement plus the instrument's state, as positioners and sample fields."""
    write_run(path, run)
    with h5py.File(path, "a") as f:
        f.attrs["creator"] = "visa-instrument-ioc"
        del f.attrs["visa_demo_fingerprint"]  # not one of visa-make-demo-data's files
        entry = f["entry"]
        temperature = entry["sample"].create_dataset("temperature", data=state["TEMP"])
        temperature.attrs["units"] = "K"
        instrument = entry["instrument"]
        for name, value in state.items():
            if name in ("TEMP", "DET:RATE"):
                continue
            positioner = instrument.create_group(name.replace(":", "_").lower())
            positioner.attrs["NX_class"] = "NXpositioner"
            positioner.create_dataset("name", data=f"{instrument_id}:{name}")
            positioner.create_dataset("value", data=value)
        detector = instrument.create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        rate = detector.create_dataset("count_rate", data=state["DET:RATE"])
        rate.attrs["units"] = "counts/s"
