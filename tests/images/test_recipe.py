"""The recipe parser, stage hashes, lock pins, host apt sources and pip wheel tags (pure logic)."""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import yaml
from imagebuild import recipe as rcp  # images/ is on pytest's pythonpath (setup.cfg)
from imagebuild.chroot import host_mirrors, sources_list
from imagebuild.stages import target_tags

REPO = Path(__file__).resolve().parents[2]

RECIPE = REPO / "images" / "recipes" / "debian-bookworm.toml"


@pytest.fixture
def recipe() -> rcp.Recipe:
    return rcp.load_recipe(RECIPE)


def variant(recipe: rcp.Recipe, edit) -> rcp.Recipe:
    data = copy.deepcopy(dict(recipe.data))
    edit(data)
    rcp._check(data, ())
    return rcp.Recipe(name=recipe.name, path=recipe.path, data=data, lock=recipe.lock)


def test_the_shipped_recipe_loads_with_what_the_backend_needs(recipe: rcp.Recipe):
    assert recipe.name == "debian-bookworm"
    assert "root=/dev/vda" in recipe.kernel["cmdline"] and "console=ttyS0" in recipe.kernel["cmdline"]
    assert {"9p", "9pnet_virtio", "qemu_fw_cfg", "virtio_console"} <= set(recipe.kernel["boot_modules"])
    assert recipe.python["env"] == "/opt/visahub/instance-env"
    assert {"tigervnc-standalone-server", "openbox", "xterm", "systemd", recipe.kernel["package"]} <= set(recipe.apt_packages)
    # the scientific stack: the one lock the host's instance env reads too, exact pins, none pinned twice
    assert "requirements-science.txt" in recipe.python["requirement_files"]
    science = [ln for ln in (REPO / "requirements-science.txt").read_text().splitlines() if ln and ln[0] != "#"]
    names = {p.split("==")[0] for p in science}
    assert {"numpy", "scipy", "h5py", "matplotlib", "silx", "nexusformat", "scippneutron", "scippnexus",
            "lmfit", "pyFAI", "NeXpy", "ipykernel"} <= names
    assert all("==" in p for p in science), "scientific packages must be pinned"
    assert not names & {p.split("==")[0] for p in recipe.python.get("packages", [])}
    assert "cloud-init" not in recipe.apt_packages
    assert "cloud-init" in rcp.load_recipe(RECIPE, ["openstack"]).apt_packages


def test_stage_hashes_are_stable_and_only_downstream_stages_change(recipe: rcp.Recipe):
    base = recipe.stage_hashes(REPO)
    assert base == recipe.stage_hashes(REPO)
    assert list(base) == list(rcp.STAGES)
    changed = variant(recipe, lambda d: d["system"]["mask"].append("foo.service")).stage_hashes(REPO)
    same = ["debootstrap", "packages", "python", "visa"]
    assert [changed[s] == base[s] for s in rcp.STAGES] == [s in same for s in rcp.STAGES]
    changed = variant(recipe, lambda d: d["apt"]["packages"].append("git")).stage_hashes(REPO)
    assert changed["debootstrap"] == base["debootstrap"] and changed["packages"] != base["packages"]
    assert changed["image"] != base["image"]


def test_a_variant_shares_the_first_four_stages_and_adds_its_extras_in_the_system_stage(recipe: rcp.Recipe):
    """The OpenStack variant restores the plain recipe's archives (builder._adopt): only its system
    and image stages are built, with cloud-init installed and configured by the system stage."""
    openstack = rcp.load_recipe(RECIPE, ["openstack"])
    base, extra = recipe.stage_hashes(REPO), openstack.stage_hashes(REPO)
    assert [extra[s] == base[s] for s in rcp.STAGES] == [s not in ("system", "image") for s in rcp.STAGES]
    assert openstack.extra_apt_packages == ["cloud-init"] and "cloud-init" not in openstack.base_apt_packages
    assert openstack.stage_inputs("packages", REPO) == recipe.stage_inputs("packages", REPO)
    cloud_cfg = yaml.safe_load(openstack.system["files"]["/etc/cloud/cloud.cfg.d/90-visa.cfg"])
    assert cloud_cfg["cloud_init_modules"][0] == "write_files" and cloud_cfg["cloud_config_modules"] == ["runcmd"]
    assert "ExecStartPost=-/bin/systemctl start --no-block visa-instance.service" in openstack.system["files"][
        "/etc/systemd/system/cloud-init.service.d/90-visa-instance.conf"]
    assert "files" not in recipe.system and "DHCP=ipv4" in openstack.system["network"]


