"""Pure builders for the QEMU backend: QEMU's argv, the guest's view of the hub, the data mount.

Everything here is data in, data out (tested table-driven in tests/spawner/qemu/test_qemu_builders.py): no
process is started and no file is touched. images/probe.py boots the image with this same argv.

Network: QEMU user-mode networking with `restrict=on`, so the guest reaches nothing but what is
forwarded explicitly: the hub's API at 10.0.2.100:<hub port> (a `guestfwd` that runs a relay per
connection to 127.0.0.1:<hub port>), with an instrument gateway the gateway at 10.0.2.101:5075 (its
relay binds the instance's 127.77.x.y address before connecting: the gateway's only proof of who
connects) and, the other way, 127.0.0.1:<host port> on the host to the guest's Jupyter port
(`hostfwd`, loopback only).
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from visa_spawner.backends.guest.protocol import AGENT_PORT_NAME, CONSOLE_PREFIX
from visa_spawner.backends.instrument_net import local_gateway

#: where the guest sees the hub (inside QEMU's user-mode network 10.0.2.0/24)
HUB_GUEST_ADDRESS = "10.0.2.100"
#: where the guest sees the instrument gateway, on the gateway's own port (`instrument_net.gateway_port`)
GATEWAY_GUEST_ADDRESS = "10.0.2.101"
#: the port Jupyter listens on inside every VM (host ports differ; guest ports need not)
GUEST_JUPYTER_PORT = 8888
#: 9p mount tag of the proposal's data, and how the guest mounts it (argv template, no shell)
DATA_MOUNT_TAG = "visa-data"
#: the volume label cloud-init's NoCloud datasource looks for
NOCLOUD_LABEL = "cidata"
DATA_MOUNT_TEMPLATE = ("mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L,ro", DATA_MOUNT_TAG, "{mount_point}")
_UNIX_PATH_MAX = 107
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class VmLayout:
    """Everything QEMU's command line depends on for one VM."""

    name: str
    overlay: str
    kernel: str
    initrd: str
    kernel_cmdline: str
    qmp_socket: str
    agent_socket: str
    console_log: str
    cpus: int
    memory_mb: int
    host_port: int
    data_dir: str  # shared read-only as `visa-data` (an empty directory when there is no data)
    hub_port: int = 0  # 0: the guest reaches no hub at all
    hub_relay: tuple[str, ...] = ()  # per-connection relay to the hub: argv with {port}
    gateway_relay: tuple[str, ...] = ()  # per-connection relay to the instrument gateway (ready argv); () = none
    gateway_port: int = 0  # the gateway's own port, also the guest's (a PVA search reply names it)
    guest_port: int = GUEST_JUPYTER_PORT
    accel_argv: tuple[str, ...] = ("-accel", "tcg,thread=multi", "-cpu", "max")
    fw_cfg: tuple[tuple[str, str], ...] = ()  # (fw_cfg name, host file)
    incoming: str = ""  # migration URI to restore the VM's memory from (warm start)
    seed_dir: str = ""  # a NoCloud seed (user-data, meta-data) shown as a FAT volume labelled cidata
    agent_port: bool = True  # the boot agent's virtio-serial port (none: the agent leaves the start to cloud-init)
    extra_args: tuple[str, ...] = field(default=())


def _check_layout(layout: VmLayout) -> None:
    if not _SAFE_NAME.match(layout.name):
        raise ValueError(f"unsafe VM name {layout.name!r}")
    for sock in (layout.qmp_socket, layout.agent_socket):
        if len(sock.encode()) > _UNIX_PATH_MAX:
            raise ValueError(f"socket path too long for a unix socket ({len(sock)} > {_UNIX_PATH_MAX}): {sock}")
    for value in (layout.overlay, layout.data_dir, layout.qmp_socket, layout.agent_socket, layout.console_log,
                  layout.seed_dir, *(f for _, f in layout.fw_cfg)):
        if "," in value:  # QEMU option syntax: a comma would start a new option
            raise ValueError(f"QEMU paths may not contain commas: {value!r}")
    if not 1 <= layout.cpus <= 64 or layout.memory_mb < 256:
        raise ValueError(f"unusable VM size: {layout.cpus} CPUs, {layout.memory_mb} MB")


def netdev_arg(layout: VmLayout) -> str:
    """User-mode network: only the hub relay out, only Jupyter in (loopback)."""
    parts = ["user", "id=net0", "restrict=on",
             f"hostfwd=tcp:127.0.0.1:{layout.host_port}-:{layout.guest_port}"]
    if layout.hub_port:
        relay = " ".join(shlex.quote(a.format(port=layout.hub_port)) for a in layout.hub_relay)
        if "," in relay:
            raise ValueError(f"the hub relay command may not contain commas: {relay!r}")
        parts.append(f"guestfwd=tcp:{HUB_GUEST_ADDRESS}:{layout.hub_port}-cmd:{relay}")
    if layout.gateway_relay:  # socat's `,bind=` needs a comma: QEMU's option syntax escapes it as ",,"
        relay = " ".join(shlex.quote(a) for a in layout.gateway_relay).replace(",", ",,")
        parts.append(f"guestfwd=tcp:{GATEWAY_GUEST_ADDRESS}:{layout.gateway_port}-cmd:{relay}")
    return ",".join(parts)


