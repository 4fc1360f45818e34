"""`ImageBuilder`: run the stages of a recipe, each cached under its hash, and publish the result.

Layout under `<cache-dir>/<recipe name>[+<extra>...]/` (a variant never replaces another's `current`):
    current -> <image hash>/            switched atomically once a build is complete
    <image hash>/{base.qcow2, vmlinuz, initrd.img, vmlinux, initrd.cpio, manifest.json, build.log}
    stages/<stage>-<hash>.tar[.zst]     the root file system after each stage
    debs/, wheels/                      downloads (debootstrap's .debs, Python wheels)
    work/                               the tree being built (removed afterwards)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from traitlets import Bool, Integer, List, Unicode, default
from traitlets.config import Application

from . import stages, system
from .chroot import (
    BuildError,
    archive_suffix,
    missing_tools,
    progress,
    release_mounts,
    remove_tree,
    restore_stage,
    save_stage,
)
from .recipe import STAGES, Recipe, RecipeError, load_recipe, lock_path, write_lock

HERE = Path(__file__).resolve().parent.parent
#: stages whose result is archived (system is quick to redo and image is the published result)
ARCHIVED = ("debootstrap", "packages", "python", "visa")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class ImageBuilder(Application):
    """Builds the VISA analysis image (qcow2 + kernel + initrd + manifest) from a recipe."""

    name = "visa-image-build"
    description = "Build the VISA analysis VM image. Idempotent: an unchanged recipe rebuilds nothing."

    recipe = Unicode(help="The recipe TOML file (default: images/recipes/debian-bookworm.toml).").tag(config=True)
    cache_dir = Unicode("/var/cache/visahub/images",
                        help="Where stage archives, downloads and finished images are kept.").tag(config=True)
    repo = Unicode(help="The VISA Hub checkout whose visa_instance and requirements go into the image."
                   ).tag(config=True)
    extras = List(Unicode(), help="Optional package groups of the recipe's [apt.extras] (e.g. openstack)."
                  ).tag(config=True)
    update_lock = Bool(False, help="Write the recipe's lock file from what this build installed.").tag(config=True)
    force = Bool(False, help="Rebuild every stage, ignoring cached ones.").tag(config=True)
    keep_builds = Integer(0, help="Finished images kept per recipe, the current one included (0: keep all). "
                          "Overlays of running VMs are backed by their build's base.qcow2: prune only "
                          "when no VM uses an older build.").tag(config=True)

    aliases = {"recipe": "ImageBuilder.recipe", "cache-dir": "ImageBuilder.cache_dir",
               "repo": "ImageBuilder.repo", "extra": "ImageBuilder.extras",
               "keep-builds": "ImageBuilder.keep_builds"}
    flags = {"update-lock": ({"ImageBuilder": {"update_lock": True}}, "Write the lock file from this build."),
             "force": ({"ImageBuilder": {"force": True}}, "Rebuild every stage.")}

    @default("recipe")
    def _default_recipe(self) -> str:
        return str(HERE / "recipes" / "debian-bookworm.toml")

    @default("repo")
    def _default_repo(self) -> str:
        return str(HERE.parent)

    def start(self) -> None:
        # SIGTERM unwinds like Ctrl-C, so the chroot's mounts are released by their `finally`
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            self.build()
        except (RecipeError, BuildError) as e:
            self.log.error("image build failed: %s", e)
            self.exit(1)
        except KeyboardInterrupt:
            self.log.error("image build interrupted; `current` is unchanged")
            self.exit(130)

    # -- the build ----------------------------------------------------------------------------
    def build(self) -> Path:
        """Build what is not cached and point `current` at the result; returns the image dir."""
        started = time.monotonic()
        recipe = load_recipe(Path(self.recipe), self.extras)
        repo = Path(self.repo)
        hashes = recipe.stage_hashes(repo)
        top = Path(self.cache_dir) / recipe.variant  # e.g. debian-bookworm, debian-bookworm+openstack
        out = top / hashes["image"]
        if not self.force and (out / "manifest.json").exists():
            if self.update_lock:
                self._write_lock(recipe, out)
            self._publish(top, out)
            progress("done", f"up to date: {top / 'current'} -> {out.name} ({time.monotonic() - started:.1f}s)")
            return out
        if os.geteuid() != 0:
            raise BuildError("building an image needs root (debootstrap, chroot, mounts)")
        if missing := missing_tools():
            raise BuildError("missing host tools: " + ", ".join(missing))
        (top / "stages").mkdir(parents=True, exist_ok=True)
        with self._exclusive(top):
            if not self.force and (out / "manifest.json").exists():  # built while we waited
                self._publish(top, out)
                return out
            return self._build(recipe, repo, hashes, top, out, started)

    @contextlib.contextmanager
    def _exclusive(self, top: Path) -> Iterator[None]:
        """One build per recipe at a time (they share work/); a second one waits its turn."""
        with open(top / ".build.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress("wait", "another build of this recipe is running; waiting for it")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _build(self, recipe: Recipe, repo: Path, hashes: dict[str, str], top: Path, out: Path,
               started: float) -> Path:
        work = top / "work"
        root = work / "root"
        remove_tree(work)  # what an interrupted build left, its mounts first
        work.mkdir(parents=True)
        log = work / "build.log"
        start_at = self._first_stage_to_run(top, hashes)
        if start_at > 0:
            previous = STAGES[start_at - 1]
            progress(previous, f"cached ({hashes[previous]}), restoring")
            restore_stage(self._archive(top, previous, hashes), root)
        try:
            for stage in STAGES[start_at:]:
                t0 = time.monotonic()
                progress(stage, f"building ({hashes[stage]}) ...")
                self._run_stage(stage, recipe, root, repo, top, hashes, started, log)
                if stage in ARCHIVED:
                    save_stage(root, self._archive(top, stage, hashes))
                progress(stage, f"done in {time.monotonic() - t0:.0f}s")
            if self.update_lock:
                self._write_lock(recipe, out)
            self._publish(top, out)
            self._prune(top, hashes)
        except BaseException:
            release_mounts(work)
            progress("failed", f"see {log}")
            raise
        finally:
            if (top / f"{hashes['image']}.part").exists():
                shutil.rmtree(top / f"{hashes['image']}.part", ignore_errors=True)
        shutil.copyfile(log, out / "build.log")
        remove_tree(work)
        progress("done", f"{top / 'current'} -> {out.name} in {time.monotonic() - started:.0f}s")
        return out

    def _run_stage(self, stage: str, recipe: Recipe, root: Path, repo: Path, top: Path,
                   hashes: dict[str, str], started: float, log: Path) -> None:
        if stage == "debootstrap":
            stages.debootstrap(recipe, root, top / "debs", log)
        elif stage == "packages":
            stages.install_packages(recipe, root, log)
        elif stage == "python":
            stages.install_python(recipe, root, repo, top / "wheels" / "wheelhouse", log)
        elif stage == "visa":
            stages.install_repo_packages(recipe, root, repo, top / "work", log)
        elif stage == "system":
            stages.install_extra_packages(recipe, root, log)
            system.configure_system(recipe, root, log)
        elif stage == "image":
            part = top / f"{hashes['image']}.part"
            shutil.rmtree(part, ignore_errors=True)
            part.mkdir()
            system.finish_image(recipe, root, part, hashes, started, log)
            final = top / hashes["image"]
            shutil.rmtree(final, ignore_errors=True)
            part.rename(final)

    def _archive(self, top: Path, stage: str, hashes: dict[str, str]) -> Path:
        return top / "stages" / f"{stage}-{hashes[stage]}{archive_suffix()}"

    def _first_stage_to_run(self, top: Path, hashes: dict[str, str]) -> int:
        """Index of the first stage with no archive (the stages before it are restored)."""
        if self.force:
            return 0
        first = 0
        for i, stage in enumerate(ARCHIVED):
            if self._archive(top, stage, hashes).exists() or self._adopt(top, stage, hashes):
                first = i + 1
            else:
                break
        return first

    def _adopt(self, top: Path, stage: str, hashes: dict[str, str]) -> bool:
        """A variant takes the plain recipe's archive of a stage with the same hash (its first four
        stages are the same: extras are installed by the system stage) as a hard link, else a copy.
        Only read there: the plain recipe's own builds and pruning are left alone."""
        plain = top.parent / top.name.split("+", 1)[0]
        source, target = self._archive(plain, stage, hashes), self._archive(top, stage, hashes)
        if plain == top or not source.is_file():
            return False
        partial = target.with_name(target.name + ".part")
        partial.unlink(missing_ok=True)
        try:
            os.link(source, partial)
        except OSError:
            shutil.copyfile(source, partial)
        os.replace(partial, target)
        progress(stage, f"taken from {plain.name} ({hashes[stage]})")
        return True

    def _publish(self, top: Path, out: Path) -> None:
        """Point `current` at `out` atomically (rename of a new symlink over the old one)."""
        link = top / "current"
        if link.is_symlink() and os.readlink(link) == out.name:
            return
        tmp = top / ".current.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(out.name)
        os.replace(tmp, link)

    def _prune(self, top: Path, hashes: dict[str, str]) -> None:
        """Keep the newest `keep_builds` images and one archive per stage besides the current ones."""
        builds = sorted((d for d in top.iterdir() if d.is_dir() and (d / "manifest.json").exists()),
                        key=lambda d: d.stat().st_mtime, reverse=True)
        for old in builds[self.keep_builds:] if self.keep_builds else []:
            if old.name != hashes["image"]:
                shutil.rmtree(old, ignore_errors=True)
        for stage in ARCHIVED:
            archives = sorted((top / "stages").glob(f"{stage}-*.tar*"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in archives[2:]:
                old.unlink(missing_ok=True)

    def _write_lock(self, recipe: Recipe, out: Path) -> None:
        import json
        manifest = json.loads((out / "manifest.json").read_text())
        apt = {p: manifest["packages"][p] for p in recipe.apt_packages if p in manifest["packages"]}
        apt.update({p: v for p, v in manifest.get("unpacked", {}).items() if p in recipe.unpacked_packages})
        python = {n: v for n, v in manifest["python_packages"].items() if n.lower().replace("_", "-") != "visa-hub"}
        for name in recipe.python.get("remove", []):  # pinned too: the version that was removed
            python.setdefault(name, recipe.lock.get("python", {}).get(name, ""))
        python = {n: v for n, v in python.items() if v}
        write_lock(lock_path(recipe.path), apt, python)
        progress("lock", f"wrote {lock_path(recipe.path)} ({len(apt)} apt, {len(python)} python pins)")
