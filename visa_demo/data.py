"""`visa-make-demo-data`: a data directory per proposal of the demo catalogue.

Writes `OUT/<proposal id>/` with a README and simulated NeXus runs for each
experiment of the proposal; this is what an instance mounts as its proposal
data. Safe to run again: files that already hold the same content are left
alone (their modification time included), others are replaced atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import h5py

from visa_authenticator.catalogue import Experiment, Proposal
from visa_authenticator.catalogue_data import CatalogueData
from visa_authenticator.file_catalogue import FileCatalogue

from .nexus import Run, runs_of, write_run

FILE_MODE, DIR_MODE = 0o644, 0o755
DESCRIPTIONS = {
    "sans": "2D detector image (counts on y, x), small-angle scattering",
    "tof": "counts versus polar angle and time of flight, plus the summed spectrum",
    "powder": "counts versus scattering angle (powder diffraction)",
}


@dataclass
class Tally:
    written: int = 0
    unchanged: int = 0


def _ensure_dir(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    if os.stat(path).st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)


def _fingerprint(path: str) -> str | None:
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("visa_demo_fingerprint")
    except (OSError, ValueError):
        return None
    return value.decode() if isinstance(value, bytes) else value


def _replace(path: str, write: object) -> None:
    """Write through a temporary file so a reader never sees half a file."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        write(tmp)  # type: ignore[operator]
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _ensure_mode(path: str) -> None:
    if os.stat(path).st_mode & 0o777 != FILE_MODE:
        os.chmod(path, FILE_MODE)


def write_nexus(path: str, run: Run, tally: Tally) -> None:
    if _fingerprint(path) == run.fingerprint:
        _ensure_mode(path)
        tally.unchanged += 1
        return
    _replace(path, lambda tmp: write_run(tmp, run))
    tally.written += 1


def write_text(path: str, text: str, tally: Tally) -> None:
    data = text.encode("utf-8")
    try:
        with open(path, "rb") as f:
            same = f.read() == data
    except OSError:
        same = False
    if same:
        _ensure_mode(path)
        tally.unchanged += 1
        return

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    _replace(path, write)
    tally.written += 1


def readme(proposal: Proposal, experiments: Sequence[Experiment], runs: Sequence[Run]) -> str:
    """What a scientist opening the directory needs to know about it."""
    public = proposal.public_date
    lines = [
        f"Proposal {proposal.id}: {proposal.title}",
        "",
        f"DOI:         {proposal.doi or '-'}",
        f"Open data:   {f'from {public.isoformat()}' if public else 'no (no public date)'}",
        "",
        "SIMULATED DATA for the VISA Hub demo (visa-make-demo-data); not a real measurement.",
        "",
        "Experiments:",
    ]
    for e in experiments:
        lines.append(f"  {e.id}  {e.instrument_id}  {e.start.isoformat()} to {e.end.isoformat()}")
    lines += ["", "Files (NeXus/HDF5; open with h5py, silx view, NeXpy or Mantid):"]
    for r in runs:
        what = DESCRIPTIONS[r.technique]
        lines.append(f"  {r.filename}  {r.experiment.instrument_id}  {r.sample}: {what}")
    if not runs:
        lines.append("  (none: this proposal has no experiment yet)")
    return "\n".join(lines) + "\n"


def make_demo_data(data: CatalogueData, out: str) -> Tally:
    """Create or update `out/<proposal>/` for every proposal of the catalogue."""
    tally = Tally()
    if not os.path.isdir(out):  # an existing root keeps its mode: it may be /srv or a mount
        _ensure_dir(out)
    for proposal in data.proposal_list:
        directory = os.path.join(out, proposal.id)
        _ensure_dir(directory)
        experiments = data.experiments_of_proposals([proposal.id])
        runs = [run for e in experiments for run in runs_of(proposal, e)]
        for run in runs:
            write_nexus(os.path.join(directory, run.filename), run, tally)
        text = readme(proposal, experiments, runs)
        write_text(os.path.join(directory, "README.txt"), text, tally)
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="visa-make-demo-data",
        description="Write simulated NeXus data for each proposal of a YAML catalogue.",
    )
    parser.add_argument("--catalogue", required=True, help="the YAML catalogue (docs/catalogue.md)")
    parser.add_argument("--out", required=True, help="data root; one directory per proposal")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    catalogue = FileCatalogue(path=args.catalogue, log=logging.getLogger("visa-make-demo-data"))
    try:
        data = catalogue.data()
    except Exception as e:
        print(f"visa-make-demo-data: {e}", file=sys.stderr)
        return 1
    tally = make_demo_data(data, args.out)
    print(
        f"{len(data.proposal_list)} proposals in {args.out}: "
        f"{tally.written} files written, {tally.unchanged} unchanged"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
