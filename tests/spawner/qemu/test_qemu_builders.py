"""Pure parts of the qemu backend as tables: acceleration on fake hosts, QEMU's argv, the guest's
view of the hub, capacity, image availability."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from visa_spawner.backends.qemu.accel import capacity_problem, detect_acceleration, host_memory, pid_runs
from visa_spawner.backends.qemu.command import (
    VmLayout,
    console_stage,
    guest_env,
    hub_port_of,
    mount_templates,
    netdev_arg,
    qemu_argv,
    vm_size,
)
from visa_spawner.backends.qemu.image import ImageError, availability, load_image
from visa_spawner.backends.qemu.paths import hostname as _hostname
from visa_spawner.backends.qemu.paths import vm_name
from visa_spawner.backends.qemu.warm import Snapshot, clean_stale_builds, prune_snapshots, snapshot_key

INTEL = "processor : 0\nflags : fpu vme vmx sse2\n"
AMD = "processor : 0\nflags : fpu svm sse2\n"
PLAIN = "processor : 0\nflags : fpu sse2\n"


def fake_host(tmp_path: Path, *, modules=(), kvm_dev=True, cpuinfo=PLAIN) -> Path:
    for m in modules:
        (tmp_path / "sys/module" / m).mkdir(parents=True)
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    if kvm_dev:
        (tmp_path / "dev").mkdir()
        (tmp_path / "dev/kvm").write_text("")
    return tmp_path


@pytest.mark.parametrize("modules, kvm_dev, cpuinfo, mode, name, reason", [
    (("kvm", "kvm_pvm"), True, INTEL, "auto", "tcg", "PVM"),  # these machines: /dev/kvm is a trap
    (("kvm", "kvm_intel"), True, INTEL, "auto", "kvm", "kvm_intel"),
    (("kvm", "kvm_amd"), True, AMD, "auto", "kvm", "kvm_amd"),
    (("kvm",), True, INTEL, "auto", "tcg", "kvm_intel is not loaded"),
    (("kvm", "kvm_intel"), False, INTEL, "auto", "tcg", "no /dev/kvm"),
    (("kvm", "kvm_intel"), True, PLAIN, "auto", "tcg", "vmx/svm"),
    (("kvm", "kvm_intel"), True, INTEL, "tcg", "tcg", "forced"),
    (("kvm", "kvm_pvm"), True, INTEL, "kvm", "kvm", "forced"),
])
def test_acceleration_is_what_really_works(tmp_path, modules, kvm_dev, cpuinfo, mode, name, reason):
    accel = detect_acceleration(fake_host(tmp_path, modules=modules, kvm_dev=kvm_dev, cpuinfo=cpuinfo), mode)
    assert accel.name == name and reason in accel.reason
    if name == "kvm":
        assert accel.argv == ["-accel", "kvm", "-cpu", "host,-arch-capabilities"]
    else:
        assert accel.argv == ["-accel", "tcg,thread=multi", "-cpu", "max"]


def test_this_host_is_tcg_because_of_pvm():
    if Path("/sys/module/kvm_pvm").exists():
        assert detect_acceleration("/").name == "tcg"


def layout(**kw) -> VmLayout:
    base = dict(name="vm-0123456789abcdef", overlay="/s/vm/disk.qcow2", kernel="/img/vmlinuz", initrd="/img/initrd.img",
                kernel_cmdline="root=/dev/vda console=ttyS0", qmp_socket="/s/vm/qmp.sock", agent_socket="/s/vm/agent.sock",
                console_log="/s/vm/console.log", cpus=2, memory_mb=2048, host_port=41234, data_dir="/data/P-1",
                hub_port=8081, hub_relay=("/usr/bin/socat", "STDIO", "TCP:127.0.0.1:{port}"))
    return VmLayout(**{**base, **kw})


def opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_of_a_cold_boot():
    argv = qemu_argv("qemu-system-x86_64", layout(fw_cfg=(("opt/org.visahub/instance.json", "/s/vm/fwcfg-instance.json"),)))
    assert argv[0] == "qemu-system-x86_64"
    assert opt(argv, "-m") == ["2048"] and opt(argv, "-smp") == ["2"]
    assert opt(argv, "-kernel") == ["/img/vmlinuz"] and opt(argv, "-append") == ["root=/dev/vda console=ttyS0"]
    assert opt(argv, "-drive") == ["file=/s/vm/disk.qcow2,if=virtio,format=qcow2,cache=writeback,discard=unmap"]
    (net,) = opt(argv, "-netdev")
    assert net == ("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:41234-:8888,"
                   "guestfwd=tcp:10.0.2.100:8081-cmd:/usr/bin/socat STDIO TCP:127.0.0.1:8081")
    assert opt(argv, "-virtfs") == ["local,path=/data/P-1,mount_tag=visa-data,security_model=none,readonly=on"]
    assert "socket,id=agent,path=/s/vm/agent.sock,server=on,wait=off" in opt(argv, "-chardev")
    assert "virtserialport,chardev=agent,name=org.visahub.agent" in opt(argv, "-device")
    assert "vmgenid,guid=auto" in opt(argv, "-device")
    assert opt(argv, "-fw_cfg") == ["name=opt/org.visahub/instance.json,file=/s/vm/fwcfg-instance.json"]
    assert opt(argv, "-incoming") == [] and "-accel" in argv


def test_warm_restore_differs_only_in_config_channel_and_incoming():
    cold = qemu_argv("q", layout(fw_cfg=(("opt/x", "/f"),)))
    warm = qemu_argv("q", layout(incoming="exec:cat /snap/memory.state"))
    assert opt(warm, "-incoming") == ["exec:cat /snap/memory.state"] and opt(warm, "-fw_cfg") == []
    def strip(a: list[str]) -> list[str]:
        return [x for x in a if x not in ("-fw_cfg", "name=opt/x,file=/f", "-incoming", "exec:cat /snap/memory.state")]

    assert strip(cold) == strip(warm)  # same devices: a restore needs exactly the saved machine


def test_nocloud_boot_has_a_cidata_disk_and_no_agent_port():
    """config_delivery = "nocloud" (the OpenStack variant): cloud-init's seed as a vvfat disk, and no
    agent port, so the agent reports no-config as on OpenStack; nothing else changes."""
    cold = qemu_argv("q", layout(fw_cfg=(("opt/x", "/f"),)))
    seeded = qemu_argv("q", layout(seed_dir="/s/vm/nocloud", agent_port=False))
    assert opt(seeded, "-drive")[1:] == [
        "if=virtio,format=raw,read-only=on,file.driver=vvfat,file.dir=/s/vm/nocloud,file.label=cidata"]
    assert not any("virtserialport" in d for d in opt(seeded, "-device")) and opt(seeded, "-fw_cfg") == []
    def without(argv: list[str], *pairs: tuple[str, str]) -> list[str]:
        out = list(argv)
        for flag, value in pairs:
            i = out.index(value)
            assert out[i - 1] == flag
            del out[i - 1:i + 1]
        return out

    assert without(cold, ("-fw_cfg", "name=opt/x,file=/f"),
                   ("-device", "virtserialport,chardev=agent,name=org.visahub.agent")) == \
        without(seeded, ("-drive", opt(seeded, "-drive")[1]))
    with pytest.raises(ValueError, match="commas"):
        qemu_argv("q", layout(seed_dir="/s/a,b"))


def test_no_hub_port_means_no_way_out():
    assert "guestfwd" not in netdev_arg(layout(hub_port=0))


@pytest.mark.parametrize("change, error", [
    ({"overlay": "/s/a,b/disk.qcow2"}, "commas"),
    ({"data_dir": "/data/x,y"}, "commas"),
    ({"qmp_socket": "/" + "x" * 120}, "too long"),
    ({"name": "vm; rm -rf"}, "unsafe VM name"),
    ({"memory_mb": 64}, "unusable VM size"),
])
def test_argv_refuses_what_qemu_would_misparse(change, error):
    with pytest.raises(ValueError, match=error):
        qemu_argv("q", layout(**change))


def test_guest_sees_the_hub_on_the_forwarded_address():
    env = {"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
           "JUPYTERHUB_ACTIVITY_URL": "http://127.0.0.1:8081/hub/api/users/alice/activity",
           "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:41234/user/alice/vm/",
           "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/alice/vm/oauth_callback",
           "OTHER": "http://127.0.0.1:9999/x", "JUPYTERHUB_API_TOKEN": "secret"}
    assert hub_port_of(env) == 8081
    out = guest_env(env, 8081)
    assert out["JUPYTERHUB_API_URL"] == "http://10.0.2.100:8081/hub/api"
    assert out["JUPYTERHUB_ACTIVITY_URL"] == "http://10.0.2.100:8081/hub/api/users/alice/activity"
    assert out["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:8888/user/alice/vm/"
    assert out["OTHER"] == env["OTHER"] and out["JUPYTERHUB_API_TOKEN"] == "secret"
    assert out["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/user/alice/vm/oauth_callback"


def test_data_mount_is_9p_read_only():
    assert mount_templates(False) == []
    assert mount_templates(True) == [["mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L,ro", "visa-data",
                                      "{mount_point}"]]


@pytest.mark.parametrize("memory, running, available, expected", [
    (2048, 0, 20000, ""),
    (2048, 4, 20000, "This host is full: 4 of 4 virtual machines are running"),
    (2048, 1, 2500, "This host is full: 2500 MB of memory is free and a 2048 MB virtual machine needs 3328 MB"),
    (30000, 0, 20000, "This host is too small for this plan"),
])
def test_capacity(memory, running, available, expected):
    problem = capacity_problem(memory, running=running, max_vms=4, total_mb=24000, available_mb=available,
                               overhead_mb=256, reserve_mb=1024)
    assert problem.startswith(expected) if expected else problem == ""


def test_host_memory_parses_meminfo():
    assert host_memory("MemTotal: 2048000 kB\nMemFree: 100 kB\nMemAvailable: 1024000 kB\n") == (2000, 1000)


def make_image(root: Path, files=("base.qcow2", "vmlinuz", "initrd.img", "manifest.json")) -> Path:
    build = root / "img" / "build-abc"
    build.mkdir(parents=True)
    for f in files:
        (build / f).write_text(json.dumps({"kernel_cmdline": "root=/dev/vda quiet", "recipe_hash": "r1"}))
    (root / "img" / "current").symlink_to("build-abc")
    return root / "img"


def test_image_is_resolved_to_its_build(tmp_path):
    image = load_image(str(make_image(tmp_path)))
    assert image.base == str(tmp_path / "img/build-abc/base.qcow2")  # overlays never follow `current`
    assert image.kernel_cmdline == "root=/dev/vda quiet" and image.identity == "r1:build-abc"


def test_image_boots_the_pair_its_manifest_names(tmp_path):
    img = make_image(tmp_path, files=("base.qcow2", "vmlinuz", "initrd.img", "vmlinux", "initrd.cpio"))
    manifest = {"recipe_hash": "r1", "direct_boot": {"kernel": "vmlinux", "initrd": "initrd.cpio"}}
    (img / "build-abc" / "manifest.json").write_text(json.dumps(manifest))
    image = load_image(str(img))
    assert (image.kernel, image.initrd) == (str(img / "build-abc/vmlinux"), str(img / "build-abc/initrd.cpio"))
    (img / "build-abc" / "vmlinux").unlink()
    with pytest.raises(ImageError, match="its kernel 'vmlinux' is missing"):
        load_image(str(img))
    manifest["direct_boot"] = {"kernel": "../../etc/passwd"}
    (img / "build-abc" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ImageError, match="make image"):
        load_image(str(img))


def test_availability_explains_what_is_missing(tmp_path):
    ok, reason = availability(str(tmp_path / "nothing"))
    assert not ok and "make image" in reason
    ok, reason = availability(str(make_image(tmp_path, files=("vmlinuz",))))
    assert not ok and "incomplete" in reason and "base.qcow2" in reason
    ok, reason = availability(str(tmp_path / "img"), qemu_binary="no-such-qemu")
    assert not ok and "qemu-system-x86" in reason
    with pytest.raises(ImageError):
        load_image(str(tmp_path / "nothing"))


def test_names_and_sizes():
    assert vm_name("alice", "vm") == vm_name("alice", "vm") != vm_name("alice", "vm2")
    assert vm_name("a", "b\0c") != vm_name("a\0b", "c")
    assert _hostname("Beam time: D11!") == "beam-time-d11" and _hostname("!!!") == "visa"
    assert vm_size(0.5, 2048) == (1, 2048) and vm_size(2, 4096) == (2, 4096)
    assert console_stage("VISA-STAGE {\"stage\": \"agent-started\"}") == "agent"
    assert console_stage("\x1bc\x1b[?7hVISA-STAGE {\"stage\": \"configured\"}") == "agent"
    assert console_stage("[    0.000000] Linux version 6.1.0") == "kernel"


def test_snapshot_keys_and_incoming_uri():
    assert snapshot_key("r1:b", 2, 2048, "tcg") != snapshot_key("r1:b", 2, 4096, "tcg")
    assert Snapshot(Path("/s/snap's")).incoming_uri == "exec:cat '/s/snap'\"'\"'s/memory.state'"


def _snapshot(root: Path, name: str, identity: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"identity": identity}))
    return d


def test_snapshots_of_old_builds_go_unless_an_instance_is_built_on_them(tmp_path):
    current = _snapshot(tmp_path, "aaaa000000000001", "build-2")
    old_used = _snapshot(tmp_path, "bbbb000000000002", "build-1")
    old_free = _snapshot(tmp_path, "cccc000000000003", "build-1")
    broken = tmp_path / "dddd000000000004"
    broken.mkdir()  # no meta: not a snapshot this code made; left alone
    assert prune_snapshots(tmp_path, "build-2", in_use={old_used.name}) == [old_free.name]
    assert current.exists() and old_used.exists() and broken.exists() and not old_free.exists()


def test_half_built_snapshots_of_dead_builders_are_removed_with_their_qemu(tmp_path):
    import os
    import subprocess
    import sys
    import time

    dead = tmp_path / ".abcd.999999999.tmp"  # no such builder process
    dead.mkdir()
    qemu = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(dead)])  # stands in for QEMU
    (dead / "qemu.pid").write_text(str(qemu.pid))
    while not pid_runs(qemu.pid, str(dead)):  # until it has exec'd (its command line names the dir)
        assert qemu.poll() is None
        time.sleep(0.01)
    live = tmp_path / f".abcd.{os.getppid()}.tmp"  # a builder that still runs (pytest's parent)
    live.mkdir()
    try:
        assert clean_stale_builds(tmp_path) == [dead.name]
        assert qemu.wait(10) == -9 and not dead.exists() and live.exists()
    finally:
        qemu.kill()
