"""A participant's course instance seen from the test: its home through the instance's own Jupyter
contents API, as the tests' admin service (the same on every backend)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import requests

MATERIALS = {"notebooks": "directory", "data.bin": "file"}  # what the tests' course folders deliver
DEMO_NOTEBOOK = next((Path(__file__).resolve().parents[2] / "hub_config" / "demo" / "courses" / "python-neutron").glob("*.ipynb"))
BLOB = bytes(range(256)) * 512  # 128 KiB, every byte value: a damaged transfer shows


def instance_api(hub, method: str, path: str, user: str, course: str, **kw) -> requests.Response:
    """`method` on `path` under the participant's home in their instance of `course`."""
    return requests.request(method, f"{hub.url}/user/{user}/course-{course}/api/contents/home/{user}{path}",
                            headers={"Authorization": f"token {hub.token}"}, timeout=30, **kw)


def home_listing(hub, user: str, course: str) -> dict[str, str]:
    """The participant's home: name → type, hidden names left out."""
    r = instance_api(hub, "GET", "", user, course)
    assert r.status_code == 200, r.text[:300]
    return {i["name"]: i["type"] for i in r.json()["content"] if not i["name"].startswith(".")}


def write_own_file(hub, user: str, course: str) -> None:
    """The participant's own work, which a reset must not keep."""
    r = instance_api(hub, "PUT", "/mine.txt", user, course, json={"type": "file", "format": "text", "content": "my work"})
    assert r.status_code == 201, r.text[:300]
    assert "mine.txt" in home_listing(hub, user, course)


def write_materials(folder: Path) -> None:
    """A course's materials folder: a notebook and a binary (MATERIALS), and what is never sent:
    a hidden file and a link to a host file."""
    (folder / "notebooks").mkdir(parents=True)
    shutil.copy(DEMO_NOTEBOOK, folder / "notebooks" / "intro.ipynb")
    (folder / "data.bin").write_bytes(BLOB)
    (folder / ".hidden").write_text("not sent")
    os.symlink("/etc/hostname", folder / "host-file")
