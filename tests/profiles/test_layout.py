"""What issue 14 untangled stays untangled: profiles import an installed package (no sys.path
edits), and the spawner side imports neither the authenticator nor the profiles."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}


@pytest.mark.parametrize("path", sorted((REPO / "hub_config").rglob("*.py")), ids=lambda p: p.parent.name)
def test_profiles_import_visa_profiles_without_sys_path(path: Path) -> None:
    assert "sys.path" not in path.read_text(encoding="utf-8")
    assert any(name.startswith("visa_profiles") for name in _imports(path))


def test_spawner_imports_neither_authenticator_nor_profiles() -> None:
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "visa_spawner").rglob("*.py")
                 if any(n.split(".")[0] in ("visa_authenticator", "visa_profiles", "visa_demo") for n in _imports(p))]
    assert not offenders


def test_demo_data_is_not_in_the_authenticator() -> None:
    """h5py/numpy (the demo extra) stay out of what a production hub imports."""
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "visa_authenticator").rglob("*.py")
                 if {"h5py", "numpy", "visa_demo"} & {n.split(".")[0] for n in _imports(p)}]
    assert not offenders
