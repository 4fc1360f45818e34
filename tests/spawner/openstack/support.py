"""Backend-level helpers: a configured OpenStackBackend and instance specs, as the spawner makes them."""
from __future__ import annotations

import secrets
import uuid

from traitlets.config import Config

from tests.spawner.openstack import lab
from visa_spawner.backends.base import InstanceSpec, Plan
from visa_spawner.backends.openstack.backend import OpenStackBackend

PLAN = Plan(id="openstack-small", display_name="Small VM", backend="openstack", cpus=1, memory_mb=512,
            image="visa-analysis")


def backend_config(hub_id: str, proxy=None, **traits) -> Config:
    c = Config()
    c.OpenStackBackend.update({
        "cloud": "lab-demo", "clouds_yaml": str(lab.CLOUDS), "hub_id": hub_id, "networks": "none",
        "address_source": "phone-home", "boot_check_interval": 1.0, "request_timeout": 10.0,
        "retry_backoff": 0.2, "build_timeout": 120.0, "boot_timeout": 120.0,
        **({"endpoint_overrides": {"identity": proxy.urls["identity"] + "/v3"}} if proxy else {}),
        **traits,
    })
    return c


def make_backend(hub_id: str, proxy=None, **traits) -> OpenStackBackend:
    return OpenStackBackend(config=backend_config(hub_id, proxy, **traits))


def new_hub_id() -> str:
    return "t" + uuid.uuid4().hex[:8]


def spec(owner: str = "alice", server: str = "", port: int = 8888, **kw) -> InstanceSpec:
    server = server or "vm-" + uuid.uuid4().hex[:6]
    env = {"JUPYTERHUB_API_TOKEN": secrets.token_hex(16), "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api"}
    return InstanceSpec(owner=owner, server_name=server, instance_id=f"{owner}/{server}", display_name=kw.pop("display_name", server),
                        proposal=kw.pop("proposal", ""), plan=kw.pop("plan", PLAN), command=("jupyterhub-singleuser",),
                        env=env, port=port, **kw)


class Progress(list):
    """The progress callback: records (percent, message)."""

    def __call__(self, percent: int, message: str) -> None:
        self.append((percent, message))

    def messages(self) -> list[str]:
        return [m for _, m in self]
