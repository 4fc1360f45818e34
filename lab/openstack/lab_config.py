"""Where the lab keeps things and the configuration files of its services, as pure functions.

Why pure: every file the services read is a function of the layout and the password, so it can be
checked as text without starting anything, and a second `up` writes exactly the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
PORTS = {"keystone": 5000, "nova-api": 8774, "placement": 8778, "glance": 9292, "neutron": 9696,
         "rabbit": 5672, "rabbit-dist": 25672, "epmd": 4369}
DATABASES = ("keystone", "placement", "glance", "neutron", "nova_api", "nova_cell0", "nova_cell1")

Ini = dict[str, dict[str, object]]


@dataclass(frozen=True)
class Layout:
    """The lab's folders: state (wiped by a fresh start), configs, logs, process records."""
    root: Path
    venv: Path
    password: str = "secret"
    pg_port: int = 5433

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def clouds(self) -> Path:
        return self.root / "clouds.yaml"

    def db(self, name: str) -> str:
        return f"postgresql+psycopg2://postgres@{HOST}:{self.pg_port}/{name}"


def ini(sections: Ini) -> str:
    """An oslo.config file from {section: {key: value}} (lists joined by commas)."""
    out = []
    for section, values in sections.items():
        out.append(f"[{section}]")
        for k, v in values.items():
            out.append(f"{k} = {','.join(v) if isinstance(v, (list, tuple)) else v}")
        out.append("")
    return "\n".join(out)


def _admin_auth(lay: Layout) -> dict[str, object]:
    return {"auth_type": "password", "auth_url": f"http://{HOST}:5000", "project_domain_name": "Default",
            "user_domain_name": "Default", "project_name": "admin", "username": "admin",
            "password": lay.password, "region_name": "RegionOne"}


def _authtoken(lay: Layout, service_type: str) -> Ini:
    return {"keystone_authtoken": {"www_authenticate_uri": f"http://{HOST}:5000", **_admin_auth(lay),
                                   "service_type": service_type}}


def _transport() -> str:
    return f"rabbit://guest:guest@{HOST}:{PORTS['rabbit']}/"


def keystone(lay: Layout) -> Ini:
    keys = lay.etc / "keystone"
    return {"DEFAULT": {"log_file": lay.logs / "keystone-app.log"}, "database": {"connection": lay.db("keystone")},
            "token": {"provider": "fernet"}, "fernet_tokens": {"key_repository": keys / "fernet-keys"},
            "fernet_receipts": {"key_repository": keys / "fernet-keys"},
            "credential": {"key_repository": keys / "credential-keys"}, "cache": {"enabled": "false"}}


def placement(lay: Layout) -> Ini:
    return {"DEFAULT": {"log_file": lay.logs / "placement-app.log"}, "api": {"auth_strategy": "keystone"},
            "placement_database": {"connection": lay.db("placement")}, **_authtoken(lay, "placement")}


def glance(lay: Layout) -> Ini:
    d = lay.data
    return {"DEFAULT": {"log_file": lay.logs / "glance-app.log", "bind_host": HOST, "bind_port": PORTS["glance"],
                        "enabled_backends": "fs:file", "worker_self_reference_url": f"http://{HOST}:9292"},
            "database": {"connection": lay.db("glance")}, "glance_store": {"default_backend": "fs"},
            "fs": {"filesystem_store_datadir": d / "images"},
            "os_glance_staging_store": {"filesystem_store_datadir": d / "glance" / "staging"},
            "os_glance_tasks_store": {"filesystem_store_datadir": d / "glance" / "tasks"},
            "paste_deploy": {"flavor": "keystone", "config_file": lay.etc / "glance" / "glance-api-paste.ini"},
            "oslo_concurrency": {"lock_path": d / "glance"}, **_authtoken(lay, "image")}


