"""The profiles' metrics and plan-switch settings: a scrape role that reads metrics and nothing else,
metrics kept behind authentication, one plan switch file shared by the hub and the ops console."""
from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from visa_profiles.common import apply_hub_and_instances
from visa_profiles.env import SettingsError
from visa_profiles.production import apply_metrics_scraper

REPO = Path(__file__).resolve().parents[2]
TOKEN = "f" * 64


def test_the_scrape_role_reads_metrics_only_and_keeps_the_profiles_services(tmp_path: Path) -> None:
    c = Config()
    apply_hub_and_instances(c, tmp_path, REPO, {})
    before = [s["name"] for s in c.JupyterHub.services]
    apply_metrics_scraper(c, {"VISA_METRICS_TOKEN": TOKEN})
    assert [s["name"] for s in c.JupyterHub.services] == [*before, "prometheus"]
    assert c.JupyterHub.services[-1] == {"name": "prometheus", "api_token": TOKEN}
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == "prometheus")
    assert role == {"name": "prometheus", "services": ["prometheus"], "scopes": [
        "read:metrics", "access:services!service=visa-collab", "access:services!service=visa-ops"]}
    assert c.JupyterHub.authenticate_prometheus is True
    apply_metrics_scraper(c, {"VISA_METRICS_TOKEN": TOKEN})  # applied twice: still one service
    assert [s["name"] for s in c.JupyterHub.services].count("prometheus") == 1


def test_without_a_token_there_is_no_scraper_and_metrics_stay_authenticated() -> None:
    c = Config()
    apply_metrics_scraper(c, {})
    assert "services" not in c.JupyterHub and c.JupyterHub.authenticate_prometheus is True


def test_a_short_token_stops_the_hub_with_its_name() -> None:
    with pytest.raises(SettingsError, match="VISA_METRICS_TOKEN must be at least 32 characters"):
        apply_metrics_scraper(Config(), {"VISA_METRICS_TOKEN": "secret"})


def test_hub_and_ops_console_share_one_plan_switch_file(tmp_path: Path) -> None:
    c = Config()
    apply_hub_and_instances(c, tmp_path, REPO, {})
    ops = next(s for s in c.JupyterHub.services if s["name"] == "visa-ops")
    assert c.VisaSpawner.plan_switch_file == str(tmp_path / "plans-disabled.json")
    assert ops["environment"]["VISA_OPS_PLAN_SWITCH_FILE"] == c.VisaSpawner.plan_switch_file