def test_repo_packages_hash_only_their_own_files(recipe: rcp.Recipe, tmp_path: Path):
    repo = tmp_path / "repo"
    for f in ("setup.cfg", "requirements-instance.txt", "visa_instance/a.py", "visa_spawner/b.py"):
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("x")
    first = recipe.stage_hashes(repo)
    (repo / "visa_spawner/b.py").write_text("hub-side edit")
    assert recipe.stage_hashes(repo) == first
    (repo / "visa_instance/a.py").write_text("instance edit")
    second = recipe.stage_hashes(repo)
    assert second["python"] == first["python"] and second["visa"] != first["visa"]


def test_lock_pins_top_level_packages(recipe: rcp.Recipe):
    pinned = rcp.Recipe(name=recipe.name, path=recipe.path, data=recipe.data,
                        lock={"apt": {"xterm": "379-1"}, "python": {}})
    assert "xterm=379-1" in pinned.pinned_apt() and "openbox" in pinned.pinned_apt()
    assert pinned.stage_hashes(REPO)["packages"] != recipe.stage_hashes(REPO)["packages"]


def test_unpacked_packages_are_pinned_apart_and_never_installed(recipe: rcp.Recipe):
    """noVNC's files come without its nodejs dependency: with node in the image, JupyterLab runs it
    on every import. Its pin is in the lock like the others and changes the packages stage."""
    assert recipe.unpacked_packages == ["novnc"]
    assert not any(p.split("=")[0] == "novnc" for p in recipe.pinned_apt())
    assert recipe.pinned_apt(recipe.unpacked_packages) == [f"novnc={recipe.lock['apt']['novnc']}"]
    repinned = rcp.Recipe(name=recipe.name, path=recipe.path, data=recipe.data,
                          lock={"apt": {**recipe.lock["apt"], "novnc": "1:9.9-1"}, "python": recipe.lock["python"]})
    assert repinned.stage_hashes(REPO)["packages"] != recipe.stage_hashes(REPO)["packages"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("kernel"), r"missing section \[kernel\]"),
    (lambda d: d["apt"].update(packages=[]), "non-empty list"),
    (lambda d: d["apt"]["packages"].append("bad name; rm"), "not a Debian package name"),
    (lambda d: d["kernel"].update(cmdline="console=ttyS0"), "root="),
    (lambda d: d["system"]["mask"].append("../../etc/passwd"), "not a systemd unit"),
    (lambda d: d["image"].update(size="lots"), "8G"),
    (lambda d: d["python"].update(env="relative/env"), "absolute"),
    (lambda d: d["python"].update(repo_packages=["../x"]), "repo_packages"),
    (lambda d: d["python"].update(remove=["x; rm -rf /"]), "distribution names"),
    (lambda d: d["apt"].update(unpacked=["novnc; rm -rf /"]), "not a Debian package name"),
    (lambda d: d["apt"].update(unpacked="novnc"), "unpacked must be a list"),
    (lambda d: d["kernel"]["no_autoload"].append("floppy\ninstall ext4 /bin/sh"), "no_autoload must be a list of kernel"),
    (lambda d: d["kernel"].update(initramfs_udev="no"), "initramfs_udev must be true or false"),
])
def test_bad_recipes_are_refused_with_the_field_named(recipe: rcp.Recipe, edit, message):
    with pytest.raises(rcp.RecipeError, match=message):
        variant(recipe, edit)


def test_bad_files_and_extras_give_clear_errors(tmp_path: Path):
    with pytest.raises(rcp.RecipeError, match="no recipe"):
        rcp.load_recipe(tmp_path / "missing.toml")
    (tmp_path / "x.toml").write_text("[base\n")
    with pytest.raises(rcp.RecipeError, match="x.toml"):
        rcp.load_recipe(tmp_path / "x.toml")
    with pytest.raises(rcp.RecipeError, match="unknown extra 'gpu'.*openstack"):
        rcp.load_recipe(RECIPE, ["gpu"])
    (tmp_path / "y.toml").write_text(RECIPE.read_text())
    (tmp_path / "y.lock.json").write_text("{nope")
    with pytest.raises(rcp.RecipeError, match="y.lock.json"):
        rcp.load_recipe(tmp_path / "y.toml")


def test_lock_round_trip(tmp_path: Path):
    (tmp_path / "r.toml").write_text(RECIPE.read_text())
    rcp.write_lock(rcp.lock_path(tmp_path / "r.toml"), {"xterm": "1"}, {"numpy": "2.4.6"})
    r = rcp.load_recipe(tmp_path / "r.toml")
    assert r.lock == {"apt": {"xterm": "1"}, "python": {"numpy": "2.4.6"}}


