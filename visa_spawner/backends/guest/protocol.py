"""The guest protocol: the names the hub and an analysis VM must spell the same way.

One stdlib-only module, imported by the hub (the qemu and OpenStack backends, the renderer,
phone-home) and, copied into the image beside the boot agent as
`/usr/local/lib/visa/visa_protocol.py` (images/agent/visa_protocol.py is a link to this file), by
the agent and the zygote. A name changed here changes both sides at once, and the image's system
stage hash covers this file, so `make image` rebuilds. The start script is the one exception: it
is shipped alone (cloud-init writes only it and the config), so it carries its own copies, which
tests/spawner/guest compares with these.
"""
from __future__ import annotations

import re

#: virtio-serial port the boot agent talks on (warm starts; stage lines)
AGENT_PORT_NAME = "org.visahub.agent"
#: QEMU fw_cfg directory and the two blobs of a cold boot (instance config, start script)
FW_CFG_DIR = "opt/org.visahub"
FW_CFG_CONFIG = f"{FW_CFG_DIR}/instance.json"
FW_CFG_SCRIPT = f"{FW_CFG_DIR}/visa-start"
#: where the instance config and the start script land inside the guest
CONFIG_PATH = "/etc/visa/instance.json"
SCRIPT_PATH = "/usr/local/sbin/visa-start"
#: the agent's stage lines on the serial console start with this
CONSOLE_PREFIX = "VISA-STAGE "
#: the zygote's socket (made by visa-zygote.socket) and the status it writes beside it
ZYGOTE_SOCKET = "/run/visa/zygote.sock"
ZYGOTE_STATUS = "/run/visa/zygote.json"

#: the start script's stages, in order: phoned home to the hub, and seen by the agent from outside
SCRIPT_STAGES = ("started", "account", "data", "jupyter-up", "failed")
#: every stage the boot agent reports on its port and console, in boot order
AGENT_STAGES = (
    "agent-started",   # the agent runs: the kernel and early userspace are up
    "fw-cfg",          # cold boot: the config came as fw_cfg blobs
    "zygote",          # the zygote has imported Jupyter (seconds, modules, failed)
    "desktop",         # warm-start template: the desktop prestarted for the owner's uid (seconds)
    "waiting-config",  # warm-start template: waiting on the port for a config line
    "identity",        # a restored clone has its own machine-id, seed, hostname, clock
    "no-config",       # neither fw_cfg nor port (OpenStack): cloud-init starts the script
    "configured",      # config and script written
    *SCRIPT_STAGES,
    "exited",          # the start script (Jupyter's whole life) ended without error
)

#: `token=…`, `password: …`, `"secret": "…"`: the value of anything that looks like a secret
SECRETISH = re.compile(r"(token|secret|password|key)(\"?\s*[=:]\s*)(\"[^\"]*\"?|\S+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """`text` with every secret-looking value replaced by `[secret]`, for logs and messages that
    quote a process's output (a token must never reach a log, a page or a console)."""
    return SECRETISH.sub(r"\1\2[secret]", text)
