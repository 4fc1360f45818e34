#!/usr/bin/python3
"""VISA boot agent: the first VISA process in an analysis VM (stdlib only, run as root by systemd).

It finds the instance config, in this order:
1. QEMU fw_cfg blobs `opt/org.visahub/instance.json` and `opt/org.visahub/visa-start` (cold boot by
   the qemu backend): it goes on at once while the zygote (visa_zygote.py, started by systemd beside
   this agent) imports Jupyter, and reports the zygote's stage when its imports are done;
2. the virtio-serial port `org.visahub.agent` (warm start: this VM was restored from a memory
   snapshot taken while the agent waited here): it writes `{"stage": "waiting-config"}` and reads ONE
   JSON line `{"config": {...}, "script": "...", "seed": "<hex>", "hostname": "...", "time": <unix s>}`,
   then gives the clone its own identity (machine-id, random seed, hostname, clock) before anything
   user-specific runs. Before it waits there it waits for the zygote's imports, so the saved
   memory holds Jupyter already imported, and starts the desktop (visa_instance.desktop_prestart,
   as the uid the owner's account will get), so the saved memory holds it drawn;
3. neither: cloud-init (OpenStack) writes the files and starts visa-instance.service; the agent exits.

Then it runs the start script (`visa_spawner/backends/guest/start_script.py`) as root, which creates
the owner's account and runs Jupyter as the owner, and reports stages as JSON lines on the port and on
the serial console (prefixed `VISA-STAGE `): agent-started, waiting-config, configured, then the start
script's started / account / data / jupyter-up / failed, seen from outside the script. The config
holds the instance's API token: it is written 0600 and never logged. The names it shares with the
hub (port, fw_cfg, paths, stages, secret masking) come from visa_protocol.py beside it (the hub's
visa_spawner/backends/guest/protocol.py, copied in by the image build).
"""
from __future__ import annotations

import argparse
import fcntl
import glob
import json
import os
import pwd
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time

import visa_protocol as protocol

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_LINE = 1 << 20


def log(msg: str) -> None:
    sys.stderr.write("visa-agent: %s\n" % protocol.mask_secrets(msg))
    sys.stderr.flush()


def uptime() -> float:
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return 0.0


class Reporter:
    """Stage lines to the console (at once) and to the port (from a thread: a virtio-serial write
    blocks while no host program has the port open, and the agent must not)."""

    def __init__(self, console: str | None):
        self.console = console
        self.port_fd: int | None = None
        self.attached = threading.Event()
        self.pending: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def attach(self, fd: int | None) -> None:
        """The port to write to, or None when there is none (lines then go to the console only)."""
        self.port_fd = fd
        self.attached.set()

    def __call__(self, stage: str, **fields) -> None:
        line = json.dumps(dict(stage=stage, uptime=round(uptime(), 2), **fields), sort_keys=True)
        if self.console:
            try:
                fd = os.open(self.console, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_APPEND)
                try:
                    # own line: the console may hold another writer's partial output (systemd's
                    # terminal reset sequences), and readers match the prefix at a line's start
                    os.write(fd, ("\n" + protocol.CONSOLE_PREFIX + line + "\n").encode())
                finally:
                    os.close(fd)
            except OSError as e:
                log("console %s: %s" % (self.console, e))
        self.pending.put((line + "\n").encode())

    def _drain(self) -> None:
        self.attached.wait()
        while True:
            data = self.pending.get()
            if self.port_fd is None:
                continue
            try:
                os.write(self.port_fd, data)
            except OSError as e:
                log("port write: %s" % e)

    def flush(self, timeout: float = 2.0) -> None:
        """Give queued lines a moment to reach a connected host before the agent exits."""
        deadline = time.monotonic() + timeout
        while not self.pending.empty() and self.port_fd is not None and time.monotonic() < deadline:
            time.sleep(0.02)


