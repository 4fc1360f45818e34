#!/usr/bin/env python3
"""Boot the built image once, from a throw-away overlay, and time the boot agent's stages.

    .venv/bin/python images/probe.py [--image-dir DIR] [--mode cold|warm] [--accel tcg]

cold: the instance config comes through fw_cfg (as the qemu backend's cold boot); warm: the agent
waits on the `org.visahub.agent` virtio-serial port and gets the config from there (as after a
restore). Both run the real start script and jupyterhub-singleuser as the owner, with a 9p data
share; the hub is a small HTTP endpoint here that records phone-home posts. Prints one line per
VISA-STAGE seen on the serial console, with seconds since QEMU started. base.qcow2 is never written.
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from visa_spawner.backends.guest import cloudinit  # noqa: E402
from visa_spawner.backends.qemu.image import direct_boot_files  # noqa: E402

PREFIX = "VISA-STAGE "
PORT_NAME = "org.visahub.agent"
GUEST_PORT = 8888


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
    """An instance config like the qemu backend's, with the real single-user command."""
    env = {"JUPYTERHUB_API_TOKEN": token, "JUPYTERHUB_API_URL": f"http://10.0.2.2:{hub_port}/hub/api",
           "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{owner}", "JUPYTERHUB_USER": owner,
           "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_SERVICE_PREFIX": f"/user/{owner}/",
           "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/user/{owner}/oauth_callback",
           "JUPYTERHUB_SERVER_NAME": "", "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{GUEST_PORT}/user/{owner}/"}
    return cloudinit.instance_config(
        owner=owner, server_name="", display_name="probe", proposal="P-0001",
        command=["jupyterhub-singleuser"], env=env, port=GUEST_PORT, screen="1280x800", keyboard="us",
        mount_templates=[["mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L,ro", "visa-data", "{mount_point}"]])


def qemu_argv(image: Path, tmp: Path, host_port: int, accel: str, fw_cfg: dict[str, Path],
              extra: tuple[str, ...] = ()) -> list[str]:
    manifest = json.loads((image / "manifest.json").read_text())
    kernel, initrd = direct_boot_files(image, manifest)
    argv = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none", "-machine", "pc",
            "-accel", accel, "-cpu", "max", "-m", "2048", "-smp", "2",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", manifest["kernel_cmdline"],
            "-drive", f"file={tmp / 'overlay.qcow2'},if=virtio,format=qcow2,cache=writeback",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{host_port}-:{GUEST_PORT}",
            "-device", "virtio-net-pci,netdev=n0",
            "-virtfs", f"local,path={tmp / 'data'},mount_tag=visa-data,security_model=none,readonly=on",
            "-chardev", f"socket,id=agent,path={tmp / 'agent.sock'},server=on,wait=off",
            "-device", "virtio-serial", "-device", f"virtserialport,chardev=agent,name={PORT_NAME}",
            "-serial", "stdio", "-device", "virtio-rng-pci", "-device", "vmgenid,guid=auto", "-no-reboot"]
    for name, path in fw_cfg.items():
        argv += ["-fw_cfg", f"name={name},file={path}"]
    return argv + list(extra)


def boot(image: Path, mode: str = "cold", accel: str = "tcg", until: str = "jupyter-up",
         timeout: float = 240, host_port: int = 0, on_stage=None, keep: str = "",
         extra: tuple[str, ...] = ()) -> BootResult:
    """Boot once and collect stages until `until` (or "failed", or the timeout); `on_stage` is
    called for each stage while the VM runs (Jupyter is reachable on 127.0.0.1:host_port)."""
    image = image.resolve()
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
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image / "base.qcow2"),
                        str(tmp / "overlay.qcow2")], check=True)
        fw_cfg = {}
        if mode == "cold":
            for name, data in cloudinit.fw_cfg_files(config).items():
                path = tmp / name.replace("/", "_")
                path.write_bytes(data)
                fw_cfg[name] = path
        started = time.monotonic()
        proc = subprocess.Popen(qemu_argv(image, tmp, result.host_port, accel, fw_cfg, extra),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                result.console.append(line)
                at = line.find(PREFIX)
                if at < 0:
                    continue
                stage = json.loads(line[at + len(PREFIX):])
                result.stages.append((round(time.monotonic() - started, 2), stage))
                if on_stage:
                    on_stage(result.stages[-1])
                if stage["stage"] == "waiting-config" and mode == "warm":
                    send_config(tmp / "agent.sock", config)
                if stage["stage"] in (until, "failed"):
                    break
        finally:
            timer.cancel()
            proc.kill()
            proc.wait()
            hub.shutdown()
            if keep:
                (tmp / "console.log").write_text("\n".join(result.console) + "\n")
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
    p.add_argument("--accel", default="tcg,thread=multi")
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
