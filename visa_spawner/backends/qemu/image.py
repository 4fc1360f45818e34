"""The analysis image as the QEMU backend sees it (built by `make image`, see docs/images.md).

`<image_dir>/current` → a hashed build directory with base.qcow2, vmlinuz, initrd.img and
manifest.json (and, named by the manifest's `direct_boot`, the uncompressed kernel and initrd that
boot faster under TCG; images/imagebuild/bootfiles.py). Overlays are made over the *resolved* build
directory, so an image rebuilt later never changes the disk under an existing instance.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IMAGE_DIR = "/var/cache/visahub/images/debian-bookworm"
DEFAULT_CMDLINE = "root=/dev/vda rw console=ttyS0"
IMAGE_FILES = ("base.qcow2", "vmlinuz", "initrd.img", "manifest.json")


class ImageError(Exception):
    """The image is missing or incomplete (message for admins and people)."""


@dataclass(frozen=True)
class VmImage:
    build_dir: str  # resolved `current`
    base: str
    kernel: str
    initrd: str
    kernel_cmdline: str
    identity: str  # what a memory snapshot must match: the build (recipe hash + directory)
    cloud_init: bool = False  # the manifest lists cloud-init (the OpenStack variant)

    @property
    def name(self) -> str:
        return os.path.basename(self.build_dir)


def load_image(image_dir: str) -> VmImage:
    """Resolve and check the current build; ImageError says what is missing and what to run."""
    current = Path(image_dir) / "current"
    if not current.exists():
        raise ImageError(f"no virtual machine image is built on this host ({current} is missing); "
                         "an admin runs `make image`")
    build = current.resolve()
    missing = [f for f in IMAGE_FILES if not (build / f).is_file()]
    if missing:
        raise ImageError(f"the virtual machine image in {build} is incomplete (missing {', '.join(missing)}); "
                         "an admin runs `make image` again")
    try:
        manifest = json.loads((build / "manifest.json").read_text())
    except ValueError as e:
        raise ImageError(f"the image manifest {build / 'manifest.json'} is not JSON ({e}); run `make image`") from None
    recipe = str(manifest.get("recipe_hash") or manifest.get("hash") or "")
    kernel, initrd = direct_boot_files(build, manifest)
    return VmImage(
        build_dir=str(build), base=str(build / "base.qcow2"), kernel=str(kernel), initrd=str(initrd),
        kernel_cmdline=str(manifest.get("kernel_cmdline") or DEFAULT_CMDLINE),
        identity=f"{recipe}:{build.name}", cloud_init="cloud-init" in (manifest.get("packages") or {}),
    )


def direct_boot_files(build: Path, manifest: dict) -> tuple[Path, Path]:
    """The kernel and initrd the manifest's `direct_boot` names (else the Debian pair)."""
    boot = manifest.get("direct_boot") or {}
    if not isinstance(boot, dict):
        raise ImageError(f"the image manifest in {build} has a malformed direct_boot; run `make image`")
    files = []
    for key, default in (("kernel", "vmlinuz"), ("initrd", "initrd.img")):
        name = boot.get(key, default)
        if not isinstance(name, str) or "/" in name or not (build / name).is_file():
            raise ImageError(f"the virtual machine image in {build} is incomplete (its {key} {name!r} is "
                             "missing); an admin runs `make image` again")
        files.append(build / name)
    return files[0], files[1]


def availability(image_dir: str = DEFAULT_IMAGE_DIR, qemu_binary: str = "qemu-system-x86_64",
                 qemu_img: str = "qemu-img") -> tuple[bool, str]:
    """Can this host offer virtual machines? (ok, reason): for the demo's plan list.

    Cheap (no process started), so a hub config can call it at start-up."""
    for binary, package in ((qemu_binary, "qemu-system-x86"), (qemu_img, "qemu-utils")):
        if not shutil.which(binary):
            return False, f"QEMU is not installed ({binary} not found): install the Debian package {package}"
    try:
        image = load_image(image_dir)
    except ImageError as e:
        return False, str(e)
    return True, f"image {image.name} with QEMU {shutil.which(qemu_binary)}"
