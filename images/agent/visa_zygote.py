#!/usr/bin/env python3
"""VISA zygote: Jupyter's modules imported early, once: in the template VM before its memory is
saved, and on a cold boot while the rest of the boot goes on.

Under TCG emulation a cold `jupyterhub-singleuser` spends most of its start importing Python
modules. A warm-start snapshot is taken while the boot agent waits for its configuration; if this
process has already imported Jupyter then, every restored clone gets those modules for free.

Started by systemd at boot (visa-zygote.service, as root, with the instance env's Python, at a
higher CPU priority: on a cold boot its imports are what Jupyter waits for), on the root-only Unix
socket visa-zygote.socket made before any service started, so the start script never misses it and a
request made during the imports waits in its queue. It writes its state to zygote.json beside the
socket (`{"state": "importing", "pid"}`, then `{"state": "ready", "seconds", "modules", "failed"}`):
the boot agent waits for "ready" before a warm-start snapshot and reports it on a cold boot. Then it
serves ONE request on the socket, from the start script (visa_spawner/backends/guest/start_script.py):
a JSON line `{"argv", "env", "cwd", "uid", "gid"}` with stdin/stdout/stderr passed as file descriptors. It
forks; the child drops to the owner (groups, gid, uid: the same as the start script's own Popen
would do), reseeds what the snapshot shares with every clone, and runs the command's Python script
in-process. The parent answers `{"pid": N}`, then `{"exit": code}` when the child ends, and forwards
SIGTERM. Anything it cannot run in-process (not a Python script of this interpreter, or an env var
that modules read at import time has another value) is exec'd: slower, never wrong.

Stdlib and the instance env's `visa_instance.zygote` (shared with the sandboxes' warm pool: after the
fork it gives the owner's environment to trait defaults taken at import, e.g. HubAuth.base_url, the
login cookie's path). Nothing of the config or environment is ever printed.
"""
from __future__ import annotations

import ctypes
import json
import os
import random
import runpy
import shutil
import signal
import socket
import sys
import time

import visa_protocol as protocol  # beside this file (the hub's visa_spawner/backends/guest/protocol.py)

# shared with the sandboxes' warm pool: what to import ahead, which variables forbid reusing the imports,
# and the trait defaults installed classes took from the zygote's environment at import
from visa_instance.zygote import in_process_script, preload, refresh_env_defaults

PR_SET_DUMPABLE = 4
MAX_REQUEST = 1 << 20


def listen_private(path: str) -> socket.socket:
    """A listening Unix socket only root may use (0600 in a 0700 directory)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(old)
    server.listen(1)
    return server


def inherited_socket() -> socket.socket | None:
    """The listening socket systemd passed (socket activation: fd 3, LISTEN_PID/LISTEN_FDS); the
    variables are removed so Jupyter and its children never see them."""
    pid, count = os.environ.pop("LISTEN_PID", ""), os.environ.pop("LISTEN_FDS", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid == str(os.getpid()) and count.isdigit() and int(count) >= 1:
        return socket.socket(fileno=3)
    return None


def write_status(path: str, **status) -> None:
    """zygote.json, replaced atomically (the boot agent polls it)."""
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def log(msg: str) -> None:
    sys.stderr.write("visa-zygote: %s\n" % msg)
    sys.stderr.flush()


def recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk or len(data) > MAX_REQUEST:
            raise ValueError("incomplete request")
        data += chunk
    request = json.loads(data.split(b"\n", 1)[0])
    if len(fds) != 3 or not isinstance(request.get("argv"), list) or not request["argv"] \
            or not isinstance(request.get("env"), dict):
        raise ValueError("a request is argv, env, cwd, uid, gid and three file descriptors")
    return request, fds


def become(request: dict, fds: list[int], template_env: dict) -> None:
    """The child: the owner's process running the command (never returns)."""
    code = 127
    try:
        os.setsid()
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # the boot's priority (Nice= of the unit) ends here
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        script = in_process_script(str(request["argv"][0]), request["env"], template_env)
        os.setgroups([])
        os.setgid(int(request["gid"]))
        os.setuid(int(request["uid"]))
        if os.getuid() == 0 and int(request["uid"]) != 0:
            raise PermissionError("still root after setuid")
        # setuid made the process non-dumpable: /proc/self/* would belong to root
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        os.chdir(request.get("cwd") or "/")
        env = {str(k): str(v) for k, v in request["env"].items()}
        if not script:
            os.execve(shutil.which(request["argv"][0], path=env.get("PATH", os.defpath)) or request["argv"][0],
                      request["argv"], env)
        os.environ.clear()
        os.environ.update(env)
        refresh_env_defaults(env)  # else HubAuth.base_url is "/": the owner's login cookie on every path
        random.seed()  # the template's generator state is in every clone's memory
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.argv = [script, *request["argv"][1:]]
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - the child must never return into the zygote
        log("could not run %s: %s" % (os.path.basename(str(request["argv"][0])), type(e).__name__))
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def main() -> int:
    t0 = time.monotonic()
    path = protocol.ZYGOTE_SOCKET if len(sys.argv) < 2 else sys.argv[1]
    status = os.path.splitext(path)[0] + ".json"
    # before the imports: a start script that asks meanwhile waits for them (run by hand, without
    # systemd's socket, the zygote binds it itself)
    server = inherited_socket() or listen_private(path)
    write_status(status, state="importing", pid=os.getpid())
    loaded, failed = preload(sys.prefix)
    template_env = dict(os.environ)
    ready = {"seconds": round(time.monotonic() - t0, 2), "modules": len(loaded), "failed": failed}
    write_status(status, state="ready", pid=os.getpid(), **ready)
    print(json.dumps(ready), flush=True)
    conn, _ = server.accept()
    server.close()
    os.unlink(path)
    try:
        request, fds = recv_request(conn)
    except (ValueError, OSError) as e:
        log("bad request: %s" % e)
        conn.sendall(b'{"error": "bad request"}\n')
        return 2
    pid = os.fork()
    if pid == 0:
        conn.close()
        become(request, fds, template_env)
    for fd in fds:
        os.close(fd)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    try:
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except OSError:  # the start script gave up waiting and starts Jupyter itself: only one may run
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        log("the start script left before the zygote was ready; nothing runs")
        return 1
    _, status = os.waitpid(pid, 0)
    try:
        conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
