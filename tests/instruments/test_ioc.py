"""The IOC's PVs without the network: puts go through the same hooks a CA client's put does
(`ChannelData.write` → `verify_value`), readbacks follow the model, run control writes NeXus files
only while an experiment is scheduled on the instrument."""
from __future__ import annotations

import asyncio
import os
import stat

import h5py
import numpy as np
import pytest
from caproto import AccessRights

from tests.instruments.conftest import CATALOGUE, DURING_D11_EXPERIMENT, NOTHING_SCHEDULED
from visa_instruments.ioc import InstrumentIOC, main
from visa_instruments.runs import RunRefused


def make_ioc(catalogue, clock, tmp_path, now, instrument="D11") -> InstrumentIOC:
    return InstrumentIOC(catalogue_data=lambda: catalogue, clock=clock, now=lambda: now,
                         instrument=instrument, data_root=str(tmp_path / "data"))


def value(ioc: InstrumentIOC, name: str):
    return ioc.pvdb[name].value


def test_every_instrument_of_the_catalogue_has_an_ioc_and_others_are_refused(demo_catalogue, clock, tmp_path):
    for instrument in demo_catalogue.instruments:
        ioc = make_ioc(demo_catalogue, clock, tmp_path, DURING_D11_EXPERIMENT, instrument.id)
        assert f"{instrument.id}:RUN:START" in ioc.pvdb and f"{instrument.id}:SHUTTER" in ioc.pvdb
    assert "IN5:SAMPLE:ROT.RBV" in make_ioc(demo_catalogue, clock, tmp_path, NOTHING_SCHEDULED, "IN5").pvdb
    with pytest.raises(ValueError, match=r"'D99' is not in the catalogue \(D11, IN5\)"):
        make_ioc(demo_catalogue, clock, tmp_path, DURING_D11_EXPERIMENT, "D99")


async def test_a_motor_put_moves_the_readback_over_time_until_done(demo_catalogue, clock, tmp_path):
    ioc = make_ioc(demo_catalogue, clock, tmp_path, DURING_D11_EXPERIMENT)
    await ioc.pvdb["D11:DET:Z.VELO"].write(2.0)
    await ioc.pvdb["D11:DET:Z.VAL"].write(12.0)
    assert value(ioc, "D11:DET:Z.DMOV") == 0 and value(ioc, "D11:DET:Z.RBV") == 8.0
    clock.t += 1.0
    await ioc.publish()
    assert value(ioc, "D11:DET:Z.RBV") == pytest.approx(10.0) and value(ioc, "D11:DET:Z.DMOV") == 0
    clock.t += 1.5
    await ioc.publish()
    assert value(ioc, "D11:DET:Z.RBV") == 12.0 and value(ioc, "D11:DET:Z.DMOV") == 1


async def test_bad_puts_are_refused_and_readbacks_are_read_only(demo_catalogue, clock, tmp_path):
    ioc = make_ioc(demo_catalogue, clock, tmp_path, DURING_D11_EXPERIMENT)
    with pytest.raises(Exception, match="Limits"):
        await ioc.pvdb["D11:DET:Z.VAL"].write(50.0)
    assert value(ioc, "D11:DET:Z.VAL") == 8.0
    for name in ("D11:DET:Z.RBV", "D11:DET:Z.DMOV", "D11:TEMP:RBV", "D11:DET:RATE", "D11:RUN:STATE"):
        assert ioc.pvdb[name].check_access("host", "user") == AccessRights.READ, name
    assert AccessRights.WRITE in ioc.pvdb["D11:DET:Z.VAL"].check_access("host", "user")


async def test_temperature_settles_and_the_rate_needs_the_shutter(demo_catalogue, clock, tmp_path):
    ioc = make_ioc(demo_catalogue, clock, tmp_path, DURING_D11_EXPERIMENT)
    await ioc.pvdb["D11:TEMP:SP"].write(280.0)
    await ioc.pvdb["D11:SHUTTER"].write("Open")
    assert value(ioc, "D11:TEMP:SETTLED") == 0 and value(ioc, "D11:DET:RATE") > 11000
    clock.t += 300.0
    await ioc.publish()
    assert value(ioc, "D11:TEMP:RBV") == pytest.approx(280.0, abs=0.01)
    assert value(ioc, "D11:TEMP:SETTLED") == 1
    await ioc.pvdb["D11:SHUTTER"].write("Closed")
    assert value(ioc, "D11:DET:RATE") == 0.0


