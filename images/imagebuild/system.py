"""The last two stages: configure the system for a fast, headless boot; make the disk and manifest."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from visa_spawner.backends.guest import protocol

from .bootfiles import plain_initrd, pvh_kernel, write_initramfs_config
from .chroot import BuildError, in_root, mounted, run
from .recipe import Recipe
from .stages import UNPACKED_RECORD

AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"
AGENT_FILES = {  # file in images/agent/ -> (path in the image, mode)
    "visa_agent.py": ("/usr/local/lib/visa/visa_agent.py", 0o755),
    # a link to the hub's protocol module: the agent and the zygote import it from beside them
    "visa_protocol.py": ("/usr/local/lib/visa/visa_protocol.py", 0o644),
    "visa_zygote.py": ("/usr/local/lib/visa/visa_zygote.py", 0o755),
    "visa-agent.service": ("/etc/systemd/system/visa-agent.service", 0o644),
    "visa-zygote.service": ("/etc/systemd/system/visa-zygote.service", 0o644),
    "visa-zygote.socket": ("/etc/systemd/system/visa-zygote.socket", 0o644),
}
FSTAB = "/dev/vda / ext4 rw,noatime,errors=remount-ro 0 0\ntmpfs /tmp tmpfs rw,nosuid,nodev,mode=1777 0 0\n"
JOURNALD = "[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\nForwardToConsole=no\n"


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def configure_system(recipe: Recipe, root: Path, log: Path) -> None:
    """Agent, network, masks, modules, identity placeholders: everything not a package."""
    sysconf = recipe.system
    for name, (path, mode) in AGENT_FILES.items():
        _write(root, path, (AGENT_DIR / name).read_text(), mode)
    _write(root, "/etc/fstab", FSTAB)
    _write(root, "/etc/hostname", sysconf["hostname"] + "\n")
    _write(root, "/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {sysconf['hostname']}\n::1 localhost\n")
    _write(root, "/etc/systemd/network/10-visa-qemu.network", sysconf["network"].lstrip())
    for path, text in sysconf.get("files", {}).items():  # e.g. an extra's cloud-init settings
        _write(root, path, text.lstrip())
    _write(root, "/etc/systemd/journald.conf.d/visa.conf", JOURNALD)
    _write(root, "/etc/modules-load.d/visa.conf", "\n".join(recipe.kernel.get("boot_modules", [])) + "\n")
    _write(root, "/etc/modprobe.d/visa-no-autoload.conf", "".join(
        f"blacklist {m}\n" for m in recipe.kernel.get("no_autoload", [])))
    # QEMU's DNS forwarder (unreachable under `restrict=on`: fail fast rather than stall a start)
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    resolv.write_text("nameserver 10.0.2.3\noptions timeout:1 attempts:1\n")
    # every clone gets its own machine-id: systemd makes one at first boot, the agent after a restore
    _write(root, "/etc/machine-id", "", 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    (root / "data").mkdir(exist_ok=True)
    (root / "etc/visa").mkdir(mode=0o700, exist_ok=True)
    for unit in sysconf.get("mask", []):
        link = root / "etc/systemd/system" / unit
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to("/dev/null")
    with mounted(root):
        configure_initramfs(recipe, root, log)
        in_root(root, ["python3", "-m", "compileall", "-q", "/usr/local/lib/visa"], log=log)
        in_root(root, ["systemctl", "enable", *sysconf.get("enable", [])], log=log)
        in_root(root, ["systemctl", "set-default", "multi-user.target"], log=log)
    for junk in ("var/log/apt", "var/cache/debconf/templates.dat-old", "var/lib/dpkg/status-old",
                 "var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"):
        p = root / junk
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for f in (root / "var/log").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")


def configure_initramfs(recipe: Recipe, root: Path, log: Path) -> None:
    """The initramfs again, from this stage's [kernel] settings (the packages stage's hash does not
    cover them; bootfiles.write_initramfs_config says what they are)."""
    write_initramfs_config(root, list(recipe.kernel.get("initramfs_modules", [])),
                           udev=recipe.kernel.get("initramfs_udev", True))
    in_root(root, ["update-initramfs", "-u", "-k", kernel_files(root)[2]], log=log)


def kernel_files(root: Path) -> tuple[Path, Path, str]:
    """(vmlinuz, initrd.img, kernel version) of the one kernel in /boot."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise BuildError(f"expected one kernel in /boot, found {[k.name for k in kernels]}")
    version = kernels[0].name[len("vmlinuz-"):]
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.exists():
        raise BuildError(f"no initrd for kernel {version} (initramfs-tools failed?)")
    return kernels[0], initrd, version


