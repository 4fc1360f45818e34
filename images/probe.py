#!/usr/bin/env python3
"""Boot the built image once, from a throw-away overlay, and time the boot agent's stages.

    .venv/bin/python images/probe.py [--image-dir DIR] [--mode cold|warm] [--accel auto|kvm|tcg]

The VM is the qemu backend's: the same command line (visa_spawner.backends.qemu.command.qemu_argv:
devices, restricted user-mode network with the per-connection hub relay, serial console to a file),
the same instance config builder and guest environment, so its timings are the backend's.
cold: the instance config comes through fw_cfg (as the qemu backend's cold boot); warm: the agent
waits on the `org.visahub.agent` virtio-serial port and gets the config from there (as after a
restore). Both run the real start script and jupyterhub-singleuser as the owner, with a 9p data
share; the hub is a small HTTP endpoint here that records phone-home posts. Prints one line per
VISA-STAGE seen on the serial console, with seconds since QEMU started. base.qcow2 is never written.
"""
from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from visa_spawner.backends.guest import cloudinit, protocol  # noqa: E402
from visa_spawner.backends.qemu import relay as qemu_relay  # noqa: E402
from visa_spawner.backends.qemu.accel import choose_acceleration  # noqa: E402
from visa_spawner.backends.qemu.command import (  # noqa: E402
    GUEST_JUPYTER_PORT,
    VmLayout,
    guest_env,
    mount_templates,
    overlay_argv,
    qemu_argv,
    relay_command,
)
from visa_spawner.backends.qemu.image import direct_boot_files  # noqa: E402

QEMU, QEMU_IMG = "qemu-system-x86_64", "qemu-img"


@dataclass
class BootResult:
    stages: list[tuple[float, dict]] = field(default_factory=list)  # (seconds since start, stage line)
    phoned: list[dict] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    host_port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    def first(self, stage: str) -> float | None:
        return next((t for t, s in self.stages if s.get("stage") == stage), None)

    def get(self, stage: str) -> dict | None:
        return next((s for _, s in self.stages if s.get("stage") == stage), None)


class PhoneHome(http.server.BaseHTTPRequestHandler):
    """Stands in for the hub: /hub/api (version) and /hub/api/visa/phone-home (records posts)."""
    posts: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.posts.append({"auth": self.headers.get("Authorization", ""), **json.loads(body or b"{}")})
        self.send_response(200)
        self.end_headers()

    def do_GET(self):  # noqa: N802
        """jupyterhub-singleuser asks the hub's version at start and gives up if it gets no answer."""
        found = self.path.rstrip("/").endswith("/hub/api")
        body = json.dumps({"version": "6.1.1"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if found else 0))
        self.end_headers()
        if found:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_config(hub_port: int, token: str, owner: str = "probe-user") -> dict:
    """An instance config like the qemu backend's (its guest_env, mount template and Jupyter port),
    with the real single-user command; the hub is the fake one on 127.0.0.1:hub_port."""
    env = {"JUPYTERHUB_API_TOKEN": token, "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
           "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{owner}", "JUPYTERHUB_USER": owner,
           "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_SERVICE_PREFIX": f"/user/{owner}/",
           "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/user/{owner}/oauth_callback",
           "JUPYTERHUB_SERVER_NAME": "", "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1/user/{owner}/"}
    return cloudinit.instance_config(
        owner=owner, server_name="", display_name="probe", proposal="P-0001",
        command=["jupyterhub-singleuser"], env=guest_env(env, hub_port), port=GUEST_JUPYTER_PORT,
        screen="1280x800", keyboard="us", mount_templates=mount_templates(True))


def probe_layout(image: Path, tmp: Path, *, host_port: int, hub_port: int, accel_argv: tuple[str, ...],
                 fw_cfg: dict[str, Path], cpus: int = 2, memory_mb: int = 2048,
                 extra: tuple[str, ...] = ()) -> VmLayout:
    """The qemu backend's VM layout for one probe boot in `tmp` (so qemu_argv gives the backend's
    command line); `-no-reboot` only ends a guest that crashes at once instead of booting it again."""
    manifest = json.loads((image / "manifest.json").read_text())
    kernel, initrd = direct_boot_files(image, manifest)
    return VmLayout(
        name="visa-probe", overlay=str(tmp / "overlay.qcow2"), kernel=str(kernel), initrd=str(initrd),
        kernel_cmdline=manifest["kernel_cmdline"], qmp_socket=str(tmp / "qmp.sock"),
        agent_socket=str(tmp / "agent.sock"), console_log=str(tmp / "console.log"), cpus=cpus,
        memory_mb=memory_mb, host_port=host_port, data_dir=str(tmp / "data"), hub_port=hub_port,
        hub_relay=relay_command(shutil.which("socat"), sys.executable, qemu_relay.__file__),
        accel_argv=accel_argv, fw_cfg=tuple((name, str(path)) for name, path in fw_cfg.items()),
        extra_args=("-no-reboot", *extra))


