"""The production profile's environment mapping, applied to a bare Config (no hub started)."""
from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from visa_authenticator.cache import CachedCatalogue
from visa_authenticator.oidc import VisaOAuthenticator
from visa_authenticator.sql_catalogue import SqlCatalogue
from visa_profiles import common as hub_common
from visa_profiles.env import SettingsError
from visa_profiles.production import REQUIRED, production_config, with_pg_driver

REPO = Path(__file__).resolve().parents[2]
ENV = {
    "VISA_HUB_DB_URL": "postgresql://hub:pw@db.example/jupyterhub",
    "JUPYTERHUB_CRYPT_KEY": "ab" * 32,
    "VISA_OIDC_ISSUER": "https://login.example/realms/facility/",
    "VISA_OIDC_CLIENT_ID": "visa-hub",
    "VISA_OIDC_CLIENT_SECRET": "s3cret",
    "VISA_OIDC_CALLBACK_URL": "https://visa.example/hub/oauth_callback",
    "VISA_CATALOGUE_DB_URL": "postgresql://visa_ro:pw@userdb.example/useroffice",
}


def _traits_exist(c: Config, classes: dict[str, type]) -> None:
    """Every configured name is a real trait: a typo would otherwise be ignored silently."""
    for section, values in c.items():
        assert section in classes, f"unexpected section {section}"
        cls = classes[section]
        missing = [name for name in values if not cls.class_traits(config=True).get(name)]
        assert not missing, f"{section}: {missing} are not configurable traits"


def test_full_environment_maps_onto_real_traits() -> None:
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator

    c = production_config({**ENV, "VISA_AUTH_REFRESH_AGE": "120", "VISA_CATALOGUE_CACHE_TTL": "30",
                           "VISA_ROLE_QUOTAS": '{"STAFF": 5}', "VISA_OIDC_AUTO_LOGIN": "no"}, pg_driver="psycopg2")  # fmt: skip
    _traits_exist(c, {"JupyterHub": JupyterHub, "Authenticator": Authenticator, "VisaOAuthenticator": VisaOAuthenticator,
                      "SqlCatalogue": SqlCatalogue, "CachedCatalogue": CachedCatalogue})  # fmt: skip
    assert c.JupyterHub.db_url == "postgresql+psycopg2://hub:pw@db.example/jupyterhub"
    assert c.Authenticator.enable_auth_state is True and c.Authenticator.auto_login is False
    assert c.Authenticator.auth_refresh_age == 120
    auth = VisaOAuthenticator(config=c)
    assert auth.oidc_issuer == "https://login.example/realms/facility"  # trailing slash dropped
    assert (auth.client_id, auth.client_secret) == ("visa-hub", "s3cret")
    assert auth.username_claim == "preferred_username" and auth.scope == ["openid", "profile", "email"]
    assert auth.role_quotas == {"STAFF": 5}
    assert isinstance(auth.catalogue, CachedCatalogue) and auth.catalogue.ttl == 30
    assert isinstance(auth.catalogue_provider, SqlCatalogue)
    assert auth.catalogue_provider.url == "postgresql+psycopg2://visa_ro:pw@userdb.example/useroffice"


def test_every_problem_reported_at_once() -> None:
    with pytest.raises(SettingsError) as e:
        production_config({})
    for name in REQUIRED:
        assert f"{name} is required" in str(e.value)
    assert "VISA_OIDC_CLIENT_SECRET or VISA_OIDC_CLIENT_SECRET_FILE is required" in str(e.value)

    bad = {**ENV, "VISA_HUB_DB_URL": "sqlite:///hub.sqlite", "VISA_AUTH_REFRESH_AGE": "soon",
           "VISA_OIDC_AUTO_LOGIN": "maybe", "VISA_ROLE_QUOTAS": "[1]", "VISA_CATALOGUE_CACHE_TTL": "-1"}  # fmt: skip
    with pytest.raises(SettingsError) as e:
        production_config(bad)
    message = str(e.value)
    for fragment in ("VISA_HUB_DB_URL must be a PostgreSQL URL", "VISA_AUTH_REFRESH_AGE='soon'",
                     "VISA_OIDC_AUTO_LOGIN='maybe'", "VISA_ROLE_QUOTAS must be a JSON object",
                     "VISA_CATALOGUE_CACHE_TTL='-1'"):  # fmt: skip
        assert fragment in message
    assert "s3cret" not in message and "pw@" not in message  # no secrets in the message