async def test_a_run_is_refused_with_a_message_when_nothing_is_scheduled(demo_catalogue, clock, tmp_path):
    ioc = make_ioc(demo_catalogue, clock, tmp_path, NOTHING_SCHEDULED)
    with pytest.raises(RunRefused):
        await ioc.pvdb["D11:RUN:START"].write(1)
    assert value(ioc, "D11:RUN:MESSAGE") == "run refused: no experiment is scheduled on D11 on 2026-12-01"
    assert value(ioc, "D11:RUN:STATE") == "Idle" and not (tmp_path / "data").exists()


async def test_a_run_for_another_proposal_is_refused(demo_catalogue, clock, tmp_path):
    ioc = make_ioc(demo_catalogue, clock, tmp_path, DURING_D11_EXPERIMENT)
    await ioc.pvdb["D11:RUN:PROPOSAL"].write("P-2026-042")
    with pytest.raises(RunRefused):
        await ioc.pvdb["D11:RUN:START"].write(1)
    assert value(ioc, "D11:RUN:MESSAGE") == "run refused: P-2026-042 has no experiment on D11 on 2026-11-24"


async def test_a_run_during_the_experiment_writes_a_new_nexus_file(demo_catalogue, clock, tmp_path):
    ioc = make_ioc(demo_catalogue, clock, tmp_path, DURING_D11_EXPERIMENT)
    await ioc.pvdb["D11:SHUTTER"].write("Open")
    await ioc.pvdb["D11:SAMPLE:X.VAL"].write(30.0)
    clock.t += 10.0
    await ioc.pvdb["D11:RUN:START"].write(1)
    number = value(ioc, "D11:RUN:NUMBER")
    path = tmp_path / "data" / "P-2026-011" / f"{number:06d}.nxs"
    assert value(ioc, "D11:RUN:FILE") == str(path)
    assert value(ioc, "D11:RUN:STATE") == "Running" and value(ioc, "D11:RUN:PROPOSAL") == "P-2026-011"
    assert value(ioc, "D11:RUN:MESSAGE") == f"run {number} started for P-2026-011 (E-2026-0110)"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    with h5py.File(path, "r") as f:
        entry = f["entry"]
        assert entry["experiment_identifier"][()].decode() == "P-2026-011"
        assert entry["start_time"][()].decode() == "2026-11-24T10:30:00"
        counts = entry["data/counts"][()]
        assert counts.shape == (128, 128) and counts.dtype == np.int32 and counts.sum() > 10000
        assert entry["data/x"].shape == (128,)
        assert entry["instrument/sample_x/value"][()] == pytest.approx(30.0)
        assert entry["instrument/det_z/value"][()] == pytest.approx(8.0)
        assert entry["instrument/detector/count_rate"][()] > 11000
        assert entry["sample/temperature"][()] == pytest.approx(295.0)
        assert f.attrs["creator"] == "visa-instrument-ioc"

    with pytest.raises(RunRefused):  # one run at a time
        await ioc.pvdb["D11:RUN:START"].write(1)
    assert value(ioc, "D11:RUN:MESSAGE") == f"run {number} is in progress: stop it first"
    await ioc.pvdb["D11:RUN:STOP"].write(1)
    assert value(ioc, "D11:RUN:STATE") == "Idle"
    await ioc.pvdb["D11:RUN:START"].write(1)
    assert value(ioc, "D11:RUN:NUMBER") == number + 1
    assert sorted(os.listdir(path.parent)) == [f"{number:06d}.nxs", f"{number + 1:06d}.nxs"]


async def test_two_starts_at_once_make_one_run(demo_catalogue, clock, tmp_path):
    ioc = make_ioc(demo_catalogue, clock, tmp_path, DURING_D11_EXPERIMENT)
    results = await asyncio.gather(ioc.pvdb["D11:RUN:START"].write(1), ioc.pvdb["D11:RUN:START"].write(1),
                                   return_exceptions=True)
    assert sum(isinstance(r, RunRefused) for r in results) == 1, results
    assert len(os.listdir(tmp_path / "data" / "P-2026-011")) == 1


async def test_a_data_root_that_cannot_be_written_is_a_message_not_a_crash(demo_catalogue, clock, tmp_path):
    (tmp_path / "data").write_text("a file where the data root should be")
    ioc = make_ioc(demo_catalogue, clock, tmp_path, DURING_D11_EXPERIMENT)
    with pytest.raises(RunRefused):
        await ioc.pvdb["D11:RUN:START"].write(1)
    assert value(ioc, "D11:RUN:MESSAGE").startswith("run failed: cannot write the file (")
    assert value(ioc, "D11:RUN:STATE") == "Idle"


def test_the_console_script_refuses_an_unknown_instrument_in_one_line(tmp_path, capsys):
    code = main(["--catalogue", str(CATALOGUE), "--instrument", "D99", "--data-root", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == (
        "visa-instrument-ioc: instrument 'D99' is not in the catalogue (D11, IN5)\n"
    )
