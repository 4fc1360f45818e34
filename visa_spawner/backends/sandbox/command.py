"""Pure builders for the sandbox backend: account names and bubblewrap command lines.

Kept free of I/O so they are tested as plain lists (like kubespawner's `objects.py`).
Everything is an argument list: nothing a user types ever reaches a shell.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

ACCOUNT_PREFIX = "visa-"
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def account_name(owner: str, server_name: str, prefix: str = ACCOUNT_PREFIX) -> str:
    """A deterministic Unix account name for one instance (<= 32 chars, valid for useradd).

    Deterministic so that a restarted hub finds the same account, home and cgroup again.
    """
    digest = hashlib.sha256(f"{owner}/{server_name}".encode()).hexdigest()[:12]
    return f"{prefix}{digest}"


def sandbox_hostname(server_name: str) -> str:
    """The hostname inside an instance's sandbox: its server's name (prompts, the desktop's panel),
    fixed when bubblewrap starts (a UTS namespace its processes cannot rename)."""
    return server_name[:60] or "visa"


def proposal_mount_point(proposal: str) -> str:
    """`/data/<proposal>`; refuses ids that could escape `/data`."""
    if not _SAFE_SEGMENT.match(proposal) or proposal in (".", ".."):
        raise ValueError(f"unsafe proposal id for a mount point: {proposal!r}")
    return f"/data/{proposal}"


@dataclass(frozen=True)
class SandboxLayout:
    """What the sandbox sees; host paths on the left of each bind."""

    uid: int
    gid: int
    home_host: str
    home_inside: str
    instance_env: str
    data_host: str = ""
    data_inside: str = ""
    hostname: str = "visa"
    extra_ro_binds: tuple[tuple[str, str], ...] = field(default_factory=tuple)


# The root file system a sandbox gets: the host's /usr (read-only) with the merged-/usr links.
USR_LINKS = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"))


def bwrap_argv(
    layout: SandboxLayout,
    command: list[str] | tuple[str, ...],
    *,
    setpriv: str = "setpriv",
    bwrap: str = "bwrap",
    info_fd: int | None = None,
    block_fd: int | None = None,
) -> list[str]:
    """The full command line: drop to the instance's uid, then enter a fresh bubblewrap sandbox.

    Dropping privileges *before* bwrap makes the sandbox really run as that uid (bwrap run as
    root with --uid maps the user to root outside). Every namespace is private, the network
    too: the hub reaches Jupyter, and Jupyter the hub, only through the instance's bridge
    (`network.py`), which learns the sandbox's pid from `info_fd` and releases it through
    `block_fd` once its routes exist.
    """
    argv = [
        setpriv, f"--reuid={layout.uid}", f"--regid={layout.gid}", "--clear-groups",
        "--no-new-privs",
        bwrap,
        "--unshare-all", "--new-session",
        # no nested user namespaces (the way to mount, unshare and reach more kernel code)
        "--unshare-user", "--disable-userns",
        "--hostname", layout.hostname,
        "--ro-bind", "/usr", "/usr",
    ]
    for target, link in USR_LINKS:
        argv += ["--symlink", target, link]
    argv += [
        "--ro-bind", "/etc", "/etc",
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--tmpfs", "/var/tmp",
        "--tmpfs", "/run",
        "--ro-bind", layout.instance_env, layout.instance_env,
        "--bind", layout.home_host, layout.home_inside,
    ]
    if layout.data_host:
        argv += ["--ro-bind", layout.data_host, layout.data_inside]
    for host, inside in layout.extra_ro_binds:
        argv += ["--ro-bind", host, inside]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    if block_fd is not None:
        argv += ["--block-fd", str(block_fd)]
    # the first process installs the seccomp filter every process of the instance inherits
    argv += ["--chdir", layout.home_inside, "--", *seccomp_wrapper(layout.instance_env), *command]
    return argv


def seccomp_wrapper(instance_env: str) -> list[str]:
    """The instance env's `visa_instance.seccomp`: install the filter, then exec the command."""
    return [f"{instance_env.rstrip('/')}/bin/python", "-m", "visa_instance.seccomp", "--"]


def sandbox_env(base: dict[str, str], *, home: str, user: str, instance_env: str) -> dict[str, str]:
    """The environment inside: the hub's variables for Jupyter plus a clean, minimal base.

    Nothing from the hub process's own environment leaks in.
    """
    env = {
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "PATH": f"{instance_env}/bin:/usr/local/bin:/usr/bin:/bin",
        "XDG_RUNTIME_DIR": "/tmp",
    }
    env.update({k: v for k, v in base.items() if v is not None})
    return env