def make_disk(recipe: Recipe, root: Path, out: Path, log: Path) -> None:
    """ext4 over the whole disk (no partition table) straight from the tree, then qcow2."""
    raw = out / "root.raw"
    raw.unlink(missing_ok=True)
    with raw.open("wb") as f:
        f.truncate(recipe.image_size_mib() * 1024 * 1024)
    run(["mkfs.ext4", "-q", "-F", "-L", "visa-root", "-m", "1", "-d", str(root), str(raw)], log=log)
    argv = ["qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=65536"]
    if recipe.image.get("compress"):
        argv.append("-c")
    run(argv + [str(raw), str(out / "base.qcow2")], log=log)
    raw.unlink()


def installed_packages(root: Path) -> dict[str, str]:
    text = run(["chroot", str(root), "dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"],
               capture=True)
    out = {}
    for line in text.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status.startswith("ii"):
            out[name] = version
    return out


def unpacked_packages(root: Path) -> dict[str, str]:
    """[apt] unpacked packages (files without dpkg's record), as stages.unpack_packages kept them."""
    record = root / UNPACKED_RECORD.lstrip("/")
    return json.loads(record.read_text()) if record.exists() else {}


def python_packages(root: Path, env: str) -> dict[str, str]:
    """{distribution: version} read from the env's dist-info directories (no interpreter needed)."""
    out = {}
    for meta in (root / env.lstrip("/")).glob("lib/python3*/site-packages/*.dist-info/METADATA"):
        text = meta.read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", text, re.M)
        version = re.search(r"^Version: (.+)$", text, re.M)
        if name and version:
            out[name.group(1).strip()] = version.group(1).strip()
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def write_boot_files(root: Path, out: Path) -> dict[str, str]:
    """vmlinuz and initrd.img as Debian built them, plus the uncompressed pair QEMU boots faster
    (bootfiles.py says why); returns the manifest's `direct_boot` (which pair the backend uses)."""
    vmlinuz, initrd, _ = kernel_files(root)
    shutil.copyfile(vmlinuz, out / "vmlinuz")
    shutil.copyfile(initrd, out / "initrd.img")
    (out / "initrd.cpio").write_bytes(plain_initrd(initrd.read_bytes()))
    elf = pvh_kernel(vmlinuz.read_bytes())
    if elf is None:  # a kernel without CONFIG_PVH (or compressed with zstd): boot the bzImage
        return {"kernel": "vmlinuz", "initrd": "initrd.cpio"}
    (out / "vmlinux").write_bytes(elf)
    return {"kernel": "vmlinux", "initrd": "initrd.cpio"}


def write_manifest(recipe: Recipe, root: Path, out: Path, hashes: dict[str, str], started: float,
                   direct_boot: dict[str, str]) -> dict:
    """manifest.json: what is inside, and how the backend boots it."""
    _, _, version = kernel_files(root)
    info = json.loads(run(["qemu-img", "info", "--output=json", str(out / "base.qcow2")]))
    manifest = {
        "name": recipe.name,
        "recipe_hash": hashes["image"],
        "stage_hashes": hashes,
        "extras": list(recipe.extras),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - started, 1),
        "kernel_version": version,
        "kernel_cmdline": recipe.kernel["cmdline"],
        "direct_boot": direct_boot,
        "root_device": "/dev/vda",
        "disk": {"format": "qcow2", "virtual_size": info["virtual-size"],
                 "file_size": (out / "base.qcow2").stat().st_size, "compressed": bool(recipe.image.get("compress"))},
        "python_env": recipe.python["env"],
        "agent": {"virtio_serial_port": protocol.AGENT_PORT_NAME, "console_prefix": protocol.CONSOLE_PREFIX,
                  "fw_cfg": [protocol.FW_CFG_CONFIG, protocol.FW_CFG_SCRIPT]},
        "boot_modules": list(recipe.kernel.get("boot_modules", [])),
        "no_autoload": list(recipe.kernel.get("no_autoload", [])),
        "packages": installed_packages(root),
        "unpacked": unpacked_packages(root),
        "python_packages": python_packages(root, recipe.python["env"]),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def finish_image(recipe: Recipe, root: Path, out: Path, hashes: dict[str, str], started: float, log: Path) -> dict:
    """Disk, kernel, initrd and manifest into `out` (a fresh directory)."""
    direct_boot = write_boot_files(root, out)
    make_disk(recipe, root, out, log)
    manifest = write_manifest(recipe, root, out, hashes, started, direct_boot)
    for f in out.iterdir():
        os.chmod(f, 0o644)
    return manifest
