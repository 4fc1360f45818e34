"""The service's database access and the hub configuration it adds (migrations: test_migrations.py)."""
from __future__ import annotations

import pytest
from traitlets.config import Config

from visa_collab import hub_config, roles


def test_apply_extends_the_profile(tmp_path) -> None:
    c = Config()
    c.JupyterHub.services = [{"name": "other", "api_token": "x"}]
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "read:hub"]}]
    c.Spawner.environment = {"KEEP": "1"}
    c.Spawner.oauth_client_allowed_scopes = ["read:users:name!user"]
    hub_config.apply(c, state_dir=tmp_path, port=9999)
    assert set(roles.CUSTOM_SCOPES) <= set(c.JupyterHub.custom_scopes)
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "visa-collab"]
    assert service["url"] == "http://127.0.0.1:9999" and service["oauth_no_confirm"]
    assert service["environment"]["VISA_COLLAB_DB_URL"] == f"sqlite:///{tmp_path / 'visa_collab.sqlite'}"
    assert {s["name"] for s in c.JupyterHub.services} == {"other", "visa-collab"}
    user_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")
    assert set(user_role["scopes"]) == {"self", "read:hub", "access:services!service=visa-collab"}
    service_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "visa-collab")
    assert {"shares", "access:servers", *roles.ROLE_SCOPES.values()} <= set(service_role["scopes"])
    assert c.Spawner.environment["KEEP"] == "1"
    assert c.Spawner.environment["VISA_COLLAB_URL"] == "http://127.0.0.1:9999/services/visa-collab/"
    assert set(c.Spawner.server_token_scopes) == {"users:activity!user", "access:servers!server", "read:shares!server"}
    allowed = c.Spawner.oauth_client_allowed_scopes
    assert "read:users:name!user" in allowed
    assert "custom:visa-guest!server" in allowed and "custom:visa-admin" in allowed
    # applying twice changes nothing
    before = (list(c.JupyterHub.services), list(c.JupyterHub.load_roles))
    hub_config.apply(c, state_dir=tmp_path, port=9999)
    assert [s["name"] for s in c.JupyterHub.services] == [s["name"] for s in before[0]]
    assert len(c.JupyterHub.load_roles) == len(before[1])


def test_a_callable_allowed_scopes_is_refused(tmp_path) -> None:
    c = Config()
    c.Spawner.oauth_client_allowed_scopes = lambda spawner: []
    with pytest.raises(ValueError, match="must be a list"):
        hub_config.apply(c, state_dir=tmp_path, port=9999)


def test_port_is_kept_in_the_state_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VISA_COLLAB_PORT", raising=False)
    first, second = Config(), Config()
    hub_config.apply(first, state_dir=tmp_path)
    hub_config.apply(second, state_dir=tmp_path)
    assert first.JupyterHub.services[-1]["url"] == second.JupyterHub.services[-1]["url"]
    assert (tmp_path / "visa_collab_port").stat().st_mode & 0o077 == 0
