"""cloud-init proven (issue 16, item 6): the image's OpenStack variant boots under QEMU with exactly
the user-data the OpenStack backend renders, on a NoCloud seed, and its Lab answers through a hub
for its owner, as the owner's Unix user, with the proposal's data mounted read-only.

The lab cloud's fake hypervisor never runs cloud-init; this is the one test where it does. One VM
boot (cold: snapshots need the agent's port, which the OpenStack path does not have).
"""
from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubtools import Hub, demo_state, login_factory, run_code
from tests.spawner.qemu.conftest import PROPOSAL, create_vm, pinned_image_dir, qemu_pids, start_qemu_hub
from tests.spawner.qemu.test_qemu_builders import make_image
from tests.spawner.qemu.test_qemu_vm_flow import INSIDE
from visa_spawner.backends.base import BackendError
from visa_spawner.backends.guest import cloudinit
from visa_spawner.backends.openstack.backend import OpenStackBackend
from visa_spawner.backends.qemu import nocloud
from visa_spawner.backends.qemu.backend import QemuBackend
from visa_spawner.backends.qemu.image import DEFAULT_IMAGE_DIR
from visa_spawner.backends.qemu.paths import hostname as _hostname
from visa_spawner.backends.qemu.paths import vm_name

VARIANT_DIR = os.environ.get("VISA_QEMU_OPENSTACK_IMAGE_DIR", DEFAULT_IMAGE_DIR + "+openstack")
NOCLOUD_CONFIG = Path(__file__).resolve().with_name("hub_nocloud_config.py")
#: what the guest tells about cloud-init (files cloud-init leaves world-readable), read as the owner
CLOUD_INIT = """
import json, os, subprocess, time
status = json.load(open("/run/cloud-init/status.json"))["v1"]
data = json.load(open("/run/cloud-init/instance-data.json"))
print(json.dumps({
    "datasource": status["datasource"], "errors": [e for s in status.values() if isinstance(s, dict)
                                                   for e in s.get("errors", [])],
    "stages": {k: (s["start"], s["finished"]) for k, s in status.items()
               if isinstance(s, dict) and s.get("start") and s.get("finished")},
    "booted_at": time.time() - float(open("/proc/uptime").read().split()[0]),
    "instance_id": data["v1"]["instance_id"], "hostname": data["v1"]["local_hostname"],
    "fw_cfg": os.path.exists("/sys/firmware/qemu_fw_cfg/by_name/opt/org.visahub"),
    "instance_started": int(subprocess.run(  # the instance's start, in seconds of the guest's uptime
        ["systemctl", "show", "-P", "ExecMainStartTimestampMonotonic", "visa-instance.service"],
        capture_output=True, text=True).stdout) / 1e6,
}))
"""


def test_seed_holds_the_openstack_user_data(tmp_path):
    """The seed's user-data is byte for byte what OpenStackBackend sends to Nova (base64-decoded)."""
    config = cloudinit.instance_config(
        owner="Alice Martin", server_name="x", display_name="<b>x</b>", proposal=PROPOSAL, command=["jupyterhub-singleuser"],
        env={"JUPYTERHUB_API_TOKEN": "t0k3n", "JUPYTERHUB_API_URL": "http://10.0.2.100:8081/hub/api"},
        port=8888, screen="1280x720", keyboard="fr")
    seed = tmp_path / "vm" / "nocloud"
    seed.parent.mkdir()
    nocloud.write_seed(seed, config, "x", "vm-0123")
    assert (seed / "user-data").read_bytes() == base64.b64decode(OpenStackBackend.render_user_data(config))
    meta = json.loads((seed / "meta-data").read_text())
    assert meta["local-hostname"] == "x" and meta["instance-id"].startswith("vm-0123-"), meta
    assert {f.name: f.stat().st_mode & 0o777 for f in seed.iterdir()} == {"user-data": 0o600, "meta-data": 0o600}
    assert seed.stat().st_mode & 0o777 == 0o700
    nocloud.write_seed(seed, config, "x", "vm-0123")  # a second start: a new instance-id
    assert json.loads((seed / "meta-data").read_text())["instance-id"] != meta["instance-id"]


