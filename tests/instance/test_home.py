"""visa_instance.home: the `data` link and the starter notebook never replace what a user has."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from visa_instance.home import STARTER_NOTEBOOK, VisaHome

log = logging.getLogger("test")


def _home(tmp_path: Path) -> tuple[VisaHome, Path, Path]:
    (tmp_path / "data" / "P-1").mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    return VisaHome(data_root=str(tmp_path / "data")), home, tmp_path / "data" / "P-1"


def test_a_new_home_gets_the_link_and_the_notebook_once(tmp_path: Path) -> None:
    visa_home, home, target = _home(tmp_path)
    visa_home.prepare(home, "P-1", log)
    assert os.readlink(home / "data") == str(target)
    notebook = home / STARTER_NOTEBOOK.name
    assert notebook.read_bytes() == STARTER_NOTEBOOK.read_bytes()
    notebook.write_text("my edits")
    visa_home.prepare(home, "P-1", log)  # the next start
    assert notebook.read_text() == "my edits"


def test_what_the_user_made_is_left_and_bad_proposals_do_nothing(tmp_path: Path) -> None:
    visa_home, home, _ = _home(tmp_path)
    (home / "data").mkdir()
    (home / "data" / "mine.txt").write_text("mine")
    visa_home.prepare(home, "P-1", log)
    assert not (home / "data").is_symlink() and (home / "data" / "mine.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    for proposal in ("../data/P-1", "..", "", None, "P-2"):  # unsafe, empty, absent, or without data
        visa_home.prepare(other, proposal, log)
    assert list(other.iterdir()) == []
