"""A real hub: /hub/metrics after a sandbox spawn (behind read:metrics), the capacity API for admins
only, and a plan switched off and on again without a restart."""
from __future__ import annotations

import re

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.hubtools import Browserless, unique
from tests.spawner.sandbox.test_instances import ALICE_PROPOSAL, create
from visa_spawner.plan_switch import write_disabled

pytestmark = pytest.mark.root


def api_token(client: Browserless) -> str:
    """A token of this person, asked for as the hub's token page does (cookie + XSRF header)."""
    xsrf = next(c.value for c in client.s.cookies if c.name == "_xsrf" and c.path.startswith("/hub"))
    r = client.s.post(f"{client.hub.url}/hub/api/users/{client.user}/tokens", json={"note": "metrics test"},
                      headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def get(hub, path: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(f"{hub.url}/hub{path}", headers=headers, timeout=30)


def samples(text: str, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples if s.name == name}


def test_metrics_after_a_sandbox_spawn_and_capacity_for_admins_only(hub, login):
    alice, admin = login("alice"), login("admin")
    server = create(alice, unique("Metrics"))
    hub.wait_ready("alice", server)
    admin_token, alice_token = api_token(admin), api_token(alice)

    assert get(hub, "/metrics").status_code == 403, "metrics need authentication"
    assert get(hub, "/metrics", alice_token).status_code == 403, "metrics need read:metrics"
    r = get(hub, "/metrics", admin_token)
    assert r.status_code == 200
    counts = samples(r.text, "visa_spawn_duration_seconds_count")
    assert counts.get((("backend", "sandbox"), ("plan", "sandbox-small")), 0) >= 1, counts
    instances = samples(r.text, "visa_instances")
    assert instances.get((("backend", "sandbox"), ("plan", "sandbox-small"), ("state", "running")), 0) >= 1, instances

    denied = get(hub, "/api/visa/capacity", alice_token)
    assert denied.status_code == 403 and "read:servers" in denied.json()["message"]
    assert hub.api("GET", "/visa/capacity").status_code == 200, "a service reading every server (visa-ops) may"
    r = get(hub, "/api/visa/capacity", admin_token)
    assert r.status_code == 200, r.text
    sandbox = r.json()["backends"]["sandbox"]
    assert sandbox["host"]["cpus"] >= 1 and sandbox["host"]["memory_total_mb"] > 0
    assert sandbox["instances_running"] >= 1 and sandbox["gpus_free"] == 0
    assert {"id": "sandbox-small", "display_name": "Small sandbox", "backend": "sandbox", "gpus": 0,
            "enabled": True, "available": True, "why": ""} in r.json()["plans"]


def test_a_plan_switched_off_is_not_offered_nor_created_then_back_without_a_restart(hub, hub_state, login):
    alice = login("alice")
    switch = hub_state / "plans-disabled.json"
    offered = re.compile(r'<option value="sandbox-large"')
    assert offered.search(alice.home().text)
    try:
        write_disabled(switch, ["sandbox-large"])
        assert not offered.search(alice.home().text)
        r = alice.new_instance(name=unique("Large"), proposal=ALICE_PROPOSAL, plan="sandbox-large",
                               screen="1280x720", keyboard="fr")
        assert r.status_code == 400
        assert "cannot be started: disabled by the facility&#39;s administrators for now" in r.text
        assert not [n for n in hub.api("GET", "/users/alice").json()["servers"] if n]
    finally:
        write_disabled(switch, [])
    assert offered.search(alice.home().text)
