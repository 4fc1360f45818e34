"""visa_training.hub_config.apply lets the warm pool copy the courses' materials, wherever the YAML lives."""
from __future__ import annotations

from pathlib import Path

from traitlets.config import Config

from visa_spawner.backends.sandbox.pool import REPO_HUB_CONFIG
from visa_training import hub_config


def test_apply_adds_the_courses_folders_to_the_pools_materials_roots(tmp_path: Path) -> None:
    c = Config()
    site = tmp_path / "site"
    hub_config.apply(c, state_dir=tmp_path / "state", courses=site / "courses.yaml", env={})
    assert c.WarmPool.materials_roots == [REPO_HUB_CONFIG, str(site.resolve()), str((site / "courses").resolve())]
    hub_config.apply(c, state_dir=tmp_path / "state", courses=site / "courses.yaml", env={})  # idempotent
    assert len(c.WarmPool.materials_roots) == 3
