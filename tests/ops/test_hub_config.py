"""visa_ops.hub_config.apply against a bare Config: the service, its settings, the demo SMTP sink."""
from __future__ import annotations

import json
import stat

from traitlets.config import Config

import visa_collab.hub_config
from visa_ops import hub_config


def services(c: Config) -> dict[str, dict]:
    return {s["name"]: s for s in c.JupyterHub.services}


def test_demo_gets_the_service_and_a_local_smtp_sink(tmp_path):
    c = Config()
    c.JupyterHub.port = 8123
    c.VisaSpawner.plans = [{"id": "small", "backend": "sandbox", "lifetime_days": 30, "auto_extend_days": 3},
                           {"id": "vm", "backend": "qemu"}]
    c.VisaSpawner.archive_dir = "/srv/archives"
    hub_config.apply(c, state_dir=tmp_path, env={"VISA_OPS_POLICY": json.dumps({"minimum_notice_hours": 6})})
    s = services(c)
    ops, sink = s["visa-ops"], s["visa-ops-mail"]
    env = ops["environment"]
    assert ops["command"][1:] == ["-m", "visa_ops.app"] and ops["oauth_no_confirm"] is True
    assert env["VISA_OPS_DB_URL"] == f"sqlite:///{tmp_path / 'visa_ops.sqlite'}"
    assert stat.S_IMODE((tmp_path / "visa_ops.sqlite").stat().st_mode) == 0o600
    assert env["VISA_OPS_HUB_DB_URL"].startswith("sqlite:////") and env["VISA_OPS_HUB_DB_URL"].endswith("jupyterhub.sqlite")
    assert json.loads(env["VISA_OPS_POLICY"]) == {"minimum_notice_hours": 6,
                                                  "plan_rules": {"small": {"lifetime_days": 30, "auto_extend_days": 3}}}
    assert json.loads(env["VISA_OPS_PLAN_BACKENDS"]) == {"small": "sandbox", "vm": "qemu"}
    assert env["VISA_OPS_ARCHIVE_DIR"] == "/srv/archives" and env["VISA_OPS_PUBLIC_URL"] == "http://127.0.0.1:8123"
    port = env["VISA_OPS_SMTP_URL"].rsplit(":", 1)[1]
    assert sink["command"][1:7] == ["-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c"]
    assert sink["command"][-1] == env["VISA_OPS_OUTBOX_MAILDIR"] == str(tmp_path / "outbox")
    assert "VISA_OPS_CLOCK_OFFSET" not in env  # only tests set it
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert "delete:servers" in roles["visa-ops"]["scopes"] and "admin:auth_state" in roles["visa-ops"]["scopes"]
    assert "access:services!service=visa-ops" in roles["user"]["scopes"]
    # without the collab service's custom scopes, tokens cannot ask for custom:visa-admin
    assert ops["oauth_client_allowed_scopes"] == ["access:services!service=visa-ops"]


def test_production_smtp_and_postgres_no_sink(tmp_path):
    c = Config()
    visa_collab.hub_config.apply(c, state_dir=tmp_path)
    hub_config.apply(c, state_dir=tmp_path, env={
        "VISA_OPS_SMTP_URL": "smtp://mailer:secret@smtp.example.org:587?starttls=1",
        "VISA_OPS_DB_URL": "postgresql://ops@db/visa_ops", "VISA_HUB_DB_URL": "postgresql://hub@db/hub",
        "VISA_OPS_PUBLIC_URL": "https://visa.example.org/"})
    s = services(c)
    assert "visa-ops-mail" not in s and "visa-collab" in s
    env = s["visa-ops"]["environment"]
    assert env["VISA_OPS_SMTP_URL"].startswith("smtp://mailer:secret@") and "VISA_OPS_OUTBOX_MAILDIR" not in env
    assert env["VISA_OPS_DB_URL"].startswith("postgresql+") and env["VISA_OPS_HUB_DB_URL"].startswith("postgresql+")
    assert env["VISA_OPS_PUBLIC_URL"] == "https://visa.example.org"
    assert "custom:visa-admin" in s["visa-ops"]["oauth_client_allowed_scopes"]
    # applying twice replaces, never duplicates
    hub_config.apply(c, state_dir=tmp_path, env={})
    assert [x["name"] for x in c.JupyterHub.services].count("visa-ops") == 1
