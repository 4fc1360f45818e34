"""Quota overrides set by an admin, without a restart: the file, and the hub applying it where the
catalogue's quota was applied (JupyterHub's named-server limit, the request check at each start)."""
from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace

import pytest
from jupyterhub.spawner import SpawnException
from tornado import web

from tests.spawner.test_spawner import ENTITLEMENTS, fresh_backends, make_spawner, start_and_watch  # noqa: F401
from visa_spawner.handlers import named_server_limit
from visa_spawner.options import OptionError, validate_request
from visa_spawner.quota_overrides import check_quota_value, read_overrides, write_override
from visa_spawner.spawner import VisaSpawner

FORM = {"name": "Another", "proposal": "", "plan": "fake-small"}


def test_no_file_means_no_override(tmp_path):
    assert read_overrides(tmp_path / "quota-overrides.json") == {}


def test_set_change_and_remove_are_read_back_at_once(tmp_path):
    path = tmp_path / "state" / "quota-overrides.json"
    write_override(path, "grace", 1)
    write_override(path, "alice", -1)
    assert read_overrides(path) == {"grace": 1, "alice": -1}
    write_override(path, "grace", 7)  # same size, same tick: still seen
    assert read_overrides(path) == {"grace": 7, "alice": -1}
    write_override(path, "grace", None)
    write_override(path, "nobody", None)  # removing what is not there is no error
    assert read_overrides(path) == {"alice": -1}
    assert json.loads(path.read_text()) == {"quota": {"alice": -1}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["quota-overrides.json"], "no temporary file left behind"


def test_the_answer_is_a_copy(tmp_path):
    path = tmp_path / "quota-overrides.json"
    write_override(path, "grace", 1)
    read_overrides(path)["grace"] = 1000
    assert read_overrides(path) == {"grace": 1}


@pytest.mark.parametrize("text", ["{not json", '{"quota": 3}', '{"quota": {"grace": "1"}}', '{"quota": {"grace": 1.5}}',
                                  '{"quota": {"grace": -2}}', '{"quota": {"grace": 1001}}', '{"quota": {"grace": true}}',
                                  '[1]'])
def test_a_broken_file_keeps_the_last_good_answer(tmp_path, text):
    path = tmp_path / "quota-overrides.json"
    write_override(path, "grace", 2)
    assert read_overrides(path) == {"grace": 2}
    path.write_text(text)
    assert read_overrides(path) == {"grace": 2}
    never_good = tmp_path / "other.json"
    never_good.write_text(text)
    assert read_overrides(never_good) == {}, "a broken file never read before overrides nothing"


@pytest.mark.parametrize("value", ["", "two", "1.5", "-2", "1001", "--1", "1e3", "²", "0x1", 1.0, True, None, -2, 1001])
def test_bad_values_are_refused_with_a_clear_message(tmp_path, value):
    with pytest.raises(ValueError, match=r"^quota must be a whole number from -1 to 1000\.$"):
        check_quota_value(value)
    if value is not None:
        with pytest.raises(ValueError):
            write_override(tmp_path / "q.json", "grace", value)
    assert not (tmp_path / "q.json").exists()


@pytest.mark.parametrize("value, expected", [("-1", -1), (" 0 ", 0), ("1000", 1000), (5, 5)])
def test_good_values(value, expected):
    assert check_quota_value(value) == expected


def spawner_with(tmp_path, catalogue_quota: int, override: int | None) -> VisaSpawner:
    """alice's spawner; her catalogue quota as given; her override (if any) in the hub's file."""
    path = tmp_path / "quota-overrides.json"
    spawner = make_spawner(quota_overrides_file=str(path))

    async def auth_state() -> dict:
        return {"visa": {**ENTITLEMENTS, "quota": catalogue_quota}}

    spawner.user.get_auth_state = auth_state
    write_override(path, "alice", override)
    return spawner


def handler_of(spawner: VisaSpawner) -> SimpleNamespace:
    """A page handler that only shows the limit (home): what `named_server_limit` reads of it."""
    user = SimpleNamespace(name="alice", spawner=spawner, get_auth_state=spawner.user.get_auth_state, orm_spawners={})
    return SimpleNamespace(current_user=user, request=SimpleNamespace(method="GET"), path_args=[])


@pytest.mark.parametrize("catalogue, override, limit", [
    (3, None, 3), (3, 5, 5), (3, -1, 0), (0, 2, 2), (-1, 4, 4), (3, 0, 0),
])
async def test_the_named_server_limit_is_the_override_when_there_is_one(tmp_path, catalogue, override, limit):
    assert await named_server_limit(handler_of(spawner_with(tmp_path, catalogue, override))) == limit


async def test_an_override_of_zero_refuses_a_new_record_through_any_route(tmp_path):
    from jupyterhub.apihandlers.users import UserServerAPIHandler

    spawner = spawner_with(tmp_path, 3, 0)
    handler = UserServerAPIHandler.__new__(UserServerAPIHandler)  # the REST API's create-a-server handler
    user = SimpleNamespace(name="alice", spawner=spawner, get_auth_state=spawner.user.get_auth_state)
    owner = SimpleNamespace(orm_spawners={})
    handler.__dict__.update(request=SimpleNamespace(method="POST"), path_args=["alice", "new-one"])
    handler._jupyterhub_user = user
    handler.find_user = lambda name: owner
    with pytest.raises(web.HTTPError) as e:
        await named_server_limit(handler)
    assert e.value.status_code == 403 and "awaiting approval" in e.value.log_message


@pytest.mark.parametrize("catalogue, override, existing, refused", [
    (0, None, 0, "waiting for approval"), (0, 1, 0, ""), (3, 1, 1, r"the most your account allows \(1\)"),
    (1, -1, 5, ""), (3, 0, 0, "waiting for approval"),
])
async def test_the_new_instance_check_applies_the_override(tmp_path, catalogue, override, existing, refused):
    spawner = spawner_with(tmp_path, catalogue, override)
    entitlements = await spawner.entitlements()  # what the New-instance handler passes
    assert entitlements["proposals"] == ENTITLEMENTS["proposals"]
    kwargs = dict(entitlements=entitlements, plans=spawner.plan_catalogue(),
                  existing={f"s{i}": f"S{i}" for i in range(existing)}, roles_without_proposal=["USER", "STAFF"])
    if refused:
        with pytest.raises(OptionError, match=refused):
            validate_request(FORM, **kwargs)
    else:
        assert validate_request(FORM, **kwargs).display_name == "Another"


async def test_a_start_follows_the_override_without_a_restart(tmp_path):
    """Catalogue quota 0 (awaiting approval): refused; an admin sets 1: the same spawner starts."""
    spawner = spawner_with(tmp_path, 0, None)
    with pytest.raises(SpawnException, match="waiting for approval"):
        await start_and_watch(spawner)
    write_override(spawner.quota_overrides_file, "alice", 1)
    (host, _), _events = await start_and_watch(spawner)
    assert host == "127.0.0.1"
