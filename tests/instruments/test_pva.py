"""The IOC's PVAccess face (`visa_instruments/pva.py`) read and written by a real p4p client over
TCP only (name server, no UDP search): same names and values as the CA PVs, and PVA puts meet the
same checks as CA puts (limits, read-only readbacks, run control)."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from p4p.client.asyncio import Context, RemoteError

from tests.instruments.conftest import DURING_D11_EXPERIMENT, NOTHING_SCHEDULED
from tests.instruments.test_ioc import make_ioc
from tests.support import free_port
from visa_instruments.pva import PVAFace


def tcp_only_client(port: int) -> Context:
    """A client that finds servers only through a TCP name server, as an instance will."""
    return Context("pva", conf={"EPICS_PVA_NAME_SERVERS": f"127.0.0.1:{port}",
                                "EPICS_PVA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_ADDR_LIST": ""}, useenv=False)


async def get(client: Context, name: str):
    return await asyncio.wait_for(client.get(name), 10)


async def put(client: Context, name: str, value) -> None:
    await asyncio.wait_for(client.put(name, value, wait=True), 10)


@pytest_asyncio.fixture(loop_scope="function")  # the SharedPVs' handlers run on the test's loop
async def face(demo_catalogue, clock, tmp_path, request):
    now = getattr(request, "param", DURING_D11_EXPERIMENT)
    ioc = make_ioc(demo_catalogue, clock, tmp_path, now)
    port = free_port()
    face = PVAFace(ioc.pvdb, "127.0.0.1", port, port)
    face.start()
    client = tcp_only_client(port)
    try:
        assert set(face.pvs) == set(ioc.pvdb)  # every CA PV has its PVA twin
        yield ioc, client
    finally:
        client.close()
        face.stop()


async def test_same_names_and_values_as_the_ca_face(face):
    ioc, client = face
    rbv = await get(client, "D11:DET:Z.RBV")
    assert rbv == 8.0 and rbv.raw.display.units == "m"
    val = await get(client, "D11:DET:Z.VAL")
    assert (val.raw.control.limitLow, val.raw.control.limitHigh) == (1.5, 39.0)
    shutter = await get(client, "D11:SHUTTER")
    assert shutter.raw.value.index == 0 and list(shutter.raw.value.choices) == ["Closed", "Open"]
    assert await get(client, "D11:RUN:MESSAGE") == ""


async def test_a_pva_put_moves_the_motor_and_the_readbacks_follow(face, clock):
    ioc, client = face
    await put(client, "D11:DET:Z.VAL", 12.0)
    assert ioc.pvdb["D11:DET:Z.VAL"].value == 12.0 and ioc.model.motors["DET:Z"].target == 12.0
    clock.t += 100.0
    await ioc.publish()  # the CA side publishes; the PVA side gets the same value
    assert await get(client, "D11:DET:Z.RBV") == 12.0
    assert await get(client, "D11:DET:Z.DMOV") == 1
    await put(client, "D11:SHUTTER", "Open")
    assert ioc.pvdb["D11:SHUTTER"].value == "Open"
    assert (await get(client, "D11:SHUTTER")).raw.value.index == 1
    assert await get(client, "D11:DET:RATE") > 0


async def test_pva_puts_meet_the_ca_checks(face):
    ioc, client = face
    with pytest.raises(RemoteError, match="Limits are set to 1.5 and 39.0"):
        await put(client, "D11:DET:Z.VAL", 1000.0)
    assert ioc.model.motors["DET:Z"].target == 8.0
    with pytest.raises(RemoteError, match="read-only"):
        await put(client, "D11:DET:Z.RBV", 3.0)
    assert ioc.pvdb["D11:DET:Z.RBV"].value == 8.0


@pytest.mark.parametrize("face", [NOTHING_SCHEDULED], indirect=True)
async def test_a_run_refused_through_pva_says_why(face):
    ioc, client = face
    with pytest.raises(RemoteError, match="no experiment is scheduled on D11"):
        await put(client, "D11:RUN:START", 1)
    message = await get(client, "D11:RUN:MESSAGE")
    assert message.startswith("run refused: no experiment is scheduled on D11")