def qemu_argv(binary: str, layout: VmLayout) -> list[str]:
    """The whole QEMU command line for one VM (a new boot or a restore with `incoming`).

    A restored VM must have exactly the devices of the VM its memory was saved from, so cold and
    warm starts share this one builder and differ only in fw_cfg, ports, paths and `-incoming`."""
    _check_layout(layout)
    argv = [
        binary, "-name", f"{layout.name},process=qemu-{layout.name}",
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
        "-machine", "pc", *layout.accel_argv,
        "-m", str(layout.memory_mb), "-smp", str(layout.cpus),
        "-kernel", layout.kernel, "-initrd", layout.initrd, "-append", layout.kernel_cmdline,
        "-drive", f"file={layout.overlay},if=virtio,format=qcow2,cache=writeback,discard=unmap",
        "-netdev", netdev_arg(layout), "-device", "virtio-net-pci,netdev=net0",
        "-virtfs", f"local,path={layout.data_dir},mount_tag={DATA_MOUNT_TAG},security_model=none,readonly=on",
        "-chardev", f"socket,id=agent,path={layout.agent_socket},server=on,wait=off",
        "-device", "virtio-serial",
        *(("-device", f"virtserialport,chardev=agent,name={AGENT_PORT_NAME}") if layout.agent_port else ()),
        "-chardev", f"socket,id=qmp,path={layout.qmp_socket},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-serial", f"file:{layout.console_log}",
        "-device", "virtio-rng-pci", "-device", "vmgenid,guid=auto",
    ]
    for name, path in layout.fw_cfg:
        argv += ["-fw_cfg", f"name={name},file={path}"]
    if layout.seed_dir:  # QEMU's vvfat: a read-only FAT disk made from the directory, no tool needed
        argv += ["-drive", f"if=virtio,format=raw,read-only=on,file.driver=vvfat,file.dir={layout.seed_dir},"
                 f"file.label={NOCLOUD_LABEL}"]
    if layout.incoming:
        argv += ["-incoming", layout.incoming]
    return argv + list(layout.extra_args)


def overlay_argv(qemu_img: str, backing: str, overlay: str) -> list[str]:
    """A copy-on-write disk over `backing`, which is never written."""
    return [qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, overlay]


def hub_port_of(env: Mapping[str, str]) -> int:
    """The hub API's port from JUPYTERHUB_API_URL (0 when there is none)."""
    url = env.get("JUPYTERHUB_API_URL", "")
    return urlsplit(url).port or (80 if url.startswith("http://") else 443 if url.startswith("https://") else 0)


def _rehost(url: str, host: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{host}:{port if port is not None else parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def guest_env(env: Mapping[str, str], hub_port: int, guest_port: int = GUEST_JUPYTER_PORT) -> dict[str, str]:
    """The single-user environment as the guest must see it: hub URLs on 10.0.2.100, and the
    server's own URL on the guest's Jupyter port on every interface."""
    out = dict(env)
    for key, value in env.items():
        if not isinstance(value, str) or "://" not in value:
            continue
        parts = urlsplit(value)
        if key == "JUPYTERHUB_SERVICE_URL":
            out[key] = _rehost(value, "0.0.0.0", guest_port)
        elif parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port == hub_port:
            out[key] = _rehost(value, HUB_GUEST_ADDRESS)
    return out


def mount_templates(has_data: bool) -> list[list[str]]:
    return [list(DATA_MOUNT_TEMPLATE)] if has_data else []


def relay_command(socat: str | None, python: str, relay_module_file: str) -> tuple[str, ...]:
    """Per-connection relay from the guest to the hub: socat when installed, else a stdlib Python one."""
    if socat:
        return (socat, "STDIO", "TCP:127.0.0.1:{port}")
    return (python, relay_module_file, "{port}")


def gateway_relay_command(socat: str | None, python: str, relay_module_file: str) -> tuple[str, ...]:
    """Per-connection relay from the guest to the instrument gateway, bound to the instance's
    address ({host}, {port}, {source}): socat when installed, else the stdlib Python one."""
    if socat:
        return (socat, "STDIO", "TCP:{host}:{port},bind={source}")
    return (python, relay_module_file, "{port}", "--host={host}", "--bind={source}")


def gateway_relay_argv(template: tuple[str, ...] | list[str], gateway: str, source: str) -> tuple[str, ...]:
    """The relay's argv for one VM: the template filled with the (loopback) gateway and `source`;
    ValueError for a gateway the instance could not reach from a 127.77.x.y address."""
    host, port = local_gateway(gateway)
    return tuple(a.format(host=host, port=port, source=source) for a in template)


def vm_size(cpus: float, memory_mb: int) -> tuple[int, int]:
    """The plan's size as QEMU wants it: whole vCPUs (at least one), memory in MB."""
    return max(1, int(round(cpus))), int(memory_mb)


def console_stage(line: str) -> str:
    """Recognise a boot milestone on the serial console ('' if the line is none)."""
    if CONSOLE_PREFIX in line:  # a terminal reset sequence may precede it
        return "agent"
    if "Linux version" in line:
        return "kernel"
    if "Run /init" in line or "Run /sbin/init" in line or "systemd[1]" in line:
        return "init"
    return ""
