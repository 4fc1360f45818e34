"""Each start saves the proposal's instruments in the server's user_options (the hub's record, which
visa-ops reads) and hands them to the instance as VISA_INSTRUMENTS; the console filters on them."""
from __future__ import annotations

from typing import Any

import pytest
from jupyterhub.objects import Hub
from traitlets.config import Config

from tests.ops.conftest import T0
from tests.ops.test_api import api  # noqa: F401 - the fixture
from tests.spawner.test_spawner import OPTIONS, PLANS, FakeBackend, FakeUser
from visa_spawner.spawner import VisaSpawner

RECORDER = "tests.spawner.test_spawner.FakeBackend"


class Owner(FakeUser):
    def __init__(self, proposals: list[dict]) -> None:
        super().__init__("alice")
        self.proposals = proposals

    async def get_auth_state(self) -> dict:
        return {"visa": {"roles": ["USER"], "quota": 3, "proposals": self.proposals}}


@pytest.fixture(autouse=True)
def fresh_recorder():
    FakeBackend.clear_instance()
    FakeBackend.spec = None
    yield
    FakeBackend.clear_instance()


def spawner_on(orm_spawner: Any, proposals: list[dict]) -> VisaSpawner:
    config = Config()
    config.VisaSpawner.backend_classes = {"fake": RECORDER, "sandbox": RECORDER}
    config.VisaSpawner.plans = PLANS
    return VisaSpawner(user=Owner(proposals), orm_spawner=orm_spawner, hub=Hub(), config=config,
                       api_token="t" * 32, user_options=dict(orm_spawner.user_options))


async def test_a_start_records_the_proposals_instruments_and_the_console_filters_on_them(api, hubdb, caplog):  # noqa: F811
    row = hubdb.server("alice", "sans", started=T0, last_activity=T0, proposal="P-1", plan="fake-small")
    row.user_options = dict(OPTIONS)
    hubdb.session.commit()
    spawner = spawner_on(row, [{"id": "P-1", "title": "Spins", "instruments": ["D11", "IN5"]}])

    await spawner.start()
    hubdb.session.commit()  # as the hub commits once start returns

    assert FakeBackend.spec.env["VISA_INSTRUMENTS"] == "D11,IN5"
    assert FakeBackend.spec.instruments == ("D11", "IN5")
    assert spawner.user_options == {**OPTIONS, "instruments": ["D11", "IN5"]}
    hubdb.session.expire_all()
    assert row.user_options["instruments"] == ["D11", "IN5"], "saved in the hub's record"
    assert "Spawner.db is deprecated" not in caplog.text, "saved through the record's own session"

    status, found = await api("GET", "api/admin/instances?instrument=D11", "root")
    assert status == 200 and [(i["owner"], i["server"]) for i in found["items"]] == [("alice", "sans")]
    assert found["items"][0]["instruments"] == ["D11", "IN5"]
    status, found = await api("GET", "api/admin/instances?instrument=D22", "root")
    assert status == 200 and found["items"] == []
    assert (await api("GET", "api/admin/instances?instrument=D11", "alice"))[0] == 403


async def test_a_restart_follows_the_catalogue_and_no_proposal_means_no_instruments(hubdb):
    row = hubdb.server("alice", "sans", proposal="P-1", plan="fake-small")
    row.user_options = {**OPTIONS, "instruments": ["D11"]}
    hubdb.session.commit()
    await spawner_on(row, [{"id": "P-1", "title": "Spins", "instruments": ["IN5"]}]).start()
    assert row.user_options["instruments"] == ["IN5"]
    assert FakeBackend.spec.env["VISA_INSTRUMENTS"] == "IN5"

    staff = hubdb.server("sam", "free", proposal="", plan="fake-small")
    staff.user_options = {**OPTIONS, "proposal": ""}
    hubdb.session.commit()
    spawner = spawner_on(staff, [])
    spawner.user.get_auth_state = _staff_state
    await spawner.start()
    assert staff.user_options["instruments"] == [] and FakeBackend.spec.env["VISA_INSTRUMENTS"] == ""


async def _staff_state() -> dict:
    return {"visa": {"roles": ["STAFF"], "quota": -1, "proposals": []}}
