"""Issue 15, item 5: what code in a sandbox instance may ask of the kernel.

No nested user namespaces (bubblewrap ``--disable-userns``), a seccomp filter on the system
calls an analysis session never needs (`visa_instance.seccomp`), and a Jupyter server whose
memory (OAuth tokens, cookie secret) no other process of the instance can read.
"""
from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from visa_instance.seccomp import DENIED, SYSCALLS, filter_program
from visa_spawner.backends.sandbox.command import SandboxLayout, bwrap_argv

PROBE = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def err(r):
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
print("unshare-user", err(libc.unshare(0x10000000)))
print("unshare-mount", err(libc.unshare(0x00020000)))
print("keyctl", err(libc.syscall(250, 0, 0, 0, 0)))
print("bpf", err(libc.syscall(321, 0, 0, 0)))
print("io_uring", err(libc.syscall(425, 1, 0)))
print("seccomp", [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0])
try:
    open(f"/proc/{os.getppid()}/environ", "rb").read()
    print("server-environ readable")
except OSError as e:
    print("server-environ", errno.errorcode[e.errno])
print("done")
"""


def probe(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)


# -- the pieces, as data ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(SYSCALLS))
def test_the_filter_program_denies_each_listed_call_and_allows_the_rest(arch: str) -> None:
    prog = filter_program(arch)
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    assert insns[-2] == (0x06, 0, 0, 0x7FFF0000) and insns[-1] == (0x06, 0, 0, 0x00050001)
    denied = {k for code, jt, jf, k in insns if code == 0x15 and jt and insns[insns.index((code, jt, jf, k)) + jt + 1]
              == insns[-1]}
    assert {SYSCALLS[arch][name] for name in DENIED} <= denied
    assert len(insns) < 256  # every jump fits in a byte


def test_the_sandbox_refuses_nested_user_namespaces_and_runs_the_filter_first() -> None:
    layout = SandboxLayout(uid=1234, gid=1234, home_host="/h", home_inside="/home/u",
                           instance_env="/opt/visahub/instance-env")
    argv = bwrap_argv(layout, ["jupyterhub-singleuser", "--debug"])
    assert "--disable-userns" in argv and "--unshare-user" in argv
    assert argv[argv.index("--", argv.index("--chdir")) + 1:] == [
        "/opt/visahub/instance-env/bin/python", "-m", "visa_instance.seccomp", "--", "jupyterhub-singleuser", "--debug"]


def test_the_filter_holds_for_a_process_and_its_children() -> None:
    out = subprocess.run([sys.executable, "-m", "visa_instance.seccomp", "--", sys.executable, "-c", PROBE],
                         capture_output=True, text=True, timeout=60)
    seen = probe(out.stdout)
    assert seen["seccomp"] == "2", out
    for call in ("unshare-user", "unshare-mount", "keyctl", "bpf", "io_uring"):
        assert seen[call] == "EPERM", (call, seen)


# -- a real sandbox instance --------------------------------------------------------------------

@pytest.mark.root
def test_code_in_an_instance_meets_the_filter(collab_hub, person) -> None:
    from tests.hubtools import run_code

    alice = person("alice")
    r = alice.new_instance(name="Hardened", proposal="P-2026-011", plan="sandbox-small", screen="1280x720",
                           keyboard="us")
    assert r.status_code == 302, r.text[:300]
    server = r.headers["location"].rsplit("/", 1)[1]
    try:
        collab_hub.wait_ready("alice", server)
        seen = probe(run_code(alice, "alice", server, PROBE))
        assert seen.get("seccomp") == "2", seen
        assert seen["unshare-user"] in ("EPERM", "ENOSPC")  # the filter, or bwrap's limit behind it
        for call in ("unshare-mount", "keyctl", "bpf", "io_uring"):
            assert seen[call] == "EPERM", (call, seen)
        assert seen["server-environ"] == "EACCES", seen  # the Jupyter server's memory and environment
    finally:
        collab_hub.delete_server("alice", server)
