"""A pooled sandbox's first process (issue 19 review): it starts in the home, so nothing there (the
course's materials, then the owner's files) may take the place of a module it or the owner's
server imports. Runs the real command line with the instance environment's Python (fast)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from visa_spawner.backends.sandbox.pool import zygote_command

INSTANCE_ENV = os.environ.get("VISA_INSTANCE_ENV", "/opt/visahub/instance-env")


def test_files_in_the_home_do_not_shadow_the_zygotes_modules(tmp_path: Path) -> None:
    for name in ("argparse", "json", "socket"):  # imported by the zygote before anything else
        (tmp_path / f"{name}.py").write_text("open('shadowed', 'a').write(__name__ + ' ')\n")
    # no channel (fd 1000 is not open): the zygote stops at once, after its imports
    done = subprocess.run(zygote_command(INSTANCE_ENV, 1000), cwd=tmp_path, capture_output=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert done.returncode != 0 and b"visa_instance" in done.stderr  # it ran, and ended on the channel
    assert not (tmp_path / "shadowed").exists(), (tmp_path / "shadowed").read_text()
