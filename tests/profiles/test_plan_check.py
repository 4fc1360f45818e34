"""A bad plan stops the hub at start, with the plan's name (not a broken home page later)."""
import ast
from pathlib import Path

import pytest
from traitlets.config import Config

from visa_profiles.common import exit_on_bad_plans
from visa_spawner.spawner import DEFAULT_PLANS

REPO = Path(__file__).resolve().parents[2]


def test_a_bad_plan_exits_naming_it() -> None:
    c = Config()
    c.VisaSpawner.plans = [*DEFAULT_PLANS, {"id": "gpu-big", "display_name": "GPU", "backend": "kubernetes",
                                            "cpus": 4, "memory_mb": 8192}]
    with pytest.raises(SystemExit) as e:
        exit_on_bad_plans(c)
    assert "gpu-big" in str(e.value) and "unknown backend" in str(e.value)


def test_good_plans_pass() -> None:
    c = Config()
    c.VisaSpawner.plans = list(DEFAULT_PLANS)
    exit_on_bad_plans(c)  # returns: the check raises SystemExit on a bad plan (test above)
    exit_on_bad_plans(Config())  # no plans configured: the defaults


@pytest.mark.parametrize("profile", ["demo", "production"])
def test_each_profile_checks_its_plans_last(profile: str) -> None:
    tree = ast.parse((REPO / "hub_config" / profile / "jupyterhub_config.py").read_text())
    calls = [n for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    last = calls[-1].value
    assert isinstance(last.func, ast.Name) and last.func.id == "exit_on_bad_plans", ast.dump(last)
    assert tree.body[-1] is calls[-1], "the check must be the profile's last statement"
