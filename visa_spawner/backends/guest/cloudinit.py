"""What a VM instance is told at first boot: one pure renderer for every VM backend.

The hub renders an *instance config* (plain JSON: the owner's account, the data mounts as argv
lists, screen and keyboard, the single-user command and its environment, where to phone home) and
ships it next to one constant start script. Nothing a person typed is ever pasted into a script:
the script is the same bytes for every instance and reads its values from the JSON, so hostile
names, titles or layouts can only ever be *values*.

- OpenStack: `render_cloud_config` → cloud-init user-data (`#cloud-config`, YAML made by a YAML
  dumper) that writes the two files and starts the script through systemd.
- QEMU: `fw_cfg_files` → the same two files as fw_cfg blobs.

The instance config holds the hub's API token for the instance: it is a secret, written 0600 root.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml

from visa_spawner.backends.guest.protocol import CONFIG_PATH, FW_CFG_CONFIG, FW_CFG_SCRIPT, SCRIPT_PATH

#: the start script: constant, stdlib-only Python run as root at first boot (start_script.py, a
#: real module so it is linted and tested; shipped as its text, the same bytes on every instance)
START_SCRIPT = Path(__file__).with_name("start_script.py").read_text(encoding="utf-8")
#: where the systemd unit lands inside the instance (the config and script: protocol.py)
UNIT_PATH = "/etc/systemd/system/visa-instance.service"
#: Nova's limit on user_data (base64 of it); we check the raw size with margin
MAX_USER_DATA = 48 * 1024

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ACCOUNT = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PLACEHOLDERS = ("proposal", "mount_point", "data_path", "account")


def unix_account(owner: str) -> str:
    """The owner's login name inside the instance: the hub name when it is a safe Unix name,
    else a readable prefix plus a hash (so `Alice.Martin@x` and `alice-martin-x` never collide)."""
    if _ACCOUNT.match(owner) and owner not in ("root", "nobody"):
        return owner
    base = re.sub(r"[^a-z0-9]+", "-", owner.lower()).strip("-")[:20] or "user"
    if not base[0].isalpha():
        base = "u" + base[:19]
    return f"{base}-{hashlib.sha256(owner.encode()).hexdigest()[:8]}"


def data_mount_point(proposal: str, root: str = "/data") -> str:
    """`<root>/<proposal>`; refuses ids that could escape the data root."""
    if not _SAFE_SEGMENT.match(proposal) or proposal in (".", ".."):
        raise ValueError(f"unsafe proposal id for a mount point: {proposal!r}")
    return f"{root.rstrip('/')}/{proposal}"


def mount_commands(templates: Sequence[Sequence[str]], **values: str) -> list[list[str]]:
    """Expand the site's mount command templates (argv lists with `{proposal}`, `{mount_point}`,
    `{data_path}`, `{account}`) into argv lists. Values are substituted into single argv elements,
    never parsed by a shell; unknown placeholders are a configuration error."""
    out = []
    for template in templates:
        argv = []
        for part in template:
            try:
                argv.append(str(part).format(**{k: values.get(k, "") for k in _PLACEHOLDERS}))
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"bad mount command template {list(template)!r}: {e}") from None
        out.append(argv)
    return out


def instance_config(
    *,
    owner: str,
    server_name: str,
    display_name: str,
    proposal: str,
    command: Sequence[str],
    env: Mapping[str, str],
    port: int,
    screen: str,
    keyboard: str,
    proposal_title: str = "",
    mount_templates: Sequence[Sequence[str]] = (),
    data_root: str = "/data",
    data_path: str = "",
    path_prefix: Iterable[str] = ("/opt/visahub/instance-env/bin",),
    phone_home_url: str = "",
    bind_address: str = "0.0.0.0",
    start_timeout: float = 300,
    resume_key: str = "",
) -> dict:
    """The JSON-able instance config (pure). Raises ValueError for a proposal id that is not a
    safe path segment (ids come from the catalogue; titles and names are free text and are only
    ever values)."""
    account = unix_account(owner)
    mounts = []
    if proposal and mount_templates:
        point = data_mount_point(proposal, data_root)
        mounts.append({
            "proposal": proposal, "mount_point": point,
            "commands": mount_commands(mount_templates, proposal=proposal, mount_point=point,
                                       data_path=data_path, account=account),
        })
    env = {str(k): str(v) for k, v in env.items()}
    if not phone_home_url and env.get("JUPYTERHUB_API_URL"):
        phone_home_url = env["JUPYTERHUB_API_URL"].rstrip("/") + "/visa/phone-home"
    return {
        "version": 1,
        "owner": owner,
        "account": account,
        "server_name": server_name,
        "display_name": display_name,
        "proposal": proposal,
        "proposal_title": proposal_title,
        "screen": screen,
        "keyboard": keyboard,
        "mounts": mounts,
        "command": [str(c) for c in command],
        "port": int(port),
        "bind_address": bind_address,
        "path_prefix": list(path_prefix),
        "env": env,
        "phone_home_url": phone_home_url,
        "start_timeout": float(start_timeout),
        # a server that is shelved and started again asks the hub for that start's config with it
        **({"resume_key": resume_key} if resume_key else {}),
    }


def config_json(config: Mapping) -> str:
    return json.dumps(config, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def render_cloud_config(config: Mapping) -> str:
    """cloud-init user-data: write the config (0600 root) and the start script, start it via systemd.

    Dumped by PyYAML from a dict, so no value can change the document's structure."""
    doc = {
        "write_files": [
            {"path": CONFIG_PATH, "owner": "root:root", "permissions": "0600", "content": config_json(config)},
            {"path": SCRIPT_PATH, "owner": "root:root", "permissions": "0755", "content": START_SCRIPT},
            {"path": UNIT_PATH, "owner": "root:root", "permissions": "0644", "content": SYSTEMD_UNIT},
        ],
        "runcmd": [  # enabled: a server started again after shelving runs it at boot (and resumes)
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "--no-block", "visa-instance.service"],
        ],
    }
    text = "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=False, width=4096)
    if len(text.encode()) > MAX_USER_DATA:
        raise ValueError(f"user-data too large ({len(text.encode())} bytes > {MAX_USER_DATA})")
    return text


def parse_cloud_config(text: str) -> dict:
    """The inverse of `render_cloud_config` (for tests and the boot emulator)."""
    if not text.startswith("#cloud-config\n"):
        raise ValueError("not a #cloud-config document")
    return yaml.safe_load(text)


def fw_cfg_files(config: Mapping) -> dict[str, bytes]:
    """The same instance for QEMU's `-fw_cfg name=...,file=...` (names under opt/)."""
    return {
        FW_CFG_CONFIG: config_json(config).encode(),
        FW_CFG_SCRIPT: START_SCRIPT.encode(),
    }


SYSTEMD_UNIT = """\
[Unit]
Description=VISA instance: owner account, data, single-user server
After=network-online.target remote-fs.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/visa-start
Restart=no

[Install]
WantedBy=multi-user.target
"""
