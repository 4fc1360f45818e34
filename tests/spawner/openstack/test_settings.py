"""The production profile's OpenStack settings (environment → config), and the profile loading them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from visa_profiles.env import SettingsError
from visa_profiles.openstack import openstack_config, openstack_enabled
from visa_spawner.backends.openstack.backend import OpenStackBackend
from visa_spawner.backends.openstack.reconciler import Reconciler
from visa_spawner.spawner import DEFAULT_PLANS, VisaSpawner

REPO = Path(__file__).resolve().parents[3]
PLANS = [{"id": "vm-medium", "display_name": "Medium VM", "cpus": 4, "memory_mb": 16384,
          "image": "visa-analysis", "flavor": "m1.large"}]
GROUPS = [{"name": "visa-base", "rules": [{"protocol": "tcp", "port_range_min": 8888, "port_range_max": 8888,
                                           "remote_ip_prefix": "10.1.0.10/32"}]}]
ENV = {
    "VISA_OPENSTACK_CLOUD": "facility", "VISA_OPENSTACK_HUB_ID": "prod-1",
    "VISA_OPENSTACK_NETWORK": "visa-instances", "VISA_HUB_CONNECT_URL": "http://hub.internal:8081",
    "VISA_HUB_API_BIND_URL": "http://0.0.0.0:8081", "VISA_OPENSTACK_PLANS_FILE": "/etc/visahub/plans.json",
    "VISA_OPENSTACK_SECURITY_GROUPS_FILE": "/etc/visahub/groups.json",
    "VISA_OPENSTACK_MOUNT_COMMAND": '["mount", "-t", "nfs", "-o", "ro", "nas:/exp/{proposal}", "{mount_point}"]',
}
FILES = {"/etc/visahub/plans.json": json.dumps(PLANS), "/etc/visahub/groups.json": json.dumps(GROUPS)}


def read(path: str) -> str:
    if path not in FILES:
        raise FileNotFoundError(2, "No such file or directory", path)
    return FILES[path]


def test_full_environment_maps_onto_real_traits():
    c = openstack_config(ENV, list(DEFAULT_PLANS), read_file=read)
    classes = {"OpenStackBackend": OpenStackBackend, "VisaSpawner": VisaSpawner, "Reconciler": Reconciler}
    for section, values in c.items():
        if section == "JupyterHub":
            assert set(values) == {"hub_connect_url", "hub_bind_url"}
            continue
        missing = [n for n in values if not classes[section].class_traits(config=True).get(n)]
        assert not missing, f"{section}: {missing}"
    o = c.OpenStackBackend
    assert (o.cloud, o.hub_id, o.networks, o.clouds_yaml) == ("facility", "prod-1", "visa-instances",
                                                             "/etc/visahub/clouds.yaml")
    assert o.flavors == {"vm-medium": "m1.large"} and o.security_group_policies == GROUPS
    assert o.mount_templates[0][-2:] == ["nas:/exp/{proposal}", "{mount_point}"]
    plans = c.VisaSpawner.plans
    assert [p["id"] for p in plans] == ["sandbox-small", "sandbox-large", "vm-medium"]
    assert plans[-1]["backend"] == "openstack" and "flavor" not in plans[-1]
    assert c.VisaSpawner.start_timeout > o.build_timeout + o.boot_timeout
    assert o.stop_action == "delete"


def test_every_problem_is_reported_at_once():
    env = {**ENV, "VISA_OPENSTACK_HUB_ID": "", "VISA_HUB_CONNECT_URL": "hub:8081", "VISA_OPENSTACK_SHELVE": "maybe",
           "VISA_OPENSTACK_MOUNT_COMMAND": "mount -t nfs", "VISA_OPENSTACK_SECURITY_GROUPS_FILE": "/nope.json",
           "VISA_OPENSTACK_BUILD_TIMEOUT": "soon"}
    with pytest.raises(SettingsError) as e:
        openstack_config(env, [], read_file=read)
    text = str(e.value)
    for name in ("VISA_OPENSTACK_HUB_ID", "VISA_HUB_CONNECT_URL", "VISA_OPENSTACK_SHELVE",
                 "VISA_OPENSTACK_MOUNT_COMMAND", "VISA_OPENSTACK_SECURITY_GROUPS_FILE", "VISA_OPENSTACK_BUILD_TIMEOUT"):
        assert name in text, name
    assert "No such file" in text


@pytest.mark.parametrize("plans, message", [
    (None, "VISA_OPENSTACK_PLANS_FILE is required"),
    ("not json", "not valid JSON"),
    ('{"id": "x"}', "must hold a JSON list"),
    ('[{"id": "x", "display_name": "X", "cpus": 2}]', "missing memory_mb"),
    ('[{"id": "sandbox-small", "display_name": "X", "cpus": 1, "memory_mb": 512}]', "duplicate id"),
    ('["vm"]', "each plan must be a JSON object"),
])
def test_bad_plans_files_are_named(plans, message):
    env = dict(ENV)
    if plans is None:
        del env["VISA_OPENSTACK_PLANS_FILE"]
    files = {**FILES, "/etc/visahub/plans.json": plans or ""}
    with pytest.raises(SettingsError, match=message):
        openstack_config(env, list(DEFAULT_PLANS), read_file=files.__getitem__)


def test_enabled_only_with_a_cloud_name():
    assert openstack_enabled(ENV) and not openstack_enabled({"VISA_OPENSTACK_CLOUD": " "}) and not openstack_enabled({})


LOAD_PROFILE = """
import json
from traitlets.config import PyFileConfigLoader
c = PyFileConfigLoader("jupyterhub_config.py", path={path!r}).load_config()
print(json.dumps({{"plans": [p["id"] for p in c.VisaSpawner.plans], "api": c.Reconciler.hub_api_url,
                  "services": [s["name"] for s in c.JupyterHub.services], "cloud": c.OpenStackBackend.cloud,
                  "archiving": [s["environment"]["VISA_OPS_ARCHIVING_BACKENDS"] for s in c.JupyterHub.services
                                if s["name"] == "visa-ops"][0]}}))
