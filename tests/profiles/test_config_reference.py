"""docs/config-reference.md is current, and every hub-side VISA class is in JupyterHub's class list
(what `jupyterhub --help-all` and `--generate-config` print)."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from scripts import config_reference

REPO = Path(__file__).resolve().parents[2]


def hub_classes() -> list[type]:
    """Imported in the tests, not at collection: a broken module fails these tests, not the run."""
    return [c for c in config_reference.configurable_classes() if config_reference.is_hub_class(c)]


def test_committed_reference_is_current() -> None:
    committed = config_reference.OUTPUT.read_text(encoding="utf-8")
    assert committed == config_reference.render(), (
        "docs/config-reference.md is stale: run .venv/bin/python scripts/config_reference.py")


def test_reference_covers_the_classes_people_configure() -> None:
    names = {c.__name__ for c in config_reference.configurable_classes()}
    assert {"VisaSpawner", "SandboxBackend", "QemuBackend", "OpenStackBackend", "Reconciler",
            "SqlCatalogue", "FileCatalogue", "CachedCatalogue", "VisaOAuthenticator", "VisaDesktop"} <= names
    text = config_reference.OUTPUT.read_text(encoding="utf-8")
    assert "#### `OpenStackBackend.stop_action`" in text and "0x7f" not in text  # no memory addresses


def test_every_hub_class_is_in_jupyterhubs_classes() -> None:
    """A class is registered, directly or as the VISA parent of a registered one."""
    from jupyterhub.app import JupyterHub

    registered = {ep.load() for group in ("jupyterhub.authenticators", "jupyterhub.spawners")
                  for ep in entry_points(group=group) if ep.module.startswith("visa_")}
    listed = {parent for cls in JupyterHub().classes for parent in cls.__mro__}
    missing = [c.__name__ for c in hub_classes() if c not in listed]
    assert not missing, f"add them to setup.cfg [options.entry_points], then pip install -e .: {missing}"
    assert {c for c in registered if not config_reference.is_hub_class(c)} == set()


def test_a_registered_backend_is_refused_as_a_spawner() -> None:
    """The entry points that only list a class for --help-all cannot be picked by mistake."""
    from jupyterhub.app import JupyterHub
    from traitlets import TraitError

    with pytest.raises(TraitError, match="subclass of 'jupyterhub.spawner.Spawner'"):
        JupyterHub(spawner_class="visa-qemu-backend")


@pytest.mark.root
def test_jupyterhub_help_all_lists_every_hub_class() -> None:
    """The real command, as an operator runs it (a process, so not in the fast tier)."""
    jupyterhub = Path(sys.executable).parent / "jupyterhub"
    r = subprocess.run([str(jupyterhub), "--help-all"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    for cls in hub_classes():
        option = next(iter(sorted(cls.class_own_traits(config=True))))
        assert f"--{cls.__name__}.{option}=" in r.stdout, cls.__name__
