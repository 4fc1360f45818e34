"""What a VM instance is told at first boot: one pure renderer for every VM backend.

The hub renders an *instance config* (plain JSON: the owner's account, the data mounts as argv
lists, screen and keyboard, the single-user command and its environment, where to phone home) and
ships it next to one constant start script. Nothing a person typed is ever pasted into a script:
the script is the same bytes for every instance and reads its values from the JSON, so hostile
names, titles or layouts can only ever be *values*.

- OpenStack: `render_cloud_config` → cloud-init user-data (`#cloud-config`, YAML made by a YAML
  dumper) that writes the two files and starts the script through systemd.
- QEMU (later): `fw_cfg_files` → the same two files as fw_cfg blobs.

The instance config holds the hub's API token for the instance: it is a secret, written 0600 root.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Iterable, Mapping, Sequence

import yaml

#: where the files land inside the instance
CONFIG_PATH = "/etc/visa/instance.json"
SCRIPT_PATH = "/usr/local/sbin/visa-start"
UNIT_PATH = "/etc/systemd/system/visa-instance.service"
#: Nova's limit on user_data (base64 of it); we check the raw size with margin
MAX_USER_DATA = 48 * 1024

#: the stages an instance reports, in order (the hub shows its own text for each)
STAGES = ("started", "account", "data", "jupyter-up", "failed")

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
        "opt/org.visahub/instance.json": config_json(config).encode(),
        "opt/org.visahub/visa-start": START_SCRIPT.encode(),
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

# The start script: constant, stdlib-only Python run as root at first boot. It reads every value
# from the JSON config and runs commands as argv lists (no shell). VISA_BIND_ADDRESS (set by the
# caller, never by a user) overrides where Jupyter listens: a VM listens on all interfaces; the
# test boot emulator gives each instance its own loopback address.
START_SCRIPT = r'''#!/usr/bin/python3
"""VISA instance start (rendered by visa_spawner.backends.guest.cloudinit; identical on every instance)."""
import json, os, pwd, re, select, shlex, socket, subprocess, sys, time, urllib.error, urllib.parse, urllib.request

CONFIG = os.environ.get("VISA_INSTANCE_CONFIG", "/etc/visa/instance.json")
LOG = os.environ.get("VISA_INSTANCE_LOG", "/var/log/visa-instance.log")
SECRETISH = re.compile(r"(token|secret|password|key)=\S+", re.I)
# a warm-started VM's zygote (images/agent/visa_zygote.py) has Jupyter's modules imported already
ZYGOTE = os.environ.get("VISA_ZYGOTE_SOCKET", "/run/visa/zygote.sock")
# written once Jupyter first came up: a later boot is a server started again after shelving
STARTED = os.environ.get("VISA_STARTED_MARKER", "/var/lib/visa/started")


def log(msg):
    sys.stderr.write("visa-start: %s\n" % msg)
    sys.stderr.flush()


def phone(cfg, stage, message="", tries=1, **extra):
    """Tell the hub how far the start got; never blocks the start for long, never fatal."""
    url, token = cfg.get("phone_home_url"), cfg.get("env", {}).get("JUPYTERHUB_API_TOKEN")
    if not url or not token:
        return
    body = json.dumps(dict(stage=stage, message=message[:500], **extra)).encode()
    for attempt in range(tries):
        try:
            req = urllib.request.Request(url, data=body, method="POST", headers={
                "Authorization": "token " + token, "Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).close()
            return
        except Exception as e:  # the hub may be restarting: carry on
            log("phone home %s failed: %s" % (stage, type(e).__name__))
            time.sleep(min(1 + attempt, 5))


def fail(cfg, message):
    log(message)
    phone(cfg, "failed", message, tries=3)
    sys.exit(1)


def ensure_account(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
                       check=True, stdout=subprocess.DEVNULL)
        return pwd.getpwnam(name)


def mount_data(cfg):
    for m in cfg["mounts"]:
        os.makedirs(m["mount_point"], exist_ok=True)
        for argv in m["commands"]:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode:
                log("mount command %s failed: %s" % (argv[0], SECRETISH.sub(r"\1=[secret]", r.stdout)[-400:]))
                fail(cfg, "The data of proposal %s could not be mounted (%s exited with %d)."
                     % (m["proposal"], os.path.basename(argv[0]), r.returncode))
        if not os.statvfs(m["mount_point"]).f_flag & os.ST_RDONLY:
            fail(cfg, "The data of proposal %s is not mounted read-only; refusing to start." % m["proposal"])


def set_keyboard(cfg):
    try:
        with open("/etc/default/keyboard", "w") as f:
            f.write("XKBLAYOUT=%s\n" % shlex.quote(cfg["keyboard"]))
    except OSError as e:
        log("cannot write the keyboard layout: %s" % e)


def outbound_address(url):
    """The address this machine uses to reach the hub (what the hub will connect back to)."""
    host = urllib.parse.urlparse(url).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))
        return s.getsockname()[0]


class ZygoteChild:
    """Jupyter run by the zygote as the owner; the zygote says its pid, then its exit status."""

    def __init__(self, sock, timeout):
        self.sock, self.buf, self.returncode = sock, b"", None
        self.pid = int(json.loads(self._line(timeout))["pid"])  # after its imports, on a cold boot

    def _line(self, timeout):
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

    def poll(self, timeout=0):
        if self.returncode is None:
            line = self._line(timeout)
            if line is not None:
                self.returncode = int(json.loads(line).get("exit", 1))
        return self.returncode

    def wait(self):
        return self.poll(None)

    def kill(self):
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass


def launch(argv, env, pw, out, timeout):
    """Jupyter as the owner, in its own session: through the zygote when there is one, else Popen."""
    if os.path.exists(ZYGOTE):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(ZYGOTE)
            request = json.dumps({"argv": argv, "env": env, "cwd": pw.pw_dir, "uid": pw.pw_uid,
                                  "gid": pw.pw_gid}).encode() + b"\n"
            devnull = os.open(os.devnull, os.O_RDONLY)
            try:
                sent = socket.send_fds(sock, [request], [devnull, out.fileno(), out.fileno()])
            finally:
                os.close(devnull)
            sock.sendall(request[sent:])
            return ZygoteChild(sock, timeout)
        except (OSError, ValueError, KeyError, TypeError) as e:
            sock.close()  # a zygote that answers later finds nobody and kills what it started
            log("zygote not usable (%s): starting Jupyter directly" % type(e).__name__)
    return subprocess.Popen(argv, env=env, cwd=pw.pw_dir, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def resume(cfg):
    """A later boot: this start's config (new token, options) comes from the hub, asked with the
    server's resume key. No start waiting for it (404): the server stays idle, Jupyter is not run."""
    url = cfg["phone_home_url"].rsplit("/", 1)[0] + "/resume"
    for attempt in range(60):
        try:
            req = urllib.request.Request(url, data=b"{}", method="POST", headers={
                "Authorization": "visa-resume " + cfg["resume_key"], "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                new = json.load(r)
            break
        except urllib.error.HTTPError as e:
            if e.code in (403, 404):
                log("the hub has no start waiting for this server (%d): not starting Jupyter" % e.code)
                sys.exit(0)
            log("resume: hub answered %d" % e.code)
        except Exception as e:  # the hub may be restarting
            log("resume: %s" % type(e).__name__)
        time.sleep(min(1 + attempt, 5))
    else:
        log("resume: the hub did not answer; not starting Jupyter")
        sys.exit(1)
    new["resume_key"] = cfg["resume_key"]  # the hub keeps only its fingerprint
    tmp = CONFIG + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(new, f)
    os.replace(tmp, CONFIG)
    return new


def main():
    with open(CONFIG) as f:
        cfg = json.load(f)
    if cfg.get("resume_key") and os.path.exists(STARTED):
        cfg = resume(cfg)
    phone(cfg, "started", "booted")
    pw = ensure_account(cfg["account"])
    phone(cfg, "account")
    mount_data(cfg)
    phone(cfg, "data")
    set_keyboard(cfg)
    bind = os.environ.get("VISA_BIND_ADDRESS") or cfg.get("bind_address") or "0.0.0.0"
    port = int(cfg["port"])
    env = dict(cfg["env"])
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name, SHELL=pw.pw_shell,
               PATH=":".join(list(cfg.get("path_prefix", [])) + ["/usr/local/bin", "/usr/bin", "/bin"]))
    argv = list(cfg["command"]) + ["--ServerApp.ip=%s" % bind, "--ServerApp.port=%d" % port,
                                   "--FileContentsManager.preferred_dir=%s" % pw.pw_dir]
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    out = open(LOG, "ab")
    os.chmod(LOG, 0o600)
    deadline = time.monotonic() + float(cfg.get("start_timeout", 300))
    proc = launch(argv, env, pw, out, deadline - time.monotonic())
    probe = "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind
    while True:
        if proc.poll() is not None:
            fail(cfg, "Jupyter exited during start (status %d)." % proc.returncode)
        try:
            socket.create_connection((probe, port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                fail(cfg, "Jupyter did not listen within %g s." % cfg.get("start_timeout", 300))
            time.sleep(0.1)
    address = probe if probe != "127.0.0.1" or bind == "127.0.0.1" else outbound_address(cfg["phone_home_url"])
    phone(cfg, "jupyter-up", tries=5, address=address, port=port)
    os.makedirs(os.path.dirname(STARTED), exist_ok=True)
    open(STARTED, "w").close()
    sys.exit(proc.wait())


if __name__ == "__main__":
    main()
'''
