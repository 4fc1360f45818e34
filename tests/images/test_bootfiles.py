"""The uncompressed kernel and initrd the image exports for a fast direct boot (bootfiles.py)."""
from __future__ import annotations

import gzip
import lzma
import struct
from pathlib import Path

import pytest
from imagebuild.bootfiles import has_pvh_entry, plain_initrd, pvh_kernel  # images/ is on pytest's pythonpath
from imagebuild.chroot import BuildError


def elf_with_notes(*notes: tuple[bytes, int]) -> bytes:
    """A minimal ELF64 with one PT_NOTE segment holding (name, type) notes."""
    body = b""
    for name, n_type in notes:
        name += b"\0"
        body += struct.pack("<III", len(name), 4, n_type) + name.ljust((len(name) + 3) // 4 * 4, b"\0") + b"\0" * 4
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(body), len(body), 4)
    return bytes(header) + phdr + body


def bzimage(payload: bytes, setup_sects: int = 2, version: int = 0x20F) -> bytes:
    """An x86 boot header whose payload fields point at `payload` (plus the 4-byte size the
    kernel's build appends after the compressed stream)."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<II", setup, 0x248, 16, len(payload))
    return bytes(setup) + b"\0" * 16 + payload + b"\x01\x02\x03\x04"


def test_the_pvh_kernel_comes_out_of_an_xz_or_gzip_bzimage():
    elf = elf_with_notes((b"GNU", 3), (b"Xen", 18))
    assert has_pvh_entry(elf)
    assert pvh_kernel(bzimage(lzma.compress(elf, format=lzma.FORMAT_XZ))) == elf
    assert pvh_kernel(bzimage(gzip.compress(elf))) == elf


def test_a_kernel_without_pvh_or_in_an_unreadable_format_keeps_the_bzimage():
    no_pvh = elf_with_notes((b"Xen", 17), (b"GNU", 18))
    assert not has_pvh_entry(no_pvh) and not has_pvh_entry(b"not an elf")
    assert pvh_kernel(bzimage(lzma.compress(no_pvh, format=lzma.FORMAT_XZ))) is None
    assert pvh_kernel(bzimage(b"\x28\xb5\x2f\xfd zstd frame")) is None


@pytest.mark.parametrize("image, message", [
    (b"MZ" + b"\0" * 1024, "not an x86 bzImage"),
    (bzimage(b"x", version=0x206), "boot protocol 2.6"),
    (bzimage(b"x")[:600], "outside the file"),
    (bzimage(b"\xfd7zXZ\x00 but not xz"), "could not be decompressed"),
])
def test_a_broken_kernel_stops_the_build_with_the_reason(image: bytes, message: str):
    with pytest.raises(BuildError, match=message):
        pvh_kernel(image)


def test_the_initrd_is_exported_as_plain_cpio():
    cpio = b"070701" + b"0" * 100
    assert plain_initrd(cpio) == cpio
    assert plain_initrd(gzip.compress(cpio)) == cpio
    assert plain_initrd(lzma.compress(cpio, format=lzma.FORMAT_XZ)) == cpio
    with pytest.raises(BuildError, match="COMPRESS=gzip"):
        plain_initrd(b"\x28\xb5\x2f\xfd zstd")
    with pytest.raises(BuildError, match="could not be decompressed"):
        plain_initrd(gzip.compress(cpio)[:20])
    with pytest.raises(BuildError, match="not a cpio archive"):
        plain_initrd(gzip.compress(b"hello"))


def test_the_initramfs_config_lists_the_modules_and_its_hook_drops_udev(tmp_path: Path):
    """The hook initramfs-tools runs last: what it leaves is what the initramfs contains."""
    import subprocess

    from imagebuild.bootfiles import write_initramfs_config
    root = tmp_path / "root"
    write_initramfs_config(root, ["virtio_blk", "ext4"], udev=False)
    conf = root / "etc/initramfs-tools"
    assert (conf / "modules").read_text() == "virtio_blk\next4\n"
    assert "MODULES=list" in (conf / "conf.d/visa.conf").read_text()
    dest = tmp_path / "initramfs"
    kept = ["scripts/init-top/keymap", "usr/sbin/modprobe"]
    for f in kept + ["scripts/init-top/udev", "scripts/init-bottom/udev", "usr/bin/udevadm",
                     "usr/lib/systemd/systemd-udevd", "usr/lib/udev/rules.d/60-block.rules", "etc/udev/udev.conf"]:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        (dest / f).write_text("x")
    hook = conf / "hooks/visa-no-udev"
    assert subprocess.run([str(hook), "prereqs"], capture_output=True, text=True).stdout == ""
    subprocess.run([str(hook)], env={"DESTDIR": str(dest), "PATH": "/usr/bin:/bin"}, check=True)
    assert sorted(str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file()) == sorted(kept)
    write_initramfs_config(root, ["virtio_blk"], udev=True)
    assert not hook.exists()