"""


def test_the_production_profile_loads_openstack_or_refuses_with_the_variable_named(tmp_path: Path):
    """The real profile file, loaded as JupyterHub loads it (no hub started)."""
    env = {**os.environ, "VISA_STATE_DIR": str(tmp_path), "VISA_HUB_DB_URL": "postgresql://h:p@db/j",
           "JUPYTERHUB_CRYPT_KEY": "ab" * 32, "VISA_OIDC_ISSUER": "https://login.example/", "VISA_OIDC_CLIENT_ID": "c",
           "VISA_OIDC_CLIENT_SECRET": "s", "VISA_CATALOGUE_DB_URL": "postgresql://u:p@db/c",
           "VISA_OPENSTACK_CLOUD": "facility", "VISA_OPENSTACK_HUB_ID": "prod", "VISA_HUB_CONNECT_URL": "http://h:8081",
           "VISA_OPENSTACK_PLANS_FILE": str(tmp_path / "missing.json"), "VISA_IMAGE_DIR": str(tmp_path / "no-image")}
    code = LOAD_PROFILE.format(path=str(REPO / "hub_config" / "production"))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "VISA_OPENSTACK_PLANS_FILE: cannot read" in r.stderr and "docs/openstack.md" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr

    (tmp_path / "plans.json").write_text(json.dumps(PLANS))
    env["VISA_OPENSTACK_PLANS_FILE"] = str(tmp_path / "plans.json")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = json.loads(r.stdout.splitlines()[-1])
    assert loaded["plans"] == ["sandbox-small", "sandbox-large", "vm-medium"] and loaded["cloud"] == "facility"
    assert "visa-reconciler" in loaded["services"] and loaded["api"].endswith("/hub/api")
    assert (tmp_path / "reconciler_token").stat().st_mode & 0o777 == 0o600
    # the lifecycle rules may delete (after a snapshot archive) only servers that are shelved at stop
    assert "openstack" not in json.loads(loaded["archiving"])
    env["VISA_OPENSTACK_SHELVE"] = "1"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "openstack" in json.loads(json.loads(r.stdout.splitlines()[-1])["archiving"])
