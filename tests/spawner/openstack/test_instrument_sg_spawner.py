"""The spawner tells the backend which instruments' control windows are open (auth_state's
`instrument_control`: the proposals whose window is open now), so OpenStack attaches only those
instruments' security groups at create."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from jupyterhub.objects import Hub
from traitlets.config import Config

from tests.spawner.test_spawner import OPTIONS, PLANS, FakeBackend, FakeUser
from visa_spawner.spawner import VisaSpawner

PROPOSALS = [{"id": "P-1", "title": "Spins", "instruments": ["D11", "IN5"]}]


class Owner(FakeUser):
    def __init__(self, open_windows: list[str]) -> None:
        super().__init__("alice")
        self.open_windows = open_windows

    async def get_auth_state(self) -> dict:
        return {"visa": {"roles": ["USER"], "quota": 3, "proposals": PROPOSALS,
                         "instrument_control": self.open_windows}}


@pytest.mark.parametrize("open_windows, expected", [
    (["P-1"], ("D11", "IN5")), ([], ()), (["P-other"], ()),
])
async def test_instrument_control_names_the_instruments_whose_window_is_open(open_windows, expected):
    FakeBackend.clear_instance()
    config = Config()
    config.VisaSpawner.backend_classes = {"fake": "tests.spawner.test_spawner.FakeBackend", "sandbox": "tests.spawner.test_spawner.FakeBackend"}
    config.VisaSpawner.plans = PLANS
    orm = SimpleNamespace(name="analysis", display_name="x", user_options=dict(OPTIONS), server=None)
    spawner = VisaSpawner(user=Owner(open_windows), orm_spawner=orm, hub=Hub(), config=config, api_token="t" * 32,
                          user_options=dict(OPTIONS))
    try:
        await spawner.start()
    finally:
        FakeBackend.clear_instance()
    assert FakeBackend.spec.instruments == ("D11", "IN5")
    assert FakeBackend.spec.instrument_control == expected