def nova(lay: Layout) -> Ini:
    d = lay.data / "nova"
    # compute_driver: fake.FakeDriver whose snapshots upload a disk, as a hypervisor's do (lab_nova_driver.py)
    return {"DEFAULT": {"host": "lab-compute", "my_ip": HOST, "state_path": d, "log_dir": lay.logs,
                        "transport_url": _transport(), "compute_driver": "lab_nova_driver.SnapshotFakeDriver",
                        "instances_path": d / "instances"},
            "api": {"auth_strategy": "keystone"},
            "quota": {"instances": -1, "cores": -1, "ram": -1},  # tests set real project quotas
            "wsgi": {"api_paste_config": lay.etc / "nova" / "api-paste.ini"},
            "api_database": {"connection": lay.db("nova_api")}, "database": {"connection": lay.db("nova_cell1")},
            "conductor": {"workers": 1}, "scheduler": {"workers": 1, "discover_hosts_in_cells_interval": -1},
            "oslo_concurrency": {"lock_path": d / "locks"}, "vnc": {"enabled": "false"},
            "spice": {"enabled": "false"}, "placement": _admin_auth(lay), "neutron": _admin_auth(lay),
            "glance": {"region_name": "RegionOne"}, "cinder": {"os_region_name": "RegionOne"},
            "service_user": {"send_service_user_token": "false"}, **_authtoken(lay, "compute")}


def neutron(lay: Layout) -> Ini:
    return {"DEFAULT": {"log_file": lay.logs / "neutron-app.log", "bind_host": HOST, "bind_port": PORTS["neutron"],
                        "core_plugin": "ml2", "service_plugins": ["router", "port_forwarding"],
                        "auth_strategy": "keystone", "transport_url": _transport(),
                        "notify_nova_on_port_status_changes": "false",
                        "notify_nova_on_port_data_changes": "false",
                        "api_paste_config": lay.etc / "neutron" / "api-paste.ini"},
            "database": {"connection": lay.db("neutron")}, "oslo_concurrency": {"lock_path": lay.data / "neutron"},
            "nova": _admin_auth(lay), **_authtoken(lay, "network")}


def ml2() -> Ini:
    """ML2 with flat networks and no mechanism driver: the API answers, no agent is needed."""
    return {"ml2": {"type_drivers": "flat", "tenant_network_types": "", "mechanism_drivers": "",
                    "extension_drivers": ""}, "ml2_type_flat": {"flat_networks": "*"}}


def _cloud(lay: Layout, user: str, project: str) -> str:
    return (f"  {'lab' if user == 'admin' else 'lab-' + user}:\n    auth:\n      auth_url: http://{HOST}:5000/v3\n"
            f"      username: {user}\n      password: {lay.password}\n      project_name: {project}\n"
            "      user_domain_name: Default\n      project_domain_name: Default\n"
            "    region_name: RegionOne\n    identity_api_version: 3\n    interface: public\n")


def clouds_yaml(lay: Layout) -> str:
    """`lab` = admin of project admin; `lab-demo` = member of project demo."""
    return "clouds:\n" + _cloud(lay, "admin", "admin") + _cloud(lay, "demo", "demo")


def files(lay: Layout) -> dict[Path, str]:
    """Every configuration file the lab writes, by path (paste files are copied from the venv)."""
    e = lay.etc
    rabbit = f"listeners.tcp.default = {HOST}:{PORTS['rabbit']}\nloopback_users.guest = true\n"
    return {e / "keystone" / "keystone.conf": ini(keystone(lay)),
            e / "placement" / "placement.conf": ini(placement(lay)),
            e / "glance" / "glance-api.conf": ini(glance(lay)),
            e / "nova" / "nova.conf": ini(nova(lay)),
            e / "neutron" / "neutron.conf": ini(neutron(lay)),
            e / "neutron" / "ml2_conf.ini": ini(ml2()),
            e / "rabbitmq" / "rabbitmq.conf": rabbit,
            e / "rabbitmq" / "enabled_plugins": "[].\n",
            lay.clouds: clouds_yaml(lay)}


def rabbit_env(lay: Layout) -> dict[str, str]:
    """RabbitMQ and rabbitmqctl, both on 127.0.0.1 with the lab's own node, cookie and files."""
    arg = "-kernel inet_dist_use_interface {127,0,0,1}"
    d = lay.data / "rabbit"
    return {"HOME": str(d), "RABBITMQ_NODENAME": "rabbit@localhost", "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(PORTS["rabbit"]), "RABBITMQ_DIST_PORT": str(PORTS["rabbit-dist"]),
            "ERL_EPMD_ADDRESS": HOST, "ERL_EPMD_PORT": str(PORTS["epmd"]),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(lay.logs / "rabbit"),
            "RABBITMQ_CONFIG_FILE": str(lay.etc / "rabbitmq" / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(lay.etc / "rabbitmq" / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(lay.run / "rabbit.beam.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": arg, "RABBITMQ_CTL_ERL_ARGS": arg}
