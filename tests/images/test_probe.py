"""images/probe.py's pure pieces: it boots the qemu backend's VM (same argv builder, network, config)."""
from __future__ import annotations

import json
from pathlib import Path

import probe  # images/probe.py (images/ is on pytest's pythonpath, setup.cfg)
import pytest

from visa_spawner.backends.qemu.command import HUB_GUEST_ADDRESS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    build = tmp_path / "build"
    build.mkdir()
    for name in ("vmlinux", "initrd.cpio", "base.qcow2"):
        (build / name).write_bytes(b"\0")
    (build / "manifest.json").write_text(json.dumps({
        "kernel_cmdline": "root=/dev/vda rw console=ttyS0", "direct_boot": {"kernel": "vmlinux", "initrd": "initrd.cpio"}}))
    return build


def test_the_probe_vm_is_the_backends(image: Path, tmp_path: Path):
    fw = {"opt/org.visahub/instance.json": tmp_path / "c", "opt/org.visahub/visa-start": tmp_path / "s"}
    layout = probe.probe_layout(image, tmp_path, host_port=4100, hub_port=4200,
                                accel_argv=("-accel", "tcg,thread=multi", "-cpu", "max"), fw_cfg=fw)
    argv = probe.qemu_argv(probe.QEMU, layout)
    netdev = argv[argv.index("-netdev") + 1]
    assert "restrict=on" in netdev and f"guestfwd=tcp:{HUB_GUEST_ADDRESS}:4200-cmd:" in netdev
    assert "hostfwd=tcp:127.0.0.1:4100-:8888" in netdev
    assert argv[argv.index("-serial") + 1] == f"file:{tmp_path / 'console.log'}"
    assert argv[argv.index("-kernel") + 1] == str(image / "vmlinux")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-fw_cfg"] == [
        f"name={name},file={path}" for name, path in fw.items()]
    assert argv[-1] == "-no-reboot"


def test_the_probe_config_reaches_the_hub_through_the_relay():
    config = probe.probe_config(4200, "tok")
    assert config["env"]["JUPYTERHUB_API_URL"] == f"http://{HUB_GUEST_ADDRESS}:4200/hub/api"
    assert config["phone_home_url"] == f"http://{HUB_GUEST_ADDRESS}:4200/hub/api/visa/phone-home"
    assert config["env"]["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:8888/user/probe-user/"
    assert config["mounts"][0]["commands"][0][-2:] == ["visa-data", "/data/P-0001"]


class Exited:
    """A QEMU that has already exited (follow() then reads what is left and stops)."""

    returncode = 0

    def poll(self) -> int:
        return 0


def test_follow_yields_whole_console_lines(tmp_path: Path):
    console = tmp_path / "console.log"
    console.write_bytes(b"\x1bcVISA-STAGE {\"stage\": \"a\"}\r\nsecond\npartial")
    assert list(probe.follow(console, Exited(), deadline=float("inf"))) == [
        "\x1bcVISA-STAGE {\"stage\": \"a\"}", "second"]
