"""Which acceleration really works on this host: hardware KVM, or QEMU's TCG emulator.

`/dev/kvm` existing proves little: on these machines it is a software PVM hypervisor
(`/sys/module/kvm_pvm`) under which stock guest kernels hang. Detection reads sysfs and
/proc/cpuinfo (pure, testable on fake directory trees); `probe_kvm` optionally boots QEMU for a
moment to confirm that KVM accepts a VM before trusting it.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Acceleration:
    """What to put on QEMU's command line, and why (shown to admins and printed by the benchmark)."""

    name: str  # "kvm" or "tcg"
    accel_args: tuple[str, ...]
    cpu_args: tuple[str, ...]
    reason: str

    @property
    def argv(self) -> list[str]:
        return [*self.accel_args, *self.cpu_args]


#: TCG with one host thread per vCPU; `max` gives the guest every emulated CPU feature
TCG = Acceleration("tcg", ("-accel", "tcg,thread=multi"), ("-cpu", "max"), "")


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def detect_acceleration(root: str | Path = "/", mode: str = "auto") -> Acceleration:
    """Pick kvm or tcg from what the host shows under `root` (`/` in production).

    `mode` is the admin's choice: "auto", "kvm" (forced) or "tcg" (forced).
    """
    root = Path(root)
    if mode == "tcg":
        return Acceleration(TCG.name, TCG.accel_args, TCG.cpu_args, "TCG forced by configuration")
    kvm = Acceleration("kvm", ("-accel", "kvm"), ("-cpu", "host,-arch-capabilities"), "")
    if mode == "kvm":
        return Acceleration(kvm.name, kvm.accel_args, kvm.cpu_args, "KVM forced by configuration")
    sysmod = root / "sys" / "module"
    if (sysmod / "kvm_pvm").exists():
        return Acceleration(TCG.name, TCG.accel_args, TCG.cpu_args,
                            "TCG: /dev/kvm is the software PVM hypervisor (kvm_pvm), stock kernels hang under it")
    if not (root / "dev" / "kvm").exists():
        return Acceleration(TCG.name, TCG.accel_args, TCG.cpu_args, "TCG: no /dev/kvm on this host")
    try:
        flags = _cpu_flags((root / "proc" / "cpuinfo").read_text())
    except OSError:
        flags = set()
    vendor_module = "kvm_intel" if "vmx" in flags else "kvm_amd" if "svm" in flags else ""
    if not vendor_module:
        return Acceleration(TCG.name, TCG.accel_args, TCG.cpu_args,
                            "TCG: the CPU shows no hardware virtualisation (vmx/svm)")
    if not (sysmod / vendor_module).exists():
        return Acceleration(TCG.name, TCG.accel_args, TCG.cpu_args,
                            f"TCG: /dev/kvm exists but {vendor_module} is not loaded")
    # nested/odd hosts reject arch-capabilities in -cpu host; turning it off is harmless elsewhere
    return Acceleration(kvm.name, kvm.accel_args, kvm.cpu_args,
                        f"KVM: hardware virtualisation ({vendor_module})")


async def probe_kvm(qemu_binary: str, timeout: float = 10) -> bool:
    """Does QEMU start a (diskless, firmware-only) VM under KVM and answer on its monitor?

    Catches hosts where the modules look right but KVM refuses the VM (permissions, nesting)."""
    proc = await asyncio.create_subprocess_exec(
        qemu_binary, "-accel", "kvm", "-cpu", "host,-arch-capabilities", "-m", "64", "-nodefaults",
        "-display", "none", "-S", "-monitor", "stdio",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(b"info kvm\nquit\n"), timeout)
    except (TimeoutError, OSError):
        proc.kill()
        await proc.wait()
        return False
    return proc.returncode == 0 and b"kvm support: enabled" in out


async def choose_acceleration(qemu_binary: str, mode: str = "auto", probe: bool = True) -> Acceleration:
    """`detect_acceleration` on the real host, confirmed by `probe_kvm` when it says KVM."""
    accel = await asyncio.get_running_loop().run_in_executor(None, detect_acceleration, "/", mode)
    if accel.name == "kvm" and mode == "auto" and probe and not await probe_kvm(qemu_binary):
        return Acceleration(TCG.name, TCG.accel_args, TCG.cpu_args, "TCG: a probe VM did not start under KVM")
    return accel


def host_memory(meminfo: str | None = None) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in MB from /proc/meminfo (or the given text)."""
    if meminfo is None:
        with open("/proc/meminfo") as f:
            meminfo = f.read()
    values = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        if rest.strip():
            values[key] = int(rest.split()[0]) // 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", values.get("MemFree", 0))


def capacity_problem(memory_mb: int, *, running: int, max_vms: int, total_mb: int, available_mb: int,
                     overhead_mb: int, reserve_mb: int) -> str:
    """Why one more VM of `memory_mb` does not fit on this host ('' if it does).

    `running` counts VMs up or booting; `available_mb` is MemAvailable less what booting VMs
    will still take."""
    need = memory_mb + overhead_mb
    if need + reserve_mb > total_mb:
        return (f"This host is too small for this plan: a {memory_mb} MB virtual machine needs "
                f"{need + reserve_mb} MB and the host has {total_mb} MB.")
    if running >= max_vms:
        return (f"This host is full: {running} of {max_vms} virtual machines are running. "
                "Stop an instance or try again later.")
    if available_mb - reserve_mb < need:
        return (f"This host is full: {max(available_mb, 0)} MB of memory is free and a {memory_mb} MB "
                f"virtual machine needs {need + reserve_mb} MB. Stop an instance or try again later.")
    return ""


def pid_runs(pid: int, needle: str) -> bool:
    """Is `pid` alive (not a zombie) and is `needle` (an overlay path) in its command line?
    Pids get reused."""
    try:
        return needle in "\0".join(psutil.Process(int(pid)).cmdline())
    except (psutil.Error, ValueError):
        return False
