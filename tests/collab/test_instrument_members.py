"""The instrument tab of a shared instance through a real hub: alice's sandbox instance of
P-2026-011 (an experiment on D11, so the spawner passes VISA_INSTRUMENTS=D11) offers
"Instrument control — D11"; per member, the page says whether they may write, and the panel's
display starts inside the sandbox behind the desktop's gated websocket."""
from __future__ import annotations

import json

import pytest

from tests.hubtools import Hub
from tests.instance.jupyter import ARTIFACTS
from tests.rfb import RfbClient

pytestmark = pytest.mark.root

OWNER, PROPOSAL = "alice", "P-2026-011"
NOTE = "read-only: you cannot write to the instrument"


@pytest.fixture(scope="module")
def instance(collab_hub: Hub, person) -> str:
    """alice's running instance; bob USER, dave (the instrument scientist) GUEST."""
    for name in ("alice", "bob", "dave", "carol"):
        person(name)
    alice = person(OWNER)
    r = alice.new_instance(name="Beamtime D11", proposal=PROPOSAL, plan="sandbox-small", screen="1280x720",
                           keyboard="us")
    assert r.status_code == 302, r.text[:500]
    server = r.headers["location"].rsplit("/", 1)[1]
    collab_hub.wait_ready(OWNER, server)
    for member, role in {"bob": "user", "dave": "guest"}.items():
        r = alice.collab("POST", f"instances/{OWNER}/{server}/members", {"member": member, "role": role})
        assert r.status_code == 201, r.text
    yield server
    collab_hub.delete_server(OWNER, server)


def test_the_tile_and_the_page_per_member(instance: str, person) -> None:
    alice = person(OWNER)
    r = alice.instance_call("GET", OWNER, instance, "server-proxy/servers-info")
    assert r.status_code == 200, r.text[:300]
    entries = {s["name"]: s["launcher_entry"] for s in r.json()["server_processes"]}
    assert entries["instrument-d11"]["title"] == "Instrument control — D11"
    assert entries["instrument-d11"]["path_info"] == "visa/instrument/D11"
    assert "instrument-in5" not in entries  # P-2026-011 has no experiment on IN5

    owner_page = alice.open_instance(OWNER, instance, "visa/instrument/D11")
    assert owner_page.status_code == 200 and NOTE not in owner_page.text
    config = json.loads(owner_page.text.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert config["websocketPath"] == "instrument-d11/" and config["viewOnly"] is False

    guest_page = person("dave").open_instance(OWNER, instance, "visa/instrument/D11")
    assert guest_page.status_code == 200 and NOTE in guest_page.text
    # bob is a USER member without INSTRUMENT_CONTROL: read-only on the panel (per person; his input
    # is dropped at the websocket too), though alice's instance may write at the gateway
    user_page = person("bob").open_instance(OWNER, instance, "visa/instrument/D11")
    assert user_page.status_code == 200 and NOTE in user_page.text
    config = json.loads(user_page.text.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert config["viewOnly"] is True
    # a GUEST reaches the panel's page and nothing else of the server-proxy's
    assert person("dave").instance_call("GET", OWNER, instance, "server-proxy/servers-info").status_code == 403
    # carol is on another proposal and holds no share: no page
    assert person("carol").open_instance(OWNER, instance, "visa/instrument/D11").status_code in (403, 404)


def test_the_guest_watches_the_panel_started_in_the_sandbox(instance: str, person) -> None:
    dave = person("dave")
    dave.open_instance(OWNER, instance, "visa/instrument/D11")
    client = RfbClient(dave.websocket(OWNER, instance, "instrument-d11/", timeout=60))
    try:
        assert client.name == "Instrument control — D11"
        assert (client.width, client.height) == (1280, 720)
        client.screen()
        ARTIFACTS.mkdir(exist_ok=True)
        client.save_png(ARTIFACTS / "instrument-panel-D11-guest-via-hub.png")
    finally:
        client.close()
