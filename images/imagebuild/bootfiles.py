"""Kernel and initrd as QEMU boots them fastest: uncompressed, the kernel entered through PVH.

Under TCG every instruction of the guest is emulated. A Debian bzImage decompresses its 66 MB
kernel from xz before the kernel starts, behind SeaBIOS and the linuxboot option ROM: 3.5 s of a
cold boot here. Through the ELF kernel's PVH entry QEMU loads the segments itself and jumps in
(0.5 s). Likewise the kernel unpacks an uncompressed initramfs without inflating it first.
The compressed originals stay in the image for boot loaders and OpenStack (`aki`/`ari` images).
"""
from __future__ import annotations

import gzip
import lzma
import struct
import zlib
from pathlib import Path

from .chroot import BuildError

# gzip: initramfs-tools falls back to it anyway when the root has no zstd; the exported copy is
# uncompressed (plain_initrd)
INITRAMFS_CONF = "MODULES=list\nCOMPRESS=gzip\nRESUME=none\n"
# an initramfs-tools hook (/etc hooks run after the packages' ones, before the scripts are ordered)
INITRAMFS_NO_UDEV = """#!/bin/sh
# VISA image (images/imagebuild/bootfiles.py): no udev in the initramfs ([kernel] initramfs_udev = false)
[ "$1" = prereqs ] && exit 0
rm -f "$DESTDIR/scripts/init-top/udev" "$DESTDIR/scripts/init-bottom/udev" "$DESTDIR/usr/bin/udevadm" \\
  "$DESTDIR/usr/lib/systemd/systemd-udevd"
rm -rf "$DESTDIR/usr/lib/udev" "$DESTDIR/etc/udev"
"""
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU's `-kernel` looks for in an ELF kernel
CPIO_MAGIC = b"070701"


def write_initramfs_config(root: Path, modules: list[str], udev: bool) -> None:
    """initramfs-tools' settings in the image root: only `modules` (MODULES=list), and no udev
    unless asked. The initramfs only has to mount /dev/vda: it loads those modules itself and
    devtmpfs makes the node as virtio_blk binds, so udev there only costs time (1.5 s of a cold
    boot under TCG); systemd's udev coldplugs every device after the switch to the root fs."""
    conf = root / "etc/initramfs-tools"
    (conf / "conf.d").mkdir(parents=True, exist_ok=True)
    (conf / "hooks").mkdir(parents=True, exist_ok=True)
    (conf / "modules").write_text("\n".join(modules) + "\n")
    (conf / "conf.d/visa.conf").write_text(INITRAMFS_CONF)
    hook = conf / "hooks/visa-no-udev"
    if udev:
        hook.unlink(missing_ok=True)
    else:
        hook.write_text(INITRAMFS_NO_UDEV)
        hook.chmod(0o755)


def _decompress(payload: bytes) -> bytes | None:
    """Inflate a kernel payload (xz, lzma or gzip, as the kernel's build leaves it: trailing bytes
    after the stream are allowed); None for a format Python cannot read (zstd, lz4, bzip2)."""
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    if payload.startswith(b"\x5d\x00\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(wbits=31).decompress(payload)
    return None


def bzimage_payload(bzimage: bytes) -> bytes:
    """The compressed kernel inside an x86 bzImage (boot protocol 2.08 or later)."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise BuildError("the kernel is not an x86 bzImage (no HdrS header)")
    version = struct.unpack_from("<H", bzimage, 0x206)[0]
    if version < 0x208:
        raise BuildError(f"the bzImage's boot protocol {version >> 8}.{version & 0xff} has no payload fields")
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if start + length > len(bzimage) or length == 0:
        raise BuildError("the bzImage's payload lies outside the file")
    return bzimage[start:start + length]


def has_pvh_entry(elf: bytes) -> bool:
    """Does this ELF64 kernel carry a Xen PHYS32_ENTRY note (CONFIG_PVH), which QEMU enters?"""
    if not elf.startswith(b"\x7fELF\x02\x01"):
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_kernel(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF kernel if QEMU can enter it through PVH, else None (boot the bzImage)."""
    try:
        payload = _decompress(bzimage_payload(bzimage))
    except (lzma.LZMAError, zlib.error) as e:
        raise BuildError(f"the bzImage's kernel could not be decompressed: {e}") from None
    if payload is None or not has_pvh_entry(payload):
        return None
    return payload


def plain_initrd(initrd: bytes) -> bytes:
    """The initramfs as an uncompressed cpio archive (what initramfs-tools wrote, inflated)."""
    if initrd.startswith(CPIO_MAGIC):
        return initrd
    try:
        if initrd.startswith(b"\x1f\x8b"):
            data = gzip.decompress(initrd)
        elif initrd.startswith(b"\xfd7zXZ\x00"):
            data = lzma.decompress(initrd, format=lzma.FORMAT_XZ)
        else:
            raise BuildError(f"the initrd is neither a cpio archive nor gzip/xz (starts with {initrd[:6]!r}); "
                             "set COMPRESS=gzip for initramfs-tools")
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise BuildError(f"the initrd could not be decompressed: {e}") from None
    if not data.startswith(CPIO_MAGIC):
        raise BuildError("the decompressed initrd is not a cpio archive")
    return data
