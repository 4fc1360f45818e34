"""The first three build stages: a minimal Debian, the pinned apt packages, the Python env.

Each function takes the root file system left by the previous stage and changes it in place; the
builder archives the result under the stage's hash.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from .bootfiles import write_initramfs_config
from .chroot import CHROOT_CA, BuildError, host_mirrors, in_root, mounted, run, sources_list
from .recipe import Recipe, repo_source_files

APT_OPTS = ["-o", f"Acquire::https::CAInfo={CHROOT_CA}", "-o", "Dpkg::Options::=--force-confdef",
            "-o", "Dpkg::Options::=--force-confold", "-o", "APT::Install-Recommends=false",
            "-o", "Acquire::Retries=3"]
#: documentation, man pages and translations are not installed (smaller image, faster build)
DPKG_NODOC = """\
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
"""
WHEELS_IN_ROOT = "/run/visa-build/wheels"
#: [apt] unpacked packages and their versions, as unpacked (dpkg does not know them)
UNPACKED_RECORD = "/var/lib/visa/unpacked-packages.json"


def debootstrap(recipe: Recipe, root: Path, cache: Path, log: Path) -> None:
    """`debootstrap --variant=minbase` from the host's mirror; downloaded .debs are kept in cache."""
    base = recipe.data["base"]
    mirror = host_mirrors().get(base["suite"], "http://deb.debian.org/debian")
    cache.mkdir(parents=True, exist_ok=True)
    argv = ["debootstrap", f"--variant={base['variant']}", f"--components={','.join(base['components'])}",
            f"--cache-dir={cache}"]
    if base.get("bootstrap_include"):
        argv.append("--include=" + ",".join(base["bootstrap_include"]))
    run(argv + [base["suite"], str(root), mirror], log=log)
    nodoc = root / "etc/dpkg/dpkg.cfg.d/01-visa-nodoc"
    nodoc.write_text(DPKG_NODOC)


def install_packages(recipe: Recipe, root: Path, log: Path) -> None:
    """apt-get install of the recipe's packages (pinned by the lock) and the kernel, with a minimal
    initramfs configured first so the kernel's postinst builds the small one."""
    base = recipe.data["base"]
    suites = [base["suite"], *base.get("extra_suites", [])]
    (root / "etc/apt/sources.list").write_text(sources_list(suites, base["components"], host_mirrors()))
    write_initramfs_config(root, list(recipe.kernel.get("initramfs_modules", [])),
                           udev=recipe.kernel.get("initramfs_udev", True))
    _apt_install(recipe, root, recipe.base_apt_packages, log, then=unpack_packages)


def install_extra_packages(recipe: Recipe, root: Path, log: Path) -> None:
    """The selected extras' packages (pinned), on top of the `packages` stage the plain recipe
    shares: a variant rebuilds only this and the last two stages (the system stage calls it)."""
    if recipe.extra_apt_packages:
        _apt_install(recipe, root, recipe.extra_apt_packages, log)


def _apt_install(recipe: Recipe, root: Path, packages: list[str], log: Path, then=None) -> None:
    """apt-get update + install of `packages` pinned by the lock (`then(recipe, root, log)` inside
    the mounted chroot), leaving no package lists or .debs in the root."""
    with mounted(root):
        in_root(root, ["apt-get", *APT_OPTS, "update", "-q"], log=log)
        try:
            in_root(root, ["apt-get", *APT_OPTS, "install", "-y", "-q", *recipe.pinned_apt(packages)], log=log)
        except BuildError as e:
            if "not found" in str(e) and "Version" in str(e):
                raise BuildError(f"{e}\nThe mirror no longer has a version pinned in "
                                 f"{recipe.path.stem}.lock.json: run `build.py --update-lock`.") from None
            raise
        if then is not None:
            then(recipe, root, log)
        in_root(root, ["apt-get", "clean"], log=log)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)


def unpack_packages(recipe: Recipe, root: Path, log: Path) -> None:
    """[apt] unpacked: each pinned .deb downloaded and its files unpacked into the root, without its
    dependencies and without telling dpkg; name and version are kept in UNPACKED_RECORD for the
    manifest. Needs the chroot mounted (its /run is a tmpfs)."""
    versions = {}
    for pinned in recipe.pinned_apt(recipe.unpacked_packages):
        name = pinned.split("=", 1)[0]
        shutil.rmtree(root / "run/visa-unpack", ignore_errors=True)
        (root / "run/visa-unpack").mkdir(parents=True)
        # apt-get download writes into the working directory, which chroot cannot set: a fixed
        # `sh -c` changes it, the arguments stay separate ("$@")
        in_root(root, ["sh", "-c", 'cd /run/visa-unpack && apt-get "$@"', "sh", *APT_OPTS, "download", "-q", pinned],
                log=log)
        debs = list((root / "run/visa-unpack").glob(f"{name}_*.deb"))
        if len(debs) != 1:
            raise BuildError(f"apt-get download {pinned} gave {len(debs)} files")
        deb = f"/run/visa-unpack/{debs[0].name}"
        versions[name] = in_root(root, ["dpkg-deb", "-f", deb, "Version"], capture=True).strip()
        in_root(root, ["dpkg-deb", "-x", deb, "/"], log=log)
        shutil.rmtree(root / "run/visa-unpack")
    record = root / UNPACKED_RECORD.lstrip("/")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(versions, indent=1, sort_keys=True) + "\n")


