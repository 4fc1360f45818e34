"""The built image (`make image`): its manifest, the files inside, and real TCG boots of it.

Needs the image at /var/cache/visahub/images/debian-bookworm/current (or $VISA_IMAGE_DIR); a
missing or stale image fails with the command that builds it."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import probe  # images/probe.py (images/ is on pytest's pythonpath, setup.cfg)
import pytest
from imagebuild.recipe import load_recipe

from visa_spawner.backends.guest import protocol

REPO = Path(__file__).resolve().parents[2]

IMAGE = Path(os.environ.get("VISA_IMAGE_DIR", "/var/cache/visahub/images/debian-bookworm")) / "current"
RECIPE = REPO / "images" / "recipes" / "debian-bookworm.toml"
BUILD = "make image  (or: .venv/bin/python images/build.py --cache-dir /var/cache/visahub/images)"
pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def manifest() -> dict:
    if not (IMAGE / "manifest.json").exists():
        pytest.fail(f"no image at {IMAGE}: build it with `{BUILD}`")
    return json.loads((IMAGE / "manifest.json").read_text())


@pytest.fixture(scope="module")
def rootfs(manifest, tmp_path_factory):
    """The image's root file system as a raw ext4 file, read with debugfs (nothing is mounted)."""
    raw = tmp_path_factory.mktemp("image") / "root.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(IMAGE / "base.qcow2"), str(raw)], check=True)

    def debugfs(request: str) -> str:
        return subprocess.run(["debugfs", "-R", request, str(raw)], capture_output=True, text=True, check=True).stdout

    yield debugfs
    raw.unlink()


def test_manifest_matches_the_recipe(manifest: dict):
    recipe = load_recipe(RECIPE, manifest.get("extras", []))
    assert manifest["recipe_hash"] == recipe.stage_hashes(REPO)["image"], f"the image is stale: run `{BUILD}`"
    assert IMAGE.resolve().name == manifest["recipe_hash"]
    for f in ("base.qcow2", "vmlinuz", "initrd.img"):
        assert (IMAGE / f).stat().st_size > 1_000_000, f
    assert manifest["kernel_cmdline"].startswith("root=/dev/vda ") and "console=ttyS0" in manifest["kernel_cmdline"]
    assert manifest["packages"][recipe.kernel["package"]]
    assert manifest["kernel_version"] in manifest["packages"].get(f"linux-image-{manifest['kernel_version']}", "") \
        or f"linux-image-{manifest['kernel_version']}" in manifest["packages"]
    for pkg in ("systemd", "tigervnc-standalone-server", "openbox", "xterm", "python3"):
        assert pkg in manifest["packages"], pkg
    # noVNC's files without its nodejs dependency: with node on the PATH, JupyterLab runs it at import
    assert set(manifest["unpacked"]) == set(recipe.unpacked_packages) and "novnc" in manifest["unpacked"]
    assert recipe.lock["apt"].get("novnc") in (None, manifest["unpacked"]["novnc"])
    assert not any(p == "nodejs" or p.startswith("libnode") for p in manifest["packages"]), "node is in the image"
    py = {k.lower().replace("_", "-"): v for k, v in manifest["python_packages"].items()}
    pins = [line.split("#")[0].strip() for f in recipe.python["requirement_files"]
            for line in (REPO / f).read_text().splitlines()]
    pins = [pin for pin in pins if "==" in pin and "*" not in pin]
    assert any(pin.startswith("scippneutron==") for pin in pins), pins  # the science lock is read
    for pin in pins:  # exact pins of the lock files, as installed (requirements-science.txt: all of them)
        name, version = pin.split("==")
        assert py.get(name.lower().replace("_", "-")) == version, pin
    for name in ("jupyterhub", "jupyterlab", "jupyter-server-proxy", "jupyter-collaboration", "visa-hub"):
        assert name in py, name
    assert py["jupyterhub"] == "6.1.1"
    for name in recipe.python.get("remove", []):
        assert name not in py, f"{name} should have been removed"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(IMAGE / "base.qcow2")],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info


def cpio_names(archive: bytes) -> list[str]:
    """Member names of an uncompressed newc cpio archive (the initramfs)."""
    names, pos = [], 0
    while (pos := archive.find(b"070701", pos)) >= 0:
        namesize, filesize = int(archive[pos + 94:pos + 102], 16), int(archive[pos + 54:pos + 62], 16)
        names.append(archive[pos + 110:pos + 110 + namesize - 1].decode())
        pos = (pos + 110 + namesize + 3) // 4 * 4
        pos = (pos + filesize + 3) // 4 * 4
    return names


def test_the_vm_boots_an_uncompressed_pvh_kernel_and_an_initramfs_without_udev(manifest: dict):
    """What the qemu backend boots (manifest direct_boot): no decompression under TCG, no udev in the
    initramfs; the initramfs still loads the modules that find and mount the root fs."""
    boot = manifest["direct_boot"]
    assert boot == {"kernel": "vmlinux", "initrd": "initrd.cpio"}
    from imagebuild.bootfiles import has_pvh_entry
    assert has_pvh_entry((IMAGE / "vmlinux").read_bytes())
    names = cpio_names((IMAGE / "initrd.cpio").read_bytes())
    assert "init" in names and "conf/modules" in names, names[:20]
    assert not [n for n in names if "udevadm" in n or "systemd-udevd" in n or n.startswith("usr/lib/udev")]
    for module in ("virtio_blk.ko", "virtio_pci.ko", "ext4.ko"):
        assert any(n.endswith("/" + module) for n in names), module


