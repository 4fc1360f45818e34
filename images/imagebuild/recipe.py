"""The image recipe: a TOML file read into a checked, immutable `Recipe` (pure, no I/O but reads).

Each build stage is cached under a hash of exactly what it depends on (its part of the recipe, the
lock, the files it copies in, and the previous stage's hash), so editing the agent rebuilds only the
last stages and an unchanged recipe rebuilds nothing.
"""
from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PKG = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_SIZE = re.compile(r"^([0-9]+)([MG])$")
_UNIT = re.compile(r"^[A-Za-z0-9@._-]+\.(service|timer|socket|target|mount|automount|path)$")
#: the stages of a build, in order; each one's output is the next one's input
STAGES = ("debootstrap", "packages", "python", "visa", "system", "image")


class RecipeError(ValueError):
    """A recipe or lock file that cannot be built; the message says what to fix."""


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    data: Mapping[str, Any]
    lock: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    extras: tuple[str, ...] = ()

    @property
    def variant(self) -> str:
        """The recipe name plus its extras: each variant has its own cache directory and `current`."""
        return "+".join([self.name, *self.extras])

    # -- views used by the stages ------------------------------------------------------------
    @property
    def suite(self) -> str:
        return self.data["base"]["suite"]

    @property
    def apt_packages(self) -> list[str]:
        """Top-level apt packages: the recipe's list, the kernel, and any selected extras."""
        return list(dict.fromkeys(self.base_apt_packages + self.extra_apt_packages))

    @property
    def base_apt_packages(self) -> list[str]:
        """What the `packages` stage installs: the recipe's list and the kernel, never an extra's, so
        a variant's first four stages hash (and are cached) exactly as the plain recipe's."""
        return list(dict.fromkeys([*self.data["apt"]["packages"], self.data["kernel"]["package"]]))

    @property
    def extra_apt_packages(self) -> list[str]:
        """The selected extras' packages, installed by the `system` stage on top of the shared ones."""
        pkgs = [p for extra in self.extras for p in self.data["apt"].get("extras", {})[extra]]
        return [p for p in dict.fromkeys(pkgs) if p not in self.base_apt_packages]

    @property
    def unpacked_packages(self) -> list[str]:
        """Packages whose files are unpacked without their dependencies ([apt] unpacked)."""
        return list(self.data["apt"].get("unpacked", []))

    def pinned_apt(self, packages: list[str] | None = None) -> list[str]:
        """`name=version` for packages the lock pins, plain names for the others."""
        pins = self.lock.get("apt", {})
        return [f"{p}={pins[p]}" if p in pins else p for p in (self.apt_packages if packages is None else packages)]

    @property
    def python(self) -> Mapping[str, Any]:
        return self.data["python"]

    @property
    def kernel(self) -> Mapping[str, Any]:
        return self.data["kernel"]

    @property
    def system(self) -> Mapping[str, Any]:
        """[system], with the settings of each selected extra ([system.extras.<name>]) on top."""
        merged = {k: v for k, v in self.data["system"].items() if k != "extras"}
        for extra in self.extras:
            merged.update(self.data["system"].get("extras", {}).get(extra, {}))
        return merged

    @property
    def image(self) -> Mapping[str, Any]:
        return self.data["image"]

    def image_size_mib(self) -> int:
        number, unit = _SIZE.match(self.image["size"]).groups()
        return int(number) * (1024 if unit == "G" else 1)

    def stage_inputs(self, stage: str, repo: Path) -> Any:
        """What a stage's output depends on besides the previous stage (JSON-able)."""
        d = self.data
        if stage == "debootstrap":
            return d["base"]
        if stage == "packages":
            return {"apt": self.pinned_apt(self.base_apt_packages), "kernel": d["kernel"]["package"],
                    "unpacked": self.pinned_apt(self.unpacked_packages)}
        if stage == "python":
            files = [repo / f for f in self.python.get("requirement_files", [])]
            python = {k: v for k, v in self.python.items() if k != "repo_packages"}
            return {"python": python, "lock": self.lock.get("python", {}), "files": files_digest(files, repo)}
        if stage == "visa":
            return files_digest(repo_source_files(repo, self.python.get("repo_packages", [])), repo)
        if stage == "system":  # the agent's files and the code of the last two stages
            images = Path(__file__).resolve().parent.parent
            files = system_files(images)
            extra = {"extra_apt": self.pinned_apt(self.extra_apt_packages)} if self.extras else {}
            return {"system": dict(self.system), "kernel": dict(self.kernel), "files": files_digest(files, images),
                    **extra}
        if stage == "image":
            return dict(self.image)
        raise KeyError(stage)

    def stage_hashes(self, repo: Path) -> dict[str, str]:
        """The cumulative hash of every stage (a stage's hash covers all stages before it)."""
        out, previous = {}, self.name
        for stage in STAGES:
            blob = json.dumps([previous, stage, self.stage_inputs(stage, repo)], sort_keys=True, default=str)
            previous = out[stage] = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return out


def system_files(images: Path) -> list[Path]:
    """What the system stage copies in: the agent's files (not a __pycache__ that running the
    tests leaves beside them, or the hash would depend on whether they ran) and its own code."""
    return sorted(f for f in (images / "agent").glob("*") if f.is_file()) + \
        [images / "imagebuild" / "system.py", images / "imagebuild" / "bootfiles.py"]