class Agent:
    def __init__(self, args: argparse.Namespace):
        self.a = args
        self.report = Reporter(args.console)
        self.port_fd: int | None = None

    # -- where the config comes from ---------------------------------------------------------
    def path(self, p: str) -> str:
        """A path of the guest (under --root in tests)."""
        return os.path.join(self.a.root, p.lstrip("/"))

    def modprobe(self, *modules: str) -> None:
        if self.a.root == "/":
            subprocess.run(["modprobe", "-q", "-a", *modules], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def fw_cfg(self) -> tuple[bytes, bytes] | None:
        base = os.path.join(self.a.sysfs, "firmware/qemu_fw_cfg/by_name")
        try:
            with open(os.path.join(base, protocol.FW_CFG_CONFIG, "raw"), "rb") as c, \
                    open(os.path.join(base, protocol.FW_CFG_SCRIPT, "raw"), "rb") as s:
                return c.read(), s.read()
        except FileNotFoundError:
            return None

    def find_port(self, wait: float) -> str | None:
        """/dev/vportNpM of the named port, found through sysfs (no udev needed this early)."""
        deadline = time.monotonic() + wait
        while True:
            for name_file in glob.glob(os.path.join(self.a.sysfs, "class/virtio-ports/*/name")):
                try:
                    with open(name_file) as f:
                        if f.read().strip() == protocol.AGENT_PORT_NAME:
                            dev = os.path.join(self.a.dev, os.path.basename(os.path.dirname(name_file)))
                            if os.path.exists(dev):
                                return dev
                except OSError:
                    pass
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def read_line(self, fd: int) -> bytes:
        """One line from the port; a port with no host connected reads EOF at once, so wait."""
        buf = b""
        while b"\n" not in buf:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                chunk = b""
            if not chunk:
                time.sleep(0.05)
                continue
            buf += chunk
            if len(buf) > MAX_LINE:
                buf = b""
                self.report("failed", message="config line too long")
        return buf.split(b"\n", 1)[0]

    def wait_for_config(self, port: str) -> tuple[bytes, bytes]:
        """Block on the port until one valid config message arrives (the warm-start point)."""
        while True:
            self.report("waiting-config")
            try:
                msg = json.loads(self.read_line(self.port_fd))
                config, script = check_message(msg)
            except ValueError as e:
                self.report("failed", message="bad config message: %s" % e)
                continue
            self.apply_identity(msg)
            return json.dumps(config, indent=1, sort_keys=True).encode() + b"\n", script.encode()

    # -- identity of a restored clone ----------------------------------------------------------
    def apply_identity(self, msg: dict) -> None:
        if msg.get("time"):
            try:
                time.clock_settime(time.CLOCK_REALTIME, float(msg["time"]))
            except (OSError, ValueError) as e:
                log("cannot set the clock: %s" % e)
        seed = bytes.fromhex(msg["seed"])
        try:
            with open(self.a.urandom, "wb") as f:
                f.write(seed)
                try:  # also credit it, so the pool counts as freshly seeded
                    fcntl.ioctl(f, RNDADDENTROPY, struct.pack("ii", len(seed) * 8, len(seed)) + seed)
                except OSError:
                    pass
        except OSError as e:
            log("cannot reseed: %s" % e)
        machine_id = os.urandom(16).hex()
        write_file(self.path("/etc/machine-id"), machine_id + "\n", 0o444)
        hostname = msg.get("hostname") or ""
        if hostname:
            write_file(self.path("/etc/hostname"), hostname + "\n", 0o644)
            write_file(self.path("/etc/hosts"), "127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost\n" % hostname, 0o644)
            if self.a.root == "/":
                socket.sethostname(hostname)
        self.report("identity", machine_id=machine_id, hostname=hostname)

    # -- the start ----------------------------------------------------------------------------
    def run(self) -> int:
        self.report("agent-started")
        self.modprobe("qemu_fw_cfg", "virtio_console")
        found = self.fw_cfg()
        if found:  # cold boot: the zygote's imports run beside the rest of the boot, reported when done
            threading.Thread(target=self.report_zygote, daemon=True).start()
        port = self.find_port(0 if found else self.a.port_wait)
        if port:
            self.port_fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
        self.report.attach(self.port_fd)
        if found:
            self.report("fw-cfg")
        elif port:
            self.report_zygote()  # before the snapshot is taken
            self.prestart_desktop()  # after the zygote's imports: they would compete for the CPU
            found = self.wait_for_config(port)
        else:
            log("no fw_cfg config and no %s port: leaving the start to cloud-init" % protocol.AGENT_PORT_NAME)
            self.report("no-config")
            self.report.flush()
            return 0
        config, script = found
        write_file(self.path(protocol.CONFIG_PATH), config, 0o600)
        write_file(self.path(protocol.SCRIPT_PATH), script, 0o755)
        self.report("configured")
        code = self.start(json.loads(config))
        self.report.flush()
        return code

    def report_zygote(self) -> None:
        """Wait until the zygote (images/agent/visa_zygote.py; visa-zygote.service, started by systemd
        beside this agent on a socket systemd made) has imported Jupyter, and report it. On the warm
        path the agent waits so the saved memory holds Jupyter imported; a cold boot goes on meanwhile.
        No zygote (not in the image, disabled, died): nothing to wait for; Jupyter only starts slower."""
        status = self.zygote_status(self.a.zygote_wait)
        if status is None:
            log("no zygote ready: Jupyter will start without it")
            return
        self.report("zygote", seconds=status.get("seconds"), modules=status.get("modules"),
                    failed=status.get("failed", []))

    def prestart_desktop(self) -> None:
        """Warm template only: start the desktop (visa_instance.desktop_prestart) and wait until it
        is dressed, so every clone restores it drawn and its owner's `visa-desktop` adopts it. Run as
        --desktop-uid (the start script's useradd gives the owner the first free uid), with no account
        yet; it makes nothing secret. No instance env (tests, another image): nothing happens."""
        python = self.path(self.a.desktop_python)
        if self.a.desktop_uid < 0 or not os.access(python, os.X_OK):
            return
        t0 = time.monotonic()
        control = self.path(os.path.join(self.a.desktop_dir, "control.sock"))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": self.a.desktop_dir,
               "VISA_DESKTOP_PRESTART_DIR": self.a.desktop_dir}
        try:
            with open(self.path("/var/log/visa-desktop-prestart.log"), "ab") as out:
                proc = subprocess.Popen([python, "-m", "visa_instance.desktop_prestart"], env=env, cwd="/",
                                        user=self.a.desktop_uid, group=self.a.desktop_uid, extra_groups=[],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        except OSError as e:
            log("cannot prestart the desktop: %s" % e)
            return
        while proc.poll() is None and not os.path.exists(control) and time.monotonic() - t0 < self.a.desktop_wait:
            time.sleep(0.1)
        if os.path.exists(control):
            self.report("desktop", seconds=round(time.monotonic() - t0, 1))
        else:
            log("no prestarted desktop (status %s): clones start theirs on first use" % proc.poll())

    def zygote_status(self, timeout: float) -> dict | None:
        """The zygote's status once it says ready; None if there is no zygote socket, it wrote no
        status within `zygote_start` seconds, its process is gone, or `timeout` passed."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                with open(self.path(protocol.ZYGOTE_STATUS)) as f:
                    status = json.load(f)
            except (OSError, ValueError):
                status = None
            if status is None:  # systemd makes the socket before any service: none, no zygote
                if not os.path.exists(self.path(protocol.ZYGOTE_SOCKET)) or time.monotonic() - t0 > self.a.zygote_start:
                    return None
            elif status.get("state") == "ready":
                return status
            elif not os.path.exists(os.path.join(self.a.proc, str(status.get("pid")))):
                return None
            time.sleep(0.05)
        return None

    def wait_network(self, timeout: float) -> None:
        """The start script phones home at once: wait (bounded) for a default route."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(os.path.join(self.a.proc, "net/route")) as f:
                    if any(line.split()[1:2] == ["00000000"] for line in f.readlines()[1:]):
                        return
            except OSError:
                return
            time.sleep(0.05)
        log("no default route after %gs; starting anyway" % timeout)

    def start(self, cfg: dict) -> int:
        self.wait_network(self.a.network_wait)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "VISA_INSTANCE_CONFIG": self.path(protocol.CONFIG_PATH)}
        proc = subprocess.Popen([self.path(protocol.SCRIPT_PATH)], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.report("started")
        last = []
        reader = threading.Thread(target=forward_stderr, args=(proc.stderr, last), daemon=True)
        reader.start()
        watcher = StageWatcher(cfg, self.report)
        while proc.poll() is None and not watcher.complete:
            watcher.check()
            time.sleep(0.1)
        proc.wait()  # Jupyter's whole life: the start script waits for it
        reader.join(2)
        watcher.check()
        if proc.returncode:
            self.report("failed", message=(last[-1] if last else "start script exited %d" % proc.returncode))
        else:
            self.report("exited")
        return proc.returncode


class StageWatcher:
    """The start script's stages, as seen from outside: account exists, data mounted, port open."""

    def __init__(self, cfg: dict, report):
        self.cfg, self.report, self.done = cfg, report, set()

    @property
    def complete(self) -> bool:
        return "jupyter-up" in self.done

    def check(self) -> None:
        if "account" not in self.done:
            try:
                pwd.getpwnam(self.cfg["account"])
                self.mark("account")
            except KeyError:
                return
        if "data" not in self.done:
            if not all(os.path.ismount(m["mount_point"]) for m in self.cfg.get("mounts", [])):
                return
            self.mark("data")
        if "jupyter-up" not in self.done:
            try:
                socket.create_connection(("127.0.0.1", int(self.cfg["port"])), timeout=0.2).close()
                self.mark("jupyter-up", port=int(self.cfg["port"]))
            except OSError:
                pass

    def mark(self, stage: str, **fields) -> None:
        self.done.add(stage)
        self.report(stage, **fields)


def forward_stderr(stream, last: list) -> None:
    for line in stream:
        line = protocol.mask_secrets(line.rstrip())
        log(line)
        last[:] = [line.removeprefix("visa-start: ")[:300]]


def check_message(msg) -> tuple[dict, str]:
    """The warm-start message, checked before anything of it is used (raises ValueError)."""
    if not isinstance(msg, dict):
        raise ValueError("not a JSON object")
    config, script = msg.get("config"), msg.get("script")
    if not isinstance(config, dict) or not all(k in config for k in ("account", "command", "port")):
        raise ValueError("config must be an instance config object (account, command, port)")
    if not isinstance(script, str) or not script.startswith("#!"):
        raise ValueError("script must be the start script text")
    seed = msg.get("seed")
    if not isinstance(seed, str) or len(seed) < 32 or not re.fullmatch(r"[0-9a-fA-F]+", seed) or len(seed) % 2:
        raise ValueError("seed must be at least 16 random bytes in hex")
    hostname = msg.get("hostname", "")
    if hostname and (not isinstance(hostname, str) or not HOSTNAME.match(hostname)):
        raise ValueError("hostname must be a DNS label")
    if "time" in msg and not isinstance(msg["time"], (int, float)):
        raise ValueError("time must be seconds since the epoch")
    return config, script


def write_file(path: str, data, mode: int) -> None:
    """Atomic write with the mode set before the content is visible (the config is a secret)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="/", help="the guest's root (tests point it at a directory)")
    p.add_argument("--sysfs", default="/sys")
    p.add_argument("--proc", default="/proc")
    p.add_argument("--dev", default="/dev")
    p.add_argument("--urandom", default="/dev/urandom")
    p.add_argument("--console", default="/dev/ttyS0", help="serial console for VISA-STAGE lines ('' for none)")
    p.add_argument("--port-wait", type=float, default=3.0, help="seconds to wait for the virtio port")
    p.add_argument("--zygote-start", type=float, default=60,
                   help="seconds for the zygote to write its status (none by then: there is no zygote)")
    p.add_argument("--zygote-wait", type=float, default=600, help="seconds for the zygote's imports")
    p.add_argument("--desktop-python", default="/opt/visahub/instance-env/bin/python",
                   help="the instance env's Python, to prestart the desktop in a warm template")
    p.add_argument("--desktop-uid", type=int, default=1000, help="uid the owner's account will get (-1: no prestart)")
    p.add_argument("--desktop-dir", default="/tmp/.visa-desktop-prestart",
                   help="the prestarted desktop's control directory (visa_instance.desktop_prestart)")
    p.add_argument("--desktop-wait", type=float, default=180, help="seconds for the template's desktop")
    p.add_argument("--network-wait", type=float, default=3.0,
                   help="seconds to wait for a default route before the start (it phones home at once; "
                   "a missed first report is not fatal, Jupyter itself retries the hub)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    try:
        return Agent(parse_args(argv)).run()
    except Exception as e:  # a bug: say so on the console, never with the config's content
        log("agent failed: %s: %s" % (type(e).__name__, e))
        Reporter(parse_args(argv).console)("failed", message="boot agent error: %s" % type(e).__name__)
        return 1


if __name__ == "__main__":
    sys.exit(main())
