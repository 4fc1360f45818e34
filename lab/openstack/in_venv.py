"""Steps of the lab that need OpenStack's own packages, run by the lab venv's Python.

usage: in_venv.py neutron-schema DB_URL | catalog CLOUDS_YAML PASSWORD | warm-up CLOUDS_YAML
"""
from __future__ import annotations

import sys
import time
import warnings

HOST = "127.0.0.1"
ENDPOINTS = [("placement", "placement", f"http://{HOST}:8778"), ("glance", "image", f"http://{HOST}:9292"),
             ("nova", "compute", f"http://{HOST}:8774/v2.1"), ("neutron", "network", f"http://{HOST}:9696")]


def neutron_schema(url: str) -> None:
    """Neutron's schema from its models (as its own unit tests do): its alembic chain has a
    MySQL-only step that fails on PostgreSQL. The caller then stamps it at heads."""
    import sqlalchemy
    from neutron.db.migration.models import head

    head.get_metadata().create_all(sqlalchemy.create_engine(url))


def _connect(clouds: str):
    import openstack

    config = openstack.config.OpenStackConfig(config_files=[clouds])
    return openstack.connection.Connection(config=config.get_one(cloud="lab"))


def catalog(clouds: str, password: str) -> None:
    """Services and endpoints (keystone's bootstrap made the admin), and a member of project demo."""
    c = _connect(clouds)
    for name, kind, url in ENDPOINTS:
        service = c.identity.create_service(name=name, type=kind)
        for interface in ("public", "internal", "admin"):
            c.identity.create_endpoint(service_id=service.id, interface=interface, url=url, region_id="RegionOne")
    project = c.identity.create_project(name="demo", domain_id="default")
    user = c.identity.create_user(name="demo", password=password, domain_id="default", default_project_id=project.id)
    c.identity.assign_project_role_to_user(project, user, c.identity.find_role("member"))
    c.identity.assign_project_role_to_user(c.identity.find_project("admin"), c.identity.find_user("admin"),
                                           c.identity.find_role("service"))


def warm_up(clouds: str, timeout: float = 150) -> None:
    """Neutron's first query of ports answers 500 until its SQLAlchemy mappers are configured by any
    other query; then wait until nova-compute reports up and has a resource provider."""
    c = _connect(clouds)
    list(c.network.networks())
    list(c.network.ports())
    deadline = time.monotonic() + timeout
    services: dict = {}
    while time.monotonic() < deadline:
        services = {s.binary: s.state for s in c.compute.services()}
        if services.get("nova-compute") == "up" and list(c.placement.resource_providers()):
            print("services:", services)
            return
        time.sleep(0.5)
    raise SystemExit(f"nova-compute did not register within {timeout:.0f} s: {services}")


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    step, args = sys.argv[1], sys.argv[2:]
    {"neutron-schema": neutron_schema, "catalog": catalog, "warm-up": warm_up}[step](*args)
