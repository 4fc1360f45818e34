"""Running things in a root file system being built: mounts, commands, stage archives, host apt.

The build host's network goes through an intercepting proxy with its own CA: commands in the chroot
get the host's CA bundle through a file copied in for the build only (and removed with the mounts),
never through the image's own trust store.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

HOST_CA = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
#: where the build-time CA bundle lives inside the chroot (deleted before the image is made)
CHROOT_CA = "/run/visa-build/ca.crt"
#: what the build needs from the host; each missing one is named with its Debian package
HOST_TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs", "qemu-img": "qemu-utils",
              "tar": "tar", "mount": "mount", "chroot": "coreutils"}


class BuildError(RuntimeError):
    """A stage failed; the message says which command and the end of its output."""


def missing_tools() -> list[str]:
    return [f"{tool} (apt-get install {pkg})" for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)]


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: Path | None = None,
        capture: bool = False) -> str:
    """Run argv (never a shell); output goes to the stage log, and its tail into a failure."""
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
                "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
    proc = subprocess.run(list(argv), env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if not capture else subprocess.PIPE, text=True)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout if not capture else proc.stderr}\n")
    if proc.returncode:
        tail = (proc.stderr if capture else proc.stdout or "").strip().splitlines()[-15:]
        raise BuildError(f"`{' '.join(argv[:4])}{' ...' if len(argv) > 4 else ''}` exited with "
                         f"{proc.returncode}:\n    " + "\n    ".join(tail))
    return proc.stdout


def in_root(root: Path, argv: Sequence[str], **kw) -> str:
    """Run argv inside the chroot (with the build-time CA bundle for anything that does HTTPS)."""
    env = {"SSL_CERT_FILE": CHROOT_CA, "REQUESTS_CA_BUNDLE": CHROOT_CA, "PIP_CERT": CHROOT_CA,
           "PYTHONDONTWRITEBYTECODE": "", **kw.pop("env", {})}
    return run(["chroot", str(root), *argv], env=env, **kw)


@contextlib.contextmanager
def mounted(root: Path, binds: Mapping[str, Path] = {}) -> Iterator[None]:
    """/proc, /sys, /dev, /dev/pts, a tmpfs /run with the CA bundle, and read-only bind mounts
    (`{path in chroot: host path}`); all unmounted again, whatever happens."""
    done: list[Path] = []

    def mount(argv: list[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        run(["mount", *argv, str(target)])
        done.append(target)

    # no service may start in the chroot while packages install
    policy = root / "usr/sbin/policy-rc.d"
    try:
        mount(["-t", "proc", "proc"], root / "proc")
        mount(["-t", "sysfs", "sysfs"], root / "sys")
        mount(["--bind", "/dev"], root / "dev")
        mount(["-t", "devpts", "devpts"], root / "dev/pts")
        mount(["-t", "tmpfs", "tmpfs"], root / "run")
        ca = root / CHROOT_CA.lstrip("/")
        ca.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HOST_CA, ca)
        for inside, host in binds.items():
            mount(["--bind", "-o", "ro", str(host)], root / inside.lstrip("/"))
        policy.parent.mkdir(parents=True, exist_ok=True)
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        yield
    finally:
        policy.unlink(missing_ok=True)
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mounts_under(path: Path, mounts_file: Path = Path("/proc/mounts")) -> list[str]:
    """Mount points at or below `path`, deepest first (octal escapes of /proc/mounts decoded)."""
    prefix = str(path.resolve()).rstrip("/")
    points = []
    for line in mounts_file.read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rmtree that first unmounts what a killed build left mounted below `path` (a bind-mounted
    /dev must never be emptied) and refuses if anything stays mounted."""
    if not path.exists():
        return
    release_mounts(path)
    if left := mounts_under(path):
        raise BuildError(f"cannot clean {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path)


def release_mounts(path: Path) -> None:
    """Unmount everything below `path` (what a failed or killed step, debootstrap's own /proc
    included, left mounted); the files stay for a look at what went wrong."""
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def archive_suffix() -> str:
    return ".tar.zst" if shutil.which("zstd") else ".tar"


def _compressor(fast: str) -> list[str]:
    """zstd when the host has it (3x smaller, about as fast as no compression), else none."""
    return ["-I", fast] if shutil.which("zstd") else []


def save_stage(root: Path, archive: Path) -> None:
    """Archive a finished stage (numeric owners, xattrs), atomically."""
    tmp = archive.with_suffix(".part")
    run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", *_compressor("zstd -T0 -3"),
         "-C", str(root), "-cpf", str(tmp), "."])
    tmp.rename(archive)


def restore_stage(archive: Path, root: Path) -> None:
    remove_tree(root)
    root.mkdir(parents=True)
    run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", *_compressor("zstd -T0"),
         "-C", str(root), "-xpf", str(archive)])


def host_mirrors(sources_dir: Path = Path("/etc/apt")) -> dict[str, str]:
    """{suite: mirror URI} from the host's apt sources (deb822 `.sources` and one-line `.list`),
    so the image uses the same mirror (and proxy path) as the host."""
    out: dict[str, str] = {}
    for f in sorted([sources_dir / "sources.list", *sources_dir.glob("sources.list.d/*.sources"),
                     *sources_dir.glob("sources.list.d/*.list")]):
        if not f.is_file():
            continue
        text = f.read_text()
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                    for suite in fields.get("Suites", "").split():
                        out.setdefault(suite, fields.get("URIs", "").split()[0])
        else:
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
                if m:
                    out.setdefault(m.group(2), m.group(1))
    return out


def sources_list(suites: Sequence[str], components: Sequence[str], mirrors: Mapping[str, str],
                 default: str = "http://deb.debian.org/debian") -> str:
    """The image's /etc/apt/sources.list: one line per suite, on the host's mirror for it."""
    lines = []
    for suite in suites:
        uri = mirrors.get(suite) or (default + "-security" if suite.endswith("-security") else default)
        lines.append(f"deb {uri} {suite} {' '.join(components)}")
    return "\n".join(lines) + "\n"


def progress(stage: str, message: str) -> None:
    print(f"[image] {stage:<11} {message}", flush=True)
    sys.stdout.flush()
