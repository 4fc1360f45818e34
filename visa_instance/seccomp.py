"""A seccomp filter for everything that runs in a sandbox instance, then exec the command.

``python -m visa_instance.seccomp -- jupyterhub-singleuser …`` is the first thing bubblewrap
runs (`visa_spawner.backends.sandbox.command.bwrap_argv`): it installs the filter (inherited
by every process the instance ever starts, and not removable) and execs the command.

The filter answers EPERM to system calls an analysis session never needs and that widen the
kernel's attack surface or the sandbox's: namespaces and mounts (``unshare``, ``setns``,
``mount`` and the new mount API), kernel modules and kexec, ``bpf``, ``perf_event_open``,
``userfaultfd``, ``io_uring``, the kernel keyring, clock and swap control, ``reboot``,
``open_by_handle_at``; and any call made through another ABI (x32, 32-bit compat), whose
numbers differ. ``ptrace`` stays allowed (people debug their own programs); the Jupyter server
makes itself non-dumpable so no process in the instance can trace it or read its memory
(`visa_instance.extension`). New user namespaces are also refused by bubblewrap
(``--disable-userns``).

The program is built here as plain bytes (classic BPF, as libseccomp would emit), so it is
tested as data and needs no native library.
"""
from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

# <linux/audit.h>, <linux/seccomp.h>, <linux/filter.h>
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x06
X32_SYSCALL_BIT = 0x40000000
EPERM = 1

DENIED = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "swapon", "swapoff", "reboot", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "quotactl", "lookup_dcookie",
    "open_by_handle_at", "vhangup",
)
SYSCALLS = {
    "x86_64": {
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249, "swapon": 167,
        "swapoff": 168, "reboot": 169, "acct": 163, "settimeofday": 164, "clock_settime": 227,
        "clock_adjtime": 305, "adjtimex": 159, "syslog": 103, "quotactl": 179, "lookup_dcookie": 212,
        "open_by_handle_at": 304, "vhangup": 153,
    },
    "aarch64": {
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "keyctl": 219, "add_key": 217, "request_key": 218, "swapon": 224,
        "swapoff": 225, "reboot": 142, "acct": 89, "settimeofday": 170, "clock_settime": 112,
        "clock_adjtime": 266, "adjtimex": 171, "syslog": 116, "quotactl": 60, "lookup_dcookie": 18,
        "open_by_handle_at": 265, "vhangup": 58,
    },
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def filter_program(arch: str) -> bytes:
    """The BPF program (``struct sock_filter[]``) for `arch` (``platform.machine()`` names)."""
    numbers = sorted({SYSCALLS[arch][name] for name in DENIED})
    deny = _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM)
    head = [
        _insn(BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        deny,  # another ABI (32-bit compat): other numbers, refused as a whole
        _insn(BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    checks = [(BPF_JGE_K, X32_SYSCALL_BIT)] if arch == "x86_64" else []
    checks += [(BPF_JEQ_K, nr) for nr in numbers]
    body = [_insn(code, len(checks) - i, 0, k) for i, (code, k) in enumerate(checks)]  # jt: to `deny`
    return b"".join(head + body + [_insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW), deny])


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def install(arch: str | None = None) -> None:
    """Install the filter on this process (and everything it will start). Raises OSError."""
    arch = arch or platform.machine()
    if arch not in SYSCALLS:
        raise OSError(f"no seccomp filter for {arch}")
    program = filter_program(arch)
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    fprog = _SockFprog(len(program) // 8, program)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: python -m visa_instance.seccomp -- COMMAND [ARGS...]")
    try:
        install()
    except OSError as e:  # never start an instance without its filter
        sys.exit(f"visa_instance.seccomp: {e}")
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
