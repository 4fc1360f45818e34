"""The demo instruments' ports never coincide with a port the hub's config already names."""
from __future__ import annotations

from traitlets.config import Config

from visa_instruments.hub_config import apply, distinct_port, ports_in_use


def test_a_kept_port_that_is_taken_is_chosen_again(tmp_path):
    (tmp_path / "p").write_text("8081")
    taken = {8081}
    port = distinct_port(tmp_path / "p", taken)
    assert port != 8081 and int((tmp_path / "p").read_text()) == port and port in taken


def test_every_port_is_distinct_from_the_hubs_and_each_other(tmp_path):
    c = Config()
    c.JupyterHub.port = 8000
    c.JupyterHub.hub_bind_url = "http://127.0.0.1:8081"
    c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
    c.JupyterHub.services = [{"name": "visa-collab", "url": "http://127.0.0.1:9000"}]
    for name in ("d11_ca", "d11_pva", "visa_instrument_gateway"):  # kept from an earlier start, colliding
        (tmp_path / f"visa_ioc_{name}_port" if name != "visa_instrument_gateway" else tmp_path / f"{name}_port").write_text(
            "8081" if name != "d11_pva" else "9000")
    gateway = apply(c, state_dir=tmp_path, catalogue="cat.yaml", hub_db_url="sqlite://", instruments=["D11"])
    assert ports_in_use(Config()) == set()
    ours = [int(p.read_text()) for p in tmp_path.glob("*_port")]
    assert len(ours) == len(set(ours)) == 5  # CA, repeater, PVA, gateway PVA, gateway HTTP
    assert not set(ours) & {8000, 8001, 8081, 9000}
    assert gateway == f"127.0.0.1:{int((tmp_path / 'visa_instrument_gateway_port').read_text())}"
    assert c.Backend.instrument_gateway == gateway