def test_host_mirrors_read_deb822_and_one_line_sources(tmp_path: Path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb-src\nURIs: http://src.example\nSuites: bookworm-backports\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian trixie main\n")
    mirrors = host_mirrors(tmp_path)
    assert mirrors == {"bookworm": "http://mirror.example/debian", "bookworm-updates": "http://mirror.example/debian",
                       "bookworm-security": "http://mirror.example/debian-security",
                       "trixie": "http://other.example/debian"}
    text = sources_list(["bookworm", "bookworm-security"], ["main"], {"bookworm": "http://m/debian"})
    assert text == "deb http://m/debian bookworm main\ndeb http://deb.debian.org/debian-security bookworm-security main\n"


def test_wheel_tags_follow_the_image_interpreter_and_glibc():
    opts = target_tags("3.11.2", "2.36")
    assert opts[:2] == ["--python-version", "3.11.2"] and "cp311" in opts and "--only-binary=:all:" in opts
    plats = [opts[i + 1] for i, o in enumerate(opts) if o == "--platform"]
    assert plats[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in plats
    assert "manylinux_2_37_x86_64" not in plats and "manylinux2014_x86_64" in plats and plats[-1] == "any"


def test_extras_override_system_settings():
    plain = rcp.load_recipe(RECIPE)
    openstack = rcp.load_recipe(RECIPE, ["openstack"])
    assert "Address=10.0.2.15/24" in plain.system["network"] and "DHCP" not in plain.system["network"]
    assert "DHCP=ipv4" in openstack.system["network"] and "extras" not in openstack.system
    assert openstack.system["mask"] == plain.system["mask"]
    assert (plain.variant, openstack.variant) == ("debian-bookworm", "debian-bookworm+openstack")
    # cloud-init comes in the system stage: the packages stage is the plain recipe's (shared archive)
    assert openstack.stage_hashes(REPO)["system"] != plain.stage_hashes(REPO)["system"]


def test_mounts_under_finds_nested_mounts_deepest_first(tmp_path: Path):
    from imagebuild.chroot import mounts_under
    root = tmp_path / "work"
    mounts = tmp_path / "mounts"
    mounts.write_text(
        f"proc {root}/root/proc proc rw 0 0\n"
        f"udev {root}/root/dev devtmpfs rw 0 0\n"
        f"devpts {root}/root/dev/pts devpts rw 0 0\n"
        f"tmpfs {root}/root/run\\040x tmpfs rw 0 0\n"
        f"other {root}2/root/proc proc rw 0 0\n"
        "/dev/vda / ext4 rw 0 0\n")
    found = mounts_under(root, mounts)
    assert found[0] == f"{root}/root/dev/pts"
    assert set(found) == {f"{root}/root/proc", f"{root}/root/dev", f"{root}/root/dev/pts", f"{root}/root/run x"}


def test_the_system_stage_ignores_bytecode_beside_the_agent(tmp_path: Path):
    """Tests import the agent and leave __pycache__ beside it: that must not make the image stale."""
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "visa_agent.py").write_text("x")
    before = rcp.system_files(tmp_path)
    (tmp_path / "agent" / "__pycache__").mkdir()
    (tmp_path / "agent" / "__pycache__" / "visa_agent.cpython-311.pyc").write_bytes(b"\0")
    assert rcp.system_files(tmp_path) == before == [tmp_path / "agent" / "visa_agent.py",
                                                   tmp_path / "imagebuild" / "system.py",
                                                   tmp_path / "imagebuild" / "bootfiles.py"]


def test_the_guest_protocol_goes_beside_the_agent_and_its_text_is_in_the_system_hash(recipe: rcp.Recipe):
    """The agent and the zygote import visa_protocol from their own directory in the image; a change
    to the hub's protocol module must rebuild the system stage (the link is read through)."""
    from imagebuild.system import AGENT_FILES
    images = REPO / "images"
    assert AGENT_FILES["visa_protocol.py"][0] == str(Path(AGENT_FILES["visa_agent.py"][0]).parent / "visa_protocol.py")
    assert AGENT_FILES["visa_zygote.py"][0].rsplit("/", 1)[0] == AGENT_FILES["visa_protocol.py"][0].rsplit("/", 1)[0]
    protocol = REPO / "visa_spawner/backends/guest/protocol.py"
    assert (images / "agent/visa_protocol.py").read_bytes() == protocol.read_bytes()
    digest = rcp.files_digest(rcp.system_files(images), images)
    assert digest["agent/visa_protocol.py"] == hashlib.sha256(protocol.read_bytes()).hexdigest()