def test_image_files(manifest: dict, rootfs):
    for name in ("visa_agent.py", "visa_zygote.py", "visa_protocol.py"):  # the protocol through its link
        assert rootfs(f"cat /usr/local/lib/visa/{name}") == (REPO / "images/agent" / name).read_text(), name
    early = rootfs("ls /etc/systemd/system/sysinit.target.wants")
    assert "visa-agent.service" in early and "visa-zygote.service" in early, early
    assert "visa-zygote.socket" in rootfs("ls /etc/systemd/system/sockets.target.wants")
    assert "/dev/null" in rootfs("stat /etc/systemd/system/apt-daily.timer")
    assert rootfs("cat /etc/machine-id") == ""
    assert rootfs("cat /etc/fstab").startswith("/dev/vda / ext4")
    assert "Address=10.0.2.15/24" in rootfs("cat /etc/systemd/network/10-visa-qemu.network")
    assert "Type: regular" in rootfs("stat /opt/visahub/instance-env/bin/jupyterhub-singleuser")
    assert "Type: regular" in rootfs("stat /usr/share/novnc/vnc.html")
    assert "Type: regular" in rootfs("stat /usr/share/novnc/core/rfb.js")
    blacklist = rootfs("cat /etc/modprobe.d/visa-no-autoload.conf").split("\n")
    assert "blacklist floppy" in blacklist and "blacklist button" not in blacklist, blacklist
    for node in ("/usr/bin/node", "/usr/bin/nodejs", "/usr/bin/npm"):
        assert "Type:" not in rootfs(f"stat {node}"), f"{node} is in the image"
    site = "/opt/visahub/instance-env/lib/python3.11/site-packages"
    assert "desktop_launcher.py" in rootfs(f"ls {site}/visa_instance")  # a real copy, not an editable link
    assert "/work/" not in rootfs(f"ls {site}") + "".join(
        rootfs(f"cat {site}/{n}") for n in rootfs(f"ls -p {site}").split("/") if n.endswith(".pth"))
    version = manifest["kernel_version"]
    for module in ("fs/9p/9p.ko", "net/9p/9pnet_virtio.ko", "drivers/firmware/qemu_fw_cfg.ko",
                   "drivers/char/virtio_console.ko"):
        assert "Type: regular" in rootfs(f"stat /lib/modules/{version}/kernel/{module}"), module
    # nothing of the build host is left: CA bundle, pip config, caches, policy-rc.d
    for gone in ("/run/visa-build", "/etc/pip.conf", "/root/.cache/pip", "/root/.config/pip",
                 "/usr/sbin/policy-rc.d", "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease"):
        assert "not found" in rootfs(f"stat {gone}").lower() or rootfs(f"stat {gone}") == "", gone


def _jupyter_answers(port: int) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/user/probe-user/api", timeout=20).status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_boot_runs_jupyter_as_the_owner_with_read_only_data(manifest: dict, mode: str):
    status, port = {}, probe.free_port()

    def on_stage(ts):
        if ts[1]["stage"] == "jupyter-up":
            status["http"] = _jupyter_answers(port)

    r = probe.boot(IMAGE, mode=mode, timeout=300, host_port=port, on_stage=on_stage)
    print(f"\n{mode} boot: " + ", ".join(f"{s['stage']} {t:.1f}s" for t, s in r.stages))
    stages = [s["stage"] for _, s in r.stages]
    assert r.first("jupyter-up"), f"no jupyter-up; stages {stages}; console tail:\n" + "\n".join(r.console[-30:])
    # Jupyter is imported by the zygote in both modes: before the snapshot (warm), beside the boot (cold)
    assert r.get("zygote") and r.get("zygote")["failed"] == [], r.get("zygote")
    if mode == "cold":
        assert r.first("fw-cfg") < r.first("zygote") <= r.first("jupyter-up")
        stages.remove("zygote")
    expected = (["agent-started", "fw-cfg"] if mode == "cold"
                else ["agent-started", "zygote", "desktop", "waiting-config", "identity"])  # desktop: prestarted
    assert stages[:len(expected)] == expected
    assert stages[len(expected):] == ["configured", "started", "account", "data", "jupyter-up"]
    if mode == "warm":
        ident = r.get("identity")
        assert ident["hostname"] == "visa-probe" and len(ident["machine_id"]) == 32
    # the start script phoned home with the instance's token (its first reports may precede the
    # network: the agent waits for it only briefly), and Jupyter answers HTTP on the forward
    phoned = [p["stage"] for p in r.phoned]
    assert phoned and phoned == [s for s in protocol.SCRIPT_STAGES if s in phoned], phoned
    assert all(p["auth"] == f"token {r.token}" for p in r.phoned)
    assert status.get("http") in (200, 302, 401, 403, 404), status
