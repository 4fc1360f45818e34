#!/usr/bin/python3
"""VISA instance start (rendered by visa_spawner.backends.guest.cloudinit; identical on every instance).

Run as root at boot (by cloud-init's unit on OpenStack, by the boot agent on QEMU). Stdlib only and
alone: the guest gets this file's text and the instance config, nothing else, so its protocol
names are copies of visa_spawner.backends.guest.protocol's (tests compare them). Every value comes
from the JSON config and every command is an argv list (no shell). VISA_BIND_ADDRESS (set by the
caller, never by a user) overrides where Jupyter listens: a VM listens on all interfaces; the test
boot emulator gives each instance its own loopback address.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import select
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CONFIG = os.environ.get("VISA_INSTANCE_CONFIG", "/etc/visa/instance.json")
LOG = os.environ.get("VISA_INSTANCE_LOG", "/var/log/visa-instance.log")
SECRETISH = re.compile(r"(token|secret|password|key)(\"?\s*[=:]\s*)(\"[^\"]*\"?|\S+)", re.IGNORECASE)
# a zygote (images/agent/visa_zygote.py) has Jupyter's modules imported already
ZYGOTE = os.environ.get("VISA_ZYGOTE_SOCKET", "/run/visa/zygote.sock")
# written once Jupyter first came up: a later boot is a server started again after shelving
STARTED = os.environ.get("VISA_STARTED_MARKER", "/var/lib/visa/started")
ANY_ADDRESS = ("0.0.0.0", "", "::")


def log(msg: str) -> None:
    sys.stderr.write(f"visa-start: {msg}\n")
    sys.stderr.flush()


def mask_secrets(text: str) -> str:
    """Command output with secret-looking values masked (protocol.mask_secrets)."""
    return SECRETISH.sub(r"\1\2[secret]", text)


def phone_request(cfg: dict, stage: str, message: str = "", **extra) -> urllib.request.Request | None:
    """The phone-home POST for a stage; None when the config says nowhere to phone."""
    url, token = cfg.get("phone_home_url"), cfg.get("env", {}).get("JUPYTERHUB_API_TOKEN")
    if not url or not token:
        return None
    body = json.dumps(dict(stage=stage, message=message[:500], **extra)).encode()
    return urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": "token " + token, "Content-Type": "application/json"})


def phone(cfg: dict, stage: str, message: str = "", tries: int = 1, **extra) -> None:
    """Tell the hub how far the start got; never blocks the start for long, never fatal."""
    req = phone_request(cfg, stage, message, **extra)
    if req is None:
        return
    for attempt in range(tries):
        try:
            urllib.request.urlopen(req, timeout=5).close()
            return
        except Exception as e:  # noqa: BLE001  (the hub may be restarting: carry on)
            log(f"phone home {stage} failed: {type(e).__name__}")
            time.sleep(min(1 + attempt, 5))


def fail(cfg: dict, message: str) -> None:
    log(message)
    phone(cfg, "failed", message, tries=3)
    sys.exit(1)


def ensure_account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
                       check=True, stdout=subprocess.DEVNULL)
        return pwd.getpwnam(name)


def mount_data(cfg: dict) -> None:
    for m in cfg["mounts"]:
        os.makedirs(m["mount_point"], exist_ok=True)
        for argv in m["commands"]:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            if r.returncode:
                log(f"mount command {argv[0]} failed: {mask_secrets(r.stdout)[-400:]}")
                fail(cfg, f"The data of proposal {m['proposal']} could not be mounted "
                     f"({os.path.basename(argv[0])} exited with {r.returncode}).")
        if not os.statvfs(m["mount_point"]).f_flag & os.ST_RDONLY:
            fail(cfg, f"The data of proposal {m['proposal']} is not mounted read-only; refusing to start.")


def keyboard_file(layout: str) -> str:
    """/etc/default/keyboard for the owner's layout (a value, quoted for the shell that reads it)."""
    return f"XKBLAYOUT={shlex.quote(layout)}\n"


def set_keyboard(cfg: dict) -> None:
    try:
        with open("/etc/default/keyboard", "w") as f:
            f.write(keyboard_file(cfg["keyboard"]))
    except OSError as e:
        log(f"cannot write the keyboard layout: {e}")


def outbound_address(url: str) -> str:
    """The address this machine uses to reach the hub (what the hub will connect back to)."""
    host = urllib.parse.urlparse(url).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))
        return s.getsockname()[0]


def jupyter_argv(cfg: dict, bind: str, home: str) -> list[str]:
    """The single-user command, told where to listen and to open in the owner's home."""
    return [*cfg["command"], f"--ServerApp.ip={bind}", f"--ServerApp.port={int(cfg['port'])}",
            f"--FileContentsManager.preferred_dir={home}"]


def jupyter_env(cfg: dict, pw: pwd.struct_passwd) -> dict[str, str]:
    """The hub's environment for the server, plus the owner's login variables and PATH."""
    path = [*cfg.get("path_prefix", []), "/usr/local/bin", "/usr/bin", "/bin"]
    return {**cfg["env"], "HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name, "SHELL": pw.pw_shell,
            "PATH": ":".join(path)}


def bind_address(cfg: dict, override: str = "") -> str:
    return override or cfg.get("bind_address") or "0.0.0.0"


def probe_host(bind: str) -> str:
    """Where to see whether Jupyter listens: loopback when it listens on every interface."""
    return "127.0.0.1" if bind in ANY_ADDRESS else bind


def resume_url(phone_home_url: str) -> str:
    """The hub's resume endpoint, beside phone-home (…/visa/phone-home → …/visa/resume)."""
    return phone_home_url.rsplit("/", 1)[0] + "/resume"


