"""Plans switched on and off without a restart: the file, its cache, the form and the spawner."""
from __future__ import annotations

import json
import os
import stat

import pytest
from jupyterhub.spawner import SpawnException

from tests.spawner.test_spawner import OPTIONS, PLANS, fake, fresh_backends, make_spawner, start_and_watch  # noqa: F401
from visa_spawner.backends.base import Plan
from visa_spawner.options import OptionError, validate_request
from visa_spawner.plan_switch import read_disabled, write_disabled
from visa_spawner.plans import parse_plans, plan_offer

ENTITLEMENTS = {"roles": ["USER"], "quota": 3, "proposals": [{"id": "P-1", "title": "Spins"}]}
FORM = {"name": "Mine", "proposal": "P-1", "plan": "small"}
CATALOGUE = [Plan("small", "Small", "sandbox", 1, 512, default=True), Plan("big", "Big", "sandbox", 2, 4096),
             Plan("gpu", "GPU", "qemu", 2, 4096, gpus=2)]


def test_no_file_means_every_plan_is_on(tmp_path):
    assert read_disabled(tmp_path / "plans-disabled.json") == set()


def test_a_write_is_read_back_at_once_each_time(tmp_path):
    path = tmp_path / "state" / "plans-disabled.json"
    write_disabled(path, ["big", "small", "big"])
    assert read_disabled(path) == {"big", "small"}
    assert json.loads(path.read_text()) == {"disabled": ["big", "small"]}
    # same size, same second: the cache must still see the change
    write_disabled(path, ["gpu", "vm2"])
    assert read_disabled(path) == {"gpu", "vm2"}
    write_disabled(path, [])
    assert read_disabled(path) == set()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["plans-disabled.json"], "no temporary file left behind"


@pytest.mark.parametrize("text", ["{not json", '{"disabled": "big"}', '["big"]', '{"disabled": [1]}'])
def test_a_broken_file_keeps_the_last_good_answer(tmp_path, text):
    path = tmp_path / "plans-disabled.json"
    write_disabled(path, ["big"])
    assert read_disabled(path) == {"big"}
    path.write_text(text)
    assert read_disabled(path) == {"big"}


def test_a_broken_file_never_read_before_disables_nothing(tmp_path):
    path = tmp_path / "plans-disabled.json"
    path.write_text("{oops")
    assert read_disabled(path) == set()


def test_the_home_page_offers_enabled_plans_and_greys_out_gpu_plans():
    assert [(p.id, why) for p, why in plan_offer(CATALOGUE, {"big"}, {})] == [("small", ""), ("gpu", "no GPU free")]
    assert [(p.id, why) for p, why in plan_offer(CATALOGUE, set(), {"qemu": 1})][2] == ("gpu", "no GPU free")
    assert [(p.id, why) for p, why in plan_offer(CATALOGUE, set(), {"qemu": 2})][2] == ("gpu", "")


@pytest.mark.parametrize("plan, disabled, gpus_free, message", [
    ("big", {"big"}, {}, "Plan “Big” cannot be started: disabled by the facility's administrators for now. "
                         "Choose another plan."),
    ("gpu", set(), {"qemu": 1}, "Plan “GPU” cannot be started: no GPU free. Choose another plan."),
    ("gpu", set(), None, "Plan “GPU” cannot be started: no GPU free. Choose another plan."),
])
def test_the_form_refuses_a_disabled_or_gpu_starved_plan_with_a_clear_message(plan, disabled, gpus_free, message):
    with pytest.raises(OptionError) as e:
        validate_request({**FORM, "plan": plan}, entitlements=ENTITLEMENTS, plans=CATALOGUE, existing={},
                         disabled=disabled, gpus_free=gpus_free)
    assert str(e.value) == message


def test_other_plans_still_validate_while_one_is_disabled():
    request = validate_request({**FORM, "plan": "small"}, entitlements=ENTITLEMENTS, plans=CATALOGUE, existing={},
                               disabled={"big"}, gpus_free={"qemu": 2})
    assert request.plan == "small"
    request = validate_request({**FORM, "plan": "gpu"}, entitlements=ENTITLEMENTS, plans=CATALOGUE, existing={},
                               gpus_free={"qemu": 2})
    assert request.plan == "gpu"


@pytest.mark.parametrize("gpus", [-1, 1.5, "2", True])
def test_a_plan_with_a_bad_gpu_count_is_refused_at_configuration(gpus):
    with pytest.raises(ValueError, match="gpus must be a whole number"):
        parse_plans([{"id": "g", "display_name": "G", "backend": "sandbox", "cpus": 1, "memory_mb": 512, "gpus": gpus}],
                    ["sandbox"])


async def test_the_spawner_reads_the_switch_without_a_restart_and_leaves_running_instances_alone(tmp_path):
    switch = tmp_path / "plans-disabled.json"
    running = make_spawner(plan_switch_file=str(switch))
    await start_and_watch(running)

    write_disabled(switch, ["fake-small"])
    assert [p.id for p, _ in await running.plan_offer()] == ["other"]
    assert await running.poll() is None  # the running instance is untouched
    await running.stop()
    assert fake().calls[-1][0] == "stop"

    restart = make_spawner(plan_switch_file=str(switch))
    with pytest.raises(SpawnException, match="Small fake” cannot be started: disabled by the facility's administrators"):
        await restart.start()
    assert [c[0] for c in fake().calls].count("create") == 1

    write_disabled(switch, [])
    await start_and_watch(make_spawner(plan_switch_file=str(switch)))
    assert [c[0] for c in fake().calls].count("create") == 2


def test_plans_and_options_are_unchanged_when_no_switch_is_configured():
    spawner = make_spawner()
    assert spawner.plan_switch_file == "" and spawner.disabled_plans() == set()
    assert OPTIONS["plan"] in {p["id"] for p in PLANS}