def test_nocloud_needs_an_image_with_cloud_init(tmp_path):
    """Pointed at the plain image, nocloud would wait for a cloud-init that never comes: refused at once."""
    plain = make_image(tmp_path)
    with pytest.raises(BackendError, match="no cloud-init"):
        QemuBackend(state_dir=str(tmp_path / "s"), image_dir=str(plain), config_delivery="nocloud").image()
    assert QemuBackend(image_dir=str(plain)).image().cloud_init is False
    (plain / "current" / "manifest.json").write_text(json.dumps({"packages": {"cloud-init": "22.4.2-1+deb12u4"}}))
    assert QemuBackend(image_dir=str(plain), config_delivery="nocloud").image().cloud_init


@pytest.fixture(scope="module")
def nocloud_state() -> Iterator[Path]:
    yield from demo_state()


@pytest.fixture(scope="module")
def nocloud_hub(nocloud_state: Path) -> Iterator[Hub]:
    image = pinned_image_dir(VARIANT_DIR, nocloud_state)
    yield from start_qemu_hub(nocloud_state, image, config=NOCLOUD_CONFIG)


@pytest.mark.qemu
@pytest.mark.root
def test_openstack_variant_boots_with_cloud_init_through_the_hub(nocloud_hub, nocloud_state, artifacts):
    hub, qemu_state = nocloud_hub, nocloud_state / "qemu"
    alice = login_factory(hub)("alice")
    t0 = time.monotonic()
    name = create_vm(alice, "Cloud-init VM")
    hub.wait_ready("alice", name, timeout=540)
    boot = time.monotonic() - t0
    vm_dir = qemu_state / "instances" / vm_name("alice", name)
    assert not (vm_dir / "nocloud").exists(), "the seed (it holds the API token) must be gone once started"
    console = (vm_dir / "console.log").read_text(errors="replace")
    (artifacts / "cloudinit-console.log").write_text(console)
    assert '"stage": "no-config"' in console, "the boot agent must find no config and leave the start to cloud-init"
    log = hub.log_path.read_text(errors="replace")
    for stage in ("QEMU started", "Start script running", "Owner account ready", "Jupyter answers"):
        assert stage in log, f"no progress stage {stage!r} in the hub log (phone-home through the relay)"

    r = alice.instance_get("alice", name, "lab")
    assert r.status_code == 200 and "JupyterLab" in r.text, (r.status_code, r.url)
    facts = json.loads(run_code(alice, "alice", name, INSIDE, timeout=120))
    assert facts["vendor"] == "QEMU" and facts["user"] == "alice", facts
    assert facts["files"] == sorted(os.listdir(nocloud_state / "data" / PROPOSAL))
    assert facts["write"] == "Read-only file system", facts
    ci = json.loads(run_code(alice, "alice", name, CLOUD_INIT, timeout=120))
    assert ci["datasource"] and "nocloud" in ci["datasource"].lower() and not ci["errors"], ci
    assert ci["instance_id"].startswith(vm_name("alice", name) + "-") and not ci["fw_cfg"], ci
    assert facts["hostname"] == ci["hostname"] == _hostname(name), (facts, ci)

    hub.delete_server("alice", name, timeout=120)
    assert qemu_pids(qemu_state) == [] and not vm_dir.exists()
    spans = sorted((start - ci["booted_at"], end - ci["booted_at"], k) for k, (start, end) in ci["stages"].items())
    busy = sum(end - start for start, end, _ in spans)
    print(f"cloud-init boot through the hub: {boot:.1f} s from create to Lab; cloud-init ran {busy:.1f} s "
          f"from {spans[0][0]:.1f} s to {spans[-1][1]:.1f} s of the guest's uptime ("
          + ", ".join(f"{k} {start:.1f}-{end:.1f}" for start, end, k in spans)
          + f"); the instance started at {ci['instance_started']:.1f} s")
    final_start = ci["stages"]["modules-final"][0] - ci["booted_at"]
    # the variant starts the instance once cloud-init's init stage wrote it (its cloud-init.service
    # drop-in), not from runcmd in the final stage
    assert 0 < ci["instance_started"] < final_start, (ci["instance_started"], spans)