def _requirements(recipe: Recipe, repo: Path) -> str:
    """One requirements text: the repo's requirement files, then the recipe's pinned packages."""
    lines = []
    for name in recipe.python.get("requirement_files", []):
        lines += [ln for ln in (repo / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return "\n".join(lines + list(recipe.python.get("packages", []))) + "\n"


def _host_pip_env() -> dict[str, str]:
    """The host's pip configuration and CA bundle, as the host's own pip would see them."""
    keep = ("PIP_", "SSL_CERT", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
            "http_proxy", "https_proxy", "no_proxy", "XDG_CONFIG_HOME")
    return {k: v for k, v in os.environ.items() if k.startswith(keep)}


def target_tags(python_version: str, glibc: str) -> list[str]:
    """pip download options selecting wheels for the image's interpreter and glibc (pure)."""
    major, minor = python_version.split(".")[:2]
    glibc_minor = int(glibc.split(".")[1])
    opts = ["--python-version", python_version, "--implementation", "cp",
            "--abi", f"cp{major}{minor}", "--abi", "abi3", "--abi", "none", "--only-binary=:all:"]
    platforms = [f"manylinux_2_{m}_x86_64" for m in range(glibc_minor, 4, -1)]
    legacy = {17: "manylinux2014_x86_64", 12: "manylinux2010_x86_64", 5: "manylinux1_x86_64"}
    platforms += [tag for m, tag in legacy.items() if m <= glibc_minor] + ["linux_x86_64", "any"]
    for plat in platforms:
        opts += ["--platform", plat]
    return opts


def _image_python(root: Path) -> tuple[str, str]:
    """(python version, glibc version) of the image, asked of its own interpreter."""
    out = in_root(root, ["python3", "-c", "import os, platform; "
                         "print(platform.python_version(), os.confstr('CS_GNU_LIBC_VERSION').split()[1])"])
    version, glibc = out.split()
    return version, glibc


def install_python(recipe: Recipe, root: Path, repo: Path, wheelhouse: Path, log: Path) -> None:
    """A venv of the image's python3 at [python] env, from wheels the host fetched.

    The host's pip downloads the wheels (its config, index and CA bundle apply) for the image's own
    interpreter and glibc; the chroot installs them with no network and no pip config."""
    env_dir = recipe.python["env"]
    wheelhouse.mkdir(parents=True, exist_ok=True)
    reqs = wheelhouse.parent / f"requirements-{recipe.name}.txt"
    reqs.write_text(_requirements(recipe, repo))
    constraints = wheelhouse.parent / f"constraints-{recipe.name}.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in recipe.lock.get("python", {}).items()))
    run([sys.executable, "-m", "pip", "download", "-q", *target_tags(*_image_python(root)),
         "-d", str(wheelhouse), "-r", str(reqs), "-c", str(constraints)], env=_host_pip_env(), log=log)
    with mounted(root, {WHEELS_IN_ROOT: wheelhouse}):
        build = root / "run/visa-build"
        shutil.copyfile(reqs, build / "requirements.txt")
        shutil.copyfile(constraints, build / "constraints.txt")
        in_root(root, ["python3", "-m", "venv", env_dir], log=log)
        in_root(root, [*_pip_install(env_dir), "-r", "/run/visa-build/requirements.txt",
                       "-c", "/run/visa-build/constraints.txt"], env={"PIP_CONFIG_FILE": "/dev/null"}, log=log)
        if remove := recipe.python.get("remove", []):
            in_root(root, [f"{env_dir}/bin/python", "-m", "pip", "uninstall", "-q", "-y", *remove],
                    env={"PIP_CONFIG_FILE": "/dev/null"}, log=log)
    run(["chmod", "-R", "a+rX", str(root / env_dir.lstrip("/"))])


def _pip_install(env_dir: str) -> list[str]:
    return [f"{env_dir}/bin/python", "-m", "pip", "install", "-q", "--no-cache-dir", "--no-index",
            "--disable-pip-version-check", "--find-links", WHEELS_IN_ROOT]


def install_repo_packages(recipe: Recipe, root: Path, repo: Path, work: Path, log: Path) -> None:
    """This repository's wheel, built from a copy holding only [python] repo_packages (never in the
    shared checkout), installed --no-deps like scripts/setup.sh does for the host's instance env."""
    packages = recipe.python.get("repo_packages", [])
    if not packages:
        return
    src, out = work / "repo-src", work / "repo-wheel"
    shutil.rmtree(src, ignore_errors=True)
    for f in repo_source_files(repo, packages):
        dest = src / f.relative_to(repo)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        env=_host_pip_env(), log=log)
    wheels = list(out.glob("*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one wheel of this repository in {out}, found {len(wheels)}")
    env_dir = recipe.python["env"]
    with mounted(root, {WHEELS_IN_ROOT: out}):
        in_root(root, [*_pip_install(env_dir), "--no-deps", "--force-reinstall",
                       f"{WHEELS_IN_ROOT}/{wheels[0].name}"], env={"PIP_CONFIG_FILE": "/dev/null"}, log=log)
    run(["chmod", "-R", "a+rX", str(root / env_dir.lstrip("/"))])