def files_digest(files: Iterable[Path], root: Path) -> dict[str, str]:
    """{relative path: sha256} of files (so moving the checkout does not change the hash)."""
    out = {}
    for f in sorted(set(files)):
        rel = str(f.relative_to(root)) if f.is_relative_to(root) else str(f)
        out[rel] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "missing"
    return out


def repo_source_files(repo: Path, packages: Iterable[str]) -> list[Path]:
    """The files of this repository's package that the image gets: its build files and the named
    top-level packages (what `pip install .` of a copy holding only those reads)."""
    files = [repo / n for n in ("setup.cfg", "pyproject.toml", "setup.py", "MANIFEST.in") if (repo / n).exists()]
    for name in packages:
        pkg = repo / name
        if not pkg.is_dir():
            raise RecipeError(f"recipe: [python] repo_packages: no package {name!r} in {repo}")
        files += sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def _check(data: Mapping[str, Any], extras: Iterable[str]) -> None:
    """Reject what would fail half-way through a long build, with a message naming the field."""
    for section in ("base", "kernel", "apt", "python", "system", "image"):
        if not isinstance(data.get(section), dict):
            raise RecipeError(f"recipe: missing section [{section}]")
    for key in ("suite", "variant"):
        if not isinstance(data["base"].get(key), str):
            raise RecipeError(f"recipe: [base] {key} must be a string")
    pkgs = data["apt"].get("packages")
    if not isinstance(pkgs, list) or not pkgs:
        raise RecipeError("recipe: [apt] packages must be a non-empty list")
    available = data["apt"].get("extras", {})
    for extra in extras:
        if extra not in available:
            raise RecipeError(f"recipe: unknown extra {extra!r} (available: {', '.join(sorted(available)) or 'none'})")
    for extra in data["system"].get("extras", {}):
        if extra not in available:
            raise RecipeError(f"recipe: [system.extras.{extra}] names no [apt.extras] entry")
    unpacked = data["apt"].get("unpacked", [])
    if not isinstance(unpacked, list):
        raise RecipeError("recipe: [apt] unpacked must be a list of package names")
    for p in pkgs + unpacked + [data["kernel"].get("package", "")] + [x for e in available.values() for x in e]:
        if not isinstance(p, str) or not _PKG.match(p):
            raise RecipeError(f"recipe: {p!r} is not a Debian package name")
    for key in ("initramfs_modules", "boot_modules", "no_autoload"):
        modules = data["kernel"].get(key, [])
        if not isinstance(modules, list) or not all(isinstance(m, str) and re.fullmatch(r"[a-z0-9_-]+", m)
                                                    for m in modules):
            raise RecipeError(f"recipe: [kernel] {key} must be a list of kernel module names")
    if not isinstance(data["kernel"].get("initramfs_udev", True), bool):
        raise RecipeError("recipe: [kernel] initramfs_udev must be true or false")
    if not isinstance(data["kernel"].get("cmdline"), str) or "root=" not in data["kernel"]["cmdline"]:
        raise RecipeError("recipe: [kernel] cmdline must be a string with root=")
    for unit in data["system"].get("mask", []) + data["system"].get("enable", []):
        if not _UNIT.match(unit):
            raise RecipeError(f"recipe: {unit!r} is not a systemd unit name")
    if not _SIZE.match(str(data["image"].get("size", ""))):
        raise RecipeError("recipe: [image] size must look like 8G or 4096M")
    if not all(isinstance(p, str) and re.fullmatch(r"[a-z_][a-z0-9_]*", p)
               for p in data["python"].get("repo_packages", [])):
        raise RecipeError("recipe: [python] repo_packages must be top-level package names of this repository")
    if not all(isinstance(p, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p)
               for p in data["python"].get("remove", [])):
        raise RecipeError("recipe: [python] remove must be a list of distribution names")
    env = data["python"].get("env", "")
    if not env.startswith("/") or ".." in env.split("/"):
        raise RecipeError("recipe: [python] env must be an absolute path")


def load_lock(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    try:
        lock = json.loads(path.read_text())
    except ValueError as e:
        raise RecipeError(f"{path.name}: not valid JSON ({e})") from None
    if not all(isinstance(lock.get(k, {}), dict) for k in ("apt", "python")):
        raise RecipeError(f"{path.name}: 'apt' and 'python' must be objects of name -> version")
    return lock


def lock_path(recipe_path: Path) -> Path:
    return recipe_path.with_name(recipe_path.stem + ".lock.json")


def load_recipe(path: Path, extras: Iterable[str] = ()) -> Recipe:
    """Read and check a recipe and its lock file (`<name>.lock.json` beside it)."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"no recipe at {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path.name}: {e}") from None
    extras = tuple(sorted(set(extras)))
    _check(data, extras)
    return Recipe(name=data.get("name", path.stem), path=path, data=data,
                  lock=load_lock(lock_path(path)), extras=extras)


def write_lock(path: Path, apt: Mapping[str, str], python: Mapping[str, str]) -> None:
    path.write_text(json.dumps({"apt": dict(sorted(apt.items())), "python": dict(sorted(python.items()))},
                               indent=1) + "\n")
