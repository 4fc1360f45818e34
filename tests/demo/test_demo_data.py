"""visa-make-demo-data: real NeXus files per proposal, deterministic, idempotent, readable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.hubtools import REPO
from visa_demo.data import main

DEMO_CATALOGUE = REPO / "hub_config" / "demo" / "catalogue.yaml"


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "demo"
    assert main(["--catalogue", str(DEMO_CATALOGUE), "--out", str(root)]) == 0
    return root


def test_one_directory_per_proposal(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["P-2021-007", "P-2026-011", "P-2026-042"]
    for d in out.iterdir():
        assert (d / "README.txt").is_file()
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert len(list((out / "P-2026-011").glob("*.nxs"))) == 4  # two experiments, two runs each
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert 50_000 < total < 1_000_000


def test_files_world_readable(out: Path) -> None:
    for p in out.rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert not list(out.rglob(".*.tmp"))


def _first(out: Path, proposal: str) -> h5py.File:
    return h5py.File(sorted((out / proposal).glob("*.nxs"))[0], "r")


def test_sans_file_is_nexus_with_a_detector_image(out: Path) -> None:
    with _first(out, "P-2026-011") as f:
        assert f.attrs["default"] == "entry"
        entry = f["entry"]
        assert entry.attrs["NX_class"] == "NXentry"
        assert entry.attrs["proposal_id"] == "P-2026-011"
        assert entry.attrs["start_time"].startswith("2026-")
        assert "Self-assembly" in entry.attrs["title"]
        assert entry["experiment_identifier"][()].decode() == "P-2026-011"
        assert entry["instrument/name"][()].decode() == "D11"
        data = entry["data"]
        assert data.attrs["NX_class"] == "NXdata"
        assert data.attrs["signal"] == "counts"
        assert list(data.attrs["axes"]) == ["y", "x"]
        counts = data["counts"][()]
        assert counts.shape == (128, 128) and counts.dtype == np.int32
        assert counts.sum() > 10_000
        # scattering falls off from the centre; the beam stop is empty
        assert counts[64, 64] == 0
        assert counts[50:78, 50:78].mean() > counts[:10, :10].mean()
        assert data["x"].shape == (128,) and data["x"].attrs["units"] == "m"


def test_tof_file_has_spectrum(out: Path) -> None:
    with _first(out, "P-2026-042") as f:
        data, spectrum = f["entry/data"], f["entry/spectrum"]
        assert list(data.attrs["axes"]) == ["polar_angle", "time_of_flight"]
        counts = data["counts"][()]
        assert counts.shape == (64, 256)
        tof = spectrum["time_of_flight"][()]
        summed = spectrum["counts"][()]
        np.testing.assert_array_equal(summed, counts.sum(axis=0))
        assert 6000 < tof[np.argmax(summed)] < 7000  # the elastic line


def test_readme_describes_the_proposal(out: Path) -> None:
    text = (out / "P-2021-007" / "README.txt").read_text()
    assert "P-2021-007" in text and "from 2024-03-05" in text and "SIMULATED" in text


def test_second_run_changes_nothing(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(out)
    assert main(["--catalogue", str(DEMO_CATALOGUE), "--out", str(out)]) == 0
    assert _snapshot(out) == before
    assert "0 files written" in capsys.readouterr().out


def test_deterministic_and_repairs(out: Path, tmp_path: Path) -> None:
    other = tmp_path / "again"
    main(["--catalogue", str(DEMO_CATALOGUE), "--out", str(other)])
    for name in ("P-2026-011", "P-2026-042"):
        for a in sorted((out / name).glob("*.nxs")):
            with h5py.File(a, "r") as fa, h5py.File(other / name / a.name, "r") as fb:
                np.testing.assert_array_equal(fa["entry/data/counts"][()], fb["entry/data/counts"][()])
    # a damaged file and a wrong mode are put right, nothing else is touched
    victim = sorted((other / "P-2026-011").glob("*.nxs"))[0]
    victim.write_bytes(b"not hdf5")
    readme = other / "P-2026-042" / "README.txt"
    os.chmod(readme, 0o600)
    before = _snapshot(other)
    main(["--catalogue", str(DEMO_CATALOGUE), "--out", str(other)])
    after = _snapshot(other)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {str(victim.relative_to(other)), "P-2026-042/README.txt"}
    assert after["P-2026-042/README.txt"][2] == before["P-2026-042/README.txt"][2]
    with h5py.File(victim, "r") as f:
        assert f["entry/data/counts"].shape == (128, 128)


def test_bad_catalogue_exits_nonzero(tmp_path: Path) -> None:
    assert main(["--catalogue", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "o")]) == 1
