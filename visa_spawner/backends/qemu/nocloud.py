"""The instance config as cloud-init's NoCloud seed: the OpenStack path, proven under QEMU.

`QemuBackend.config_delivery = "nocloud"` gives a VM booted from the image's OpenStack variant
(`images/build.py --extra openstack`) no fw_cfg blobs and no boot-agent port: the agent reports
`no-config` and cloud-init starts the instance, from exactly the user-data the OpenStack backend
sends to Nova (`cloudinit.render_cloud_config`). The seed is a directory (`user-data`,
`meta-data`) that QEMU shows the guest as a read-only FAT disk labelled `cidata`
(`command.qemu_argv`). QEMU reads its files when the guest reads the disk, so the seed, which holds
the instance's API token, stays (0600 in the 0700 instance directory) until the start ends.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path

from visa_spawner.backends.guest import cloudinit


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data (JSON is YAML). A new instance-id at every start makes cloud-init run its
    per-instance modules again, so a restarted VM writes the new config (new token) as a new server would."""
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}) + "\n"


def write_seed(seed: Path, config: Mapping, hostname: str, vm: str) -> None:
    """The seed directory for one start (blocking: run it in an executor). ValueError from the
    renderer (user-data too large) is the caller's to turn into a message."""
    files = {"user-data": cloudinit.render_cloud_config(config),
             "meta-data": meta_data(f"{vm}-{secrets.token_hex(4)}", hostname)}
    remove_seed(seed)
    seed.mkdir(mode=0o700)
    for name, text in files.items():
        fd = os.open(seed / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)


def remove_seed(seed: Path) -> None:
    shutil.rmtree(seed, ignore_errors=True)