def zygote_request(argv: list[str], env: dict[str, str], pw: pwd.struct_passwd) -> bytes:
    """The one JSON line the zygote reads: what to run, and as whom."""
    return json.dumps({"argv": argv, "env": env, "cwd": pw.pw_dir, "uid": pw.pw_uid, "gid": pw.pw_gid}).encode() + b"\n"


class ZygoteChild:
    """Jupyter run by the zygote as the owner; the zygote says its pid, then its exit status."""

    def __init__(self, sock: socket.socket, timeout: float | None) -> None:
        self.sock, self.buf, self.returncode = sock, b"", None
        self.pid = int(json.loads(self._line(timeout))["pid"])  # after its imports, on a cold boot

    def _line(self, timeout: float | None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else max(0, deadline - time.monotonic())
            if not select.select([self.sock], [], [], left)[0]:
                return None
            chunk = self.sock.recv(4096)
            if not chunk:
                return b'{"exit": 1}'  # the zygote died with its child
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def poll(self, timeout: float | None = 0) -> int | None:
        if self.returncode is None:
            line = self._line(timeout)
            if line is not None:
                self.returncode = int(json.loads(line).get("exit", 1))
        return self.returncode

    def wait(self) -> int | None:
        return self.poll(None)

    def kill(self) -> None:
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass


def launch(argv: list[str], env: dict[str, str], pw: pwd.struct_passwd, out, timeout: float):
    """Jupyter as the owner, in its own session: through the zygote when there is one, else Popen."""
    if os.path.exists(ZYGOTE):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(ZYGOTE)
            request = zygote_request(argv, env, pw)
            devnull = os.open(os.devnull, os.O_RDONLY)
            try:
                sent = socket.send_fds(sock, [request], [devnull, out.fileno(), out.fileno()])
            finally:
                os.close(devnull)
            sock.sendall(request[sent:])
            return ZygoteChild(sock, timeout)
        except (OSError, ValueError, KeyError, TypeError) as e:
            sock.close()  # a zygote that answers later finds nobody and kills what it started
            log(f"zygote not usable ({type(e).__name__}): starting Jupyter directly")
    return subprocess.Popen(argv, env=env, cwd=pw.pw_dir, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def resume(cfg: dict) -> dict:
    """A later boot: this start's config (new token, options) comes from the hub, asked with the
    server's resume key. No start waiting for it (404): the server stays idle, Jupyter is not run.
    A server built ahead for a warm pool (`pooled`) waits instead, asking again until a
    participant adopts it (the hub holds each request up to `pool_wait` s)."""
    pooled, wait = bool(cfg.get("pooled")), float(cfg.get("pool_wait", 25))
    body = json.dumps({"wait": wait} if pooled else {}).encode()
    attempt = 0
    while attempt < 60:
        attempt += 1
        try:
            req = urllib.request.Request(resume_url(cfg["phone_home_url"]), data=body, method="POST", headers={
                "Authorization": "visa-resume " + cfg["resume_key"], "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=wait + 10 if pooled else 10) as r:
                new = json.load(r)
            break
        except urllib.error.HTTPError as e:
            if e.code == 404 and pooled:
                attempt = 0  # not adopted yet: wait for the next participant
                time.sleep(1)  # a hub that does not hold the request (restarted) is not hammered
                continue
            if e.code in (403, 404):
                log(f"the hub has no start waiting for this server ({e.code}): not starting Jupyter")
                sys.exit(0)
            log(f"resume: hub answered {e.code}")
        except Exception as e:  # noqa: BLE001  (the hub may be restarting)
            log(f"resume: {type(e).__name__}")
        time.sleep(min(attempt, 5))
    else:
        log("resume: the hub did not answer; not starting Jupyter")
        sys.exit(1)
    new["resume_key"] = cfg["resume_key"]  # the hub keeps only its fingerprint
    tmp = CONFIG + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(new, f)
    os.replace(tmp, CONFIG)
    return new


def wait_listening(cfg: dict, proc, host: str, port: int, deadline: float) -> None:
    """Until Jupyter accepts on its port; a Jupyter that exits or stays deaf fails the start."""
    while True:
        if proc.poll() is not None:
            fail(cfg, f"Jupyter exited during start (status {proc.returncode}).")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                fail(cfg, f"Jupyter did not listen within {cfg.get('start_timeout', 300):g} s.")
            time.sleep(0.1)


def main() -> None:
    with open(CONFIG) as f:
        cfg = json.load(f)
    if cfg.get("resume_key") and (cfg.get("pooled") or os.path.exists(STARTED)):
        cfg = resume(cfg)
    phone(cfg, "started", "booted")
    pw = ensure_account(cfg["account"])
    phone(cfg, "account")
    mount_data(cfg)
    phone(cfg, "data")
    set_keyboard(cfg)
    bind = bind_address(cfg, os.environ.get("VISA_BIND_ADDRESS", ""))
    port = int(cfg["port"])
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    out = open(LOG, "ab")  # noqa: SIM115  (Jupyter's output for its whole life)
    os.chmod(LOG, 0o600)
    deadline = time.monotonic() + float(cfg.get("start_timeout", 300))
    proc = launch(jupyter_argv(cfg, bind, pw.pw_dir), jupyter_env(cfg, pw), pw, out, deadline - time.monotonic())
    probe = probe_host(bind)
    wait_listening(cfg, proc, probe, port, deadline)
    address = probe if probe != "127.0.0.1" or bind == "127.0.0.1" else outbound_address(cfg["phone_home_url"])
    phone(cfg, "jupyter-up", tries=5, address=address, port=port)
    os.makedirs(os.path.dirname(STARTED), exist_ok=True)
    open(STARTED, "w").close()
    sys.exit(proc.wait())


if __name__ == "__main__":
    main()