def test_client_secret_from_a_file() -> None:
    env = {k: v for k, v in ENV.items() if k != "VISA_OIDC_CLIENT_SECRET"}
    c = production_config({**env, "VISA_OIDC_CLIENT_SECRET_FILE": "/run/secrets/oidc"},
                          read_file=lambda path: "from-file")  # fmt: skip
    assert c.VisaOAuthenticator.client_secret == "from-file"

    def unreadable(path: str) -> str:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(SettingsError, match="cannot read /run/secrets/oidc"):
        production_config({**env, "VISA_OIDC_CLIENT_SECRET_FILE": "/run/secrets/oidc"}, read_file=unreadable)


@pytest.mark.parametrize("url, driver, expected", [
    ("postgresql://u@h/db", "psycopg2", "postgresql+psycopg2://u@h/db"),
    ("postgresql://u@h/db", "psycopg", "postgresql+psycopg://u@h/db"),
    ("postgresql+psycopg2://u@h/db", "psycopg", "postgresql+psycopg2://u@h/db"),
    ("mysql+pymysql://u@h/db", "psycopg2", "mysql+pymysql://u@h/db"),
])  # fmt: skip
def test_postgres_driver_named(url: str, driver: str, expected: str) -> None:
    assert with_pg_driver(url, driver) == expected


def test_vm_plan_only_with_a_built_image(tmp_path: Path) -> None:
    """No image: sandbox plans only, and the home page says why and what an admin runs."""
    c = Config()
    hub_common.apply_vm_plan(c, tmp_path, {"VISA_IMAGE_DIR": str(tmp_path / "images")})
    assert [p["backend"] for p in c.VisaSpawner.plans] == ["sandbox", "sandbox"]
    assert "make image" in c.JupyterHub.template_vars["visa_plans_note"]

    build = tmp_path / "images" / "b1"
    build.mkdir(parents=True)
    for name in ("base.qcow2", "vmlinuz", "initrd.img"):
        (build / name).write_bytes(b"x")
    (build / "manifest.json").write_text('{"recipe_hash": "abc"}')
    (tmp_path / "images" / "current").symlink_to(build)
    c = Config()
    hub_common.apply_vm_plan(c, tmp_path, {"VISA_IMAGE_DIR": str(tmp_path / "images")})
    assert [p["id"] for p in c.VisaSpawner.plans][-1] == "vm"
    assert c.QemuBackend.boot_timeout < c.VisaSpawner.start_timeout
    assert "template_vars" not in c.JupyterHub


def test_shared_hub_and_instance_settings(tmp_path: Path) -> None:
    """hub_common (shared with the demo profile) sets only real traits."""
    from jupyterhub.app import JupyterHub
    from jupyterhub.proxy import ConfigurableHTTPProxy
    from jupyterhub.spawner import Spawner

    from visa_spawner.backends.qemu.backend import QemuBackend
    from visa_spawner.backends.sandbox.backend import SandboxBackend
    from visa_spawner.spawner import VisaSpawner

    c = Config()
    hub_common.apply_hub_and_instances(c, tmp_path, REPO, {"VISA_HUB_PORT": "9000", "VISA_DATA_ROOT": "/data"})
    _traits_exist(c, {"JupyterHub": JupyterHub, "ConfigurableHTTPProxy": ConfigurableHTTPProxy,
                      "VisaSpawner": VisaSpawner, "SandboxBackend": SandboxBackend,
                      "QemuBackend": QemuBackend, "Spawner": Spawner})  # fmt: skip
    assert (c.JupyterHub.ip, c.JupyterHub.port) == ("127.0.0.1", 9000) and c.VisaSpawner.data_root == "/data"
    assert (tmp_path / "proxy_token").stat().st_mode & 0o777 == 0o600
