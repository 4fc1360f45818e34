"""What a new user sees in Lab's file browser: a `data` entry and a notebook to start from.

Both backends mount the proposal's data read-only at ``/data/<proposal>`` (the sandbox with
bubblewrap, a VM with its agent), outside the home Lab opens in: without a way there, a newcomer
finds an empty home. Done here, in the single-user server, so the sandbox and the VM behave alike.
Nothing the user made is ever replaced: an existing `data` or notebook is left as it is.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from traitlets import Unicode, default
from traitlets.config import Configurable

from .desktop_env import parse_proposal

STARTER_NOTEBOOK = Path(__file__).parent / "notebooks" / "first-look.ipynb"


class VisaHome(Configurable):
    """The `data` link and the starter notebook put into the instance's home at start."""

    data_root = Unicode(
        "/data",
        help="Where the backends mount each proposal's data (`<data_root>/<proposal>`).",
    ).tag(config=True)

    data_link = Unicode(
        "data",
        help="Name of the link in the home to the proposal's data; empty: no link.",
    ).tag(config=True)

    starter_notebook = Unicode(
        help="""Notebook copied into a home that has none of that name, when the proposal has data
        (opens a run, plots I(Q), fits a peak; it reads the data through the `data` link).
        Default: the shipped `visa_instance/notebooks/first-look.ipynb`. Empty: none.""",
    ).tag(config=True)

    @default("starter_notebook")
    def _shipped_notebook(self) -> str:
        return str(STARTER_NOTEBOOK)  # where this package is installed: not a fixed path

    def prepare(self, home: Path, proposal: str | None, log: logging.Logger) -> None:
        """Link the proposal's data and copy the starter notebook; never raises (start goes on)."""
        proposal = parse_proposal(proposal)
        if not proposal:
            return
        target = Path(self.data_root) / proposal
        if not target.is_dir():
            log.info("No data at %s: no data link in the home", target)
            return
        try:
            if self.data_link:
                _link_once(home / self.data_link, target, log)
            if self.starter_notebook:
                _copy_once(Path(self.starter_notebook), home, log)
        except OSError as e:  # a full or read-only home must not stop Lab
            log.warning("Could not prepare the home %s: %s", home, e)


def lab_home(serverapp: Any) -> Path | None:
    """$HOME when it is where Lab opens (as both backends start it), else None: a server started
    elsewhere (a developer's, a test's) must not get links in its account's home."""
    opens = Path(serverapp.root_dir, serverapp.contents_manager.preferred_dir.lstrip("/"))
    home = Path(os.path.expanduser("~"))
    return home if opens.resolve() == home.resolve() and home.is_dir() else None


def prepare_lab_home(serverapp: Any) -> None:
    """At start-up (a few file-system calls, before the server takes requests)."""
    home = lab_home(serverapp)
    if home is not None:
        VisaHome(parent=serverapp).prepare(home, os.environ.get("VISA_PROPOSAL"), serverapp.log)


def _link_once(link: Path, target: Path, log: logging.Logger) -> None:
    if link.is_symlink() or link.exists():
        if not (link.is_symlink() and os.readlink(link) == str(target)):
            log.info("%s exists and is not the data link: left as it is", link)
        return
    link.symlink_to(target, target_is_directory=True)


def _copy_once(source: Path, home: Path, log: logging.Logger) -> None:
    dest = home / source.name
    if dest.exists() or dest.is_symlink():
        return
    try:
        with source.open("rb") as src, open(dest, "xb") as out:  # "x": never over a user's file
            shutil.copyfileobj(src, out)
    except FileExistsError:
        return
    log.info("Starter notebook copied to %s", dest)
