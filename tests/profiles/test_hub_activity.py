"""The hub takes `last_activity` from the instances' own reports only (issue 17, real use)."""
from __future__ import annotations

from pathlib import Path

from traitlets.config import Config

from visa_profiles.common import apply_hub_and_instances

REPO = Path(__file__).resolve().parents[2]


def test_the_hub_never_copies_the_proxys_traffic_times(tmp_path: Path) -> None:
    """With an interval of 0 JupyterHub starts no `update_last_activity` callback (jupyterhub/app.py),
    so an open desktop tab's VNC stream through the proxy no longer counts as use."""
    from jupyterhub.app import JupyterHub

    c = Config()
    apply_hub_and_instances(c, tmp_path, REPO, {})
    assert JupyterHub.last_activity_interval.default_value > 0  # JupyterHub's own default would poll
    assert JupyterHub(config=c).last_activity_interval == 0