def follow(path: Path, proc: subprocess.Popen, deadline: float) -> Iterator[str]:
    """Lines of the serial console file as QEMU writes them, until QEMU exits or the deadline."""
    buf = b""
    with path.open("rb") as f:
        while time.monotonic() < deadline:
            chunk = f.read(65536)
            if not chunk:
                if proc.poll() is not None:
                    return
                time.sleep(0.02)
                continue
            *lines, buf = (buf + chunk).split(b"\n")
            for raw in lines:
                yield raw.decode(errors="replace").rstrip("\r")


def write_fw_cfg(tmp: Path, config: dict) -> dict[str, Path]:
    """The cold boot's fw_cfg blobs as files (the backend writes them 0600 in the instance dir)."""
    out = {}
    for name, data in cloudinit.fw_cfg_files(config).items():
        out[name] = tmp / name.replace("/", "_")
        out[name].write_bytes(data)
        out[name].chmod(0o600)
    return out


def boot(image: Path, mode: str = "cold", accel: str = "tcg", until: str = "jupyter-up",
         timeout: float = 240, host_port: int = 0, on_stage=None, keep: str = "",
         extra: tuple[str, ...] = ()) -> BootResult:
    """Boot once and collect stages until `until` (or "failed", or the timeout); `on_stage` is
    called for each stage while the VM runs (Jupyter is reachable on 127.0.0.1:host_port).
    `accel` is the backend's acceleration setting: auto, kvm or tcg."""
    image = image.resolve()
    acceleration = asyncio.run(choose_acceleration(QEMU, accel))
    result = BootResult(host_port=host_port or free_port())
    PhoneHome.posts = result.phoned
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PhoneHome)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    config = probe_config(hub.server_address[1], result.token)
    with tempfile.TemporaryDirectory(prefix="visa-probe-") as tmpdir:
        tmp = Path(keep or tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "data").mkdir()
        (tmp / "data" / "scan-001.txt").write_text("probe data\n")
        subprocess.run(overlay_argv(QEMU_IMG, str(image / "base.qcow2"), str(tmp / "overlay.qcow2")), check=True)
        layout = probe_layout(image, tmp, host_port=result.host_port, hub_port=hub.server_address[1],
                              accel_argv=tuple(acceleration.argv),
                              fw_cfg=write_fw_cfg(tmp, config) if mode == "cold" else {}, extra=extra)
        (tmp / "console.log").write_bytes(b"")
        with (tmp / "qemu.log").open("wb") as qemu_log:
            started = time.monotonic()
            proc = subprocess.Popen(qemu_argv(QEMU, layout), stdin=subprocess.DEVNULL, stdout=qemu_log,
                                    stderr=subprocess.STDOUT)
        try:
            for line in follow(tmp / "console.log", proc, started + timeout):
                result.console.append(line)
                at = line.find(protocol.CONSOLE_PREFIX)
                if at < 0:
                    continue
                stage = json.loads(line[at + len(protocol.CONSOLE_PREFIX):])
                result.stages.append((round(time.monotonic() - started, 2), stage))
                if on_stage:
                    on_stage(result.stages[-1])
                if stage["stage"] == "waiting-config" and mode == "warm":
                    send_config(tmp / "agent.sock", config)
                if stage["stage"] in (until, "failed"):
                    break
        finally:
            proc.kill()
            proc.wait()
            hub.shutdown()
            hub.server_close()
            if proc.returncode not in (0, -9):  # QEMU's own complaint, for the caller's failure message
                result.console += ["qemu: " + ln for ln in (tmp / "qemu.log").read_text(errors="replace").splitlines()]
    return result


def send_config(sock_path: Path, config: dict) -> None:
    """What the qemu backend sends after a restore: config, script, seed, hostname, time."""
    msg = {"config": config, "script": cloudinit.START_SCRIPT, "seed": secrets.token_hex(32),
           "hostname": "visa-probe", "time": time.time()}
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    s.sendall(json.dumps(msg).encode() + b"\n")
    threading.Thread(target=lambda: (s.recv(1 << 16) and None, time.sleep(600)), daemon=True).start()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-dir", default="/var/cache/visahub/images/debian-bookworm/current")
    p.add_argument("--mode", choices=("cold", "warm"), default="cold")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="tcg",
                   help="as the qemu backend's acceleration setting")
    p.add_argument("--timeout", type=float, default=240)
    p.add_argument("--keep", default="", help="keep the overlay and console in this directory (to debug)")
    p.add_argument("--until", default="jupyter-up", help="stop at this stage (e.g. agent-started)")
    p.add_argument("--qemu-arg", action="append", default=[], help="one more QEMU argument (repeatable)")
    a = p.parse_args()
    r = boot(Path(a.image_dir), a.mode, a.accel, until=a.until, timeout=a.timeout, keep=a.keep,
             extra=tuple(a.qemu_arg), on_stage=lambda ts: print(f"{ts[0]:7.2f}s  {json.dumps(ts[1])}", flush=True))
    print(f"phone-home posts: {[x.get('stage') for x in r.phoned]}")
    if not r.first(a.until):
        print("\n".join(r.console[-40:]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
