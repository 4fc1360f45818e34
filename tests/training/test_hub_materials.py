"""A course's materials copied into a fresh sandbox home: owned by the account, links skipped."""
from __future__ import annotations

import os
import stat

from visa_spawner.backends.sandbox.materials import copy_materials


def test_copy_materials_owns_files_and_skips_links(tmp_path):
    src, home = tmp_path / "materials", tmp_path / "home"
    (src / "data").mkdir(parents=True)
    (src / "README.md").write_text("hello")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o777)
    (src / "data" / "a.txt").write_text("a")
    (src / "secret-link").symlink_to("/etc/shadow")
    (src / "dir-link").symlink_to("/etc")
    home.mkdir()
    (home / "README.md").write_text("mine")  # an existing name is kept

    copied = copy_materials(src, home, 4321, 4322)

    assert copied == 2  # run.sh and data/a.txt
    assert (home / "README.md").read_text() == "mine"
    assert (home / "data" / "a.txt").read_text() == "a"
    assert not os.path.lexists(home / "secret-link") and not os.path.lexists(home / "dir-link")
    for path in (home / "run.sh", home / "data", home / "data" / "a.txt"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (4321, 4322), path
    assert stat.S_IMODE(os.stat(home / "run.sh").st_mode) == 0o755  # no group/other write
