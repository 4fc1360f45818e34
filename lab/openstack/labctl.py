"""The project's OpenStack lab on 127.0.0.1: up, down, status (see README.md beside this file).

usage: python3 lab/openstack/labctl.py up [--fresh] | down [--now] | status
Standard library only, so any Python 3.11 runs it; the services run from the lab's own venv.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import lab_config as cfg
import lab_venv
from lab_procs import Service, ServiceFailed, http_answers, port_open, run_step, stop_all

HERE = Path(__file__).resolve().parent
H = cfg.HOST
APIS = {"keystone": f"http://{H}:5000/v3", "placement": f"http://{H}:8778/", "glance": f"http://{H}:9292/",
        "neutron": f"http://{H}:9696/", "nova-api": f"http://{H}:8774/"}
OPENSTACK = ["nova-compute", "nova-scheduler", "nova-conductor", "nova-api", "neutron", "glance", "placement",
             "keystone"]  # stopped first, in this order; then rabbit and epmd, then pg
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
READY = "ready"  # run/ready: written last by a successful up; holds the venv key it ran with
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def layout() -> cfg.Layout:
    return cfg.Layout(root=Path(os.environ.get("OPENSTACK_LAB_DIR", "/var/tmp/visahub-openstack-lab")),
                      venv=Path(os.environ.get("OPENSTACK_LAB_VENV", "/var/tmp/visahub-openstack-lab-venv")),
                      password=os.environ.get("OPENSTACK_LAB_PASSWORD", "secret"),
                      pg_port=int(os.environ.get("OPENSTACK_LAB_PG_PORT", "5433")))


def services(lay: cfg.Layout) -> dict[str, Service]:
    return {n: Service(lay.run, lay.logs, n) for n in [*OPENSTACK, "rabbit", "epmd", "pg"]}


@contextmanager
def locked(lay: cfg.Layout) -> Iterator[None]:
    """One up/down at a time per lab folder (two test runs starting together wait for each other)."""
    lay.root.mkdir(parents=True, exist_ok=True)
    with open(lay.root / ".labctl.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise ServiceFailed("PostgreSQL is not installed (apt-get install postgresql)")
    return found[-1].parent


def ensure_packages() -> None:
    """RabbitMQ and PostgreSQL from Debian, installed once (the lab needs root for them anyway)."""
    if (RABBIT_BIN / "rabbitmq-server").exists() and list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        return
    say("installing rabbitmq-server and postgresql (apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "rabbitmq-server", "postgresql"]):
        r = subprocess.run(argv, env=env, capture_output=True, text=True)
        if r.returncode:
            raise ServiceFailed(f"{' '.join(argv)} failed:\n{r.stdout[-1500:]}{r.stderr[-1500:]}")


def healthy(lay: cfg.Layout, svc: dict[str, Service], key: str) -> bool:
    ready = lay.run / READY
    return (ready.exists() and ready.read_text().strip() == key and lay.clouds.exists()
            and all(s.alive() for s in svc.values()) and all(http_answers(u)() for u in APIS.values()))


def down(lay: cfg.Layout, now: bool = False) -> None:
    """Stop what this lab recorded in run/ (nothing else); data/ and logs/ stay for a look.
    `now`: SIGKILL the services at once (their graceful stop takes ~9 s; a test run throws the
    state away, the next `up --fresh` wipes it); PostgreSQL still gets its fast shutdown."""
    svc = services(lay)
    (lay.run / READY).unlink(missing_ok=True)
    if now:
        stop_all([svc[n] for n in [*OPENSTACK, "rabbit", "epmd"]], sig=signal.SIGKILL, grace=0)
        stop_all([svc["pg"]], sig=signal.SIGINT)
        return
    polite = None
    if svc["rabbit"].alive():
        polite = subprocess.Popen([str(RABBIT_BIN / "rabbitmqctl"), "-n", "rabbit@localhost", "stop"],
                                  env={**os.environ, **cfg.rabbit_env(lay)}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    stop_all([svc[n] for n in OPENSTACK])
    if polite:
        try:
            polite.wait(timeout=20)
        except subprocess.TimeoutExpired:
            polite.kill()
            polite.wait()
    stop_all([svc["rabbit"], svc["epmd"]])
    stop_all([svc["pg"]], sig=signal.SIGINT)  # PostgreSQL's fast shutdown


def fresh_state(lay: cfg.Layout) -> None:
    """Wipe data/, etc/, run/ and the services' logs; write every config file."""
    for d in (lay.data, lay.etc, lay.run):
        shutil.rmtree(d, ignore_errors=True)
    if lay.logs.exists():
        for old in lay.logs.iterdir():
            if not old.name.startswith(("venv", "up")):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    for d in (lay.data / "images", lay.data / "nova" / "locks", lay.data / "glance" / "staging",
              lay.data / "glance" / "tasks", lay.data / "neutron", lay.data / "rabbit", lay.logs, lay.run):
        d.mkdir(parents=True, exist_ok=True)
    for path, text in cfg.files(lay).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    v = lay.venv / "etc"
    for src, dst in ((v / "glance" / "glance-api-paste.ini", lay.etc / "glance"),
                     (v / "nova" / "api-paste.ini", lay.etc / "nova"),
                     (v / "neutron" / "api-paste.ini", lay.etc / "neutron")):
        shutil.copy(src, dst)


def check_ports(lay: cfg.Layout) -> None:
    taken = [f"{port} ({name})" for name, port in {**cfg.PORTS, "pg": lay.pg_port}.items() if port_open(port)]
    if taken:
        raise ServiceFailed(f"port(s) {', '.join(taken)} on {H} already taken by processes this lab did not "
                            f"start (another lab or test run?); stop them first")


def start_postgres(lay: cfg.Layout, pg: Service) -> None:
    bindir, data, sock = pg_bin(), lay.data / "pg", lay.data / "pgsock"
    for d in (data, sock):
        d.mkdir()
        shutil.chown(d, "postgres", "postgres")
    as_pg = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    run_step("pg initdb", [*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                           "-E", "UTF8", "--locale=C.UTF-8"], lay.logs / "pg-initdb.log")
    pg.start([*as_pg, str(bindir / "postgres"), "-D", str(data), "-h", H, "-p", str(lay.pg_port), "-k", str(sock),
              "-c", "max_connections=600", "-c", "fsync=off", "-c", "synchronous_commit=off",
              "-c", "full_page_writes=off", "-c", "shared_buffers=256MB"])
    ready = ["pg_isready", "-q", "-h", H, "-p", str(lay.pg_port)]
    pg.wait(lambda: subprocess.run([str(bindir / ready[0]), *ready[1:]]).returncode == 0, 60)
    for db in cfg.DATABASES:
        run_step(f"pg create database {db}", [str(bindir / "psql"), "-q", "-h", H, "-p", str(lay.pg_port),
                                              "-U", "postgres", "-c", f"CREATE DATABASE {db}", "postgres"],
                 lay.logs / "pg-createdb.log")
    say("postgres up")


def db_syncs(lay: cfg.Layout) -> dict[str, Callable[[], None]]:
    """Schema steps of the services other than keystone, each a sequence run in its own thread."""
    b, e, py = lay.venv / "bin", lay.etc, str(lay.venv / "bin" / "python")
    nova = [str(b / "nova-manage"), "--config-file", str(e / "nova" / "nova.conf")]
    neutron = ["--config-file", str(e / "neutron" / "neutron.conf"),
               "--config-file", str(e / "neutron" / "ml2_conf.ini")]
    steps = {
        "nova": [[*nova, "api_db", "sync"], [*nova, "cell_v2", "map_cell0", "--database_connection",
                                             lay.db("nova_cell0")],
                 [*nova, "cell_v2", "create_cell", "--name", "cell1", "--verbose"], [*nova, "db", "sync"]],
        "neutron": [[py, str(HERE / "in_venv.py"), "neutron-schema", lay.db("neutron")],
                    [str(b / "neutron-db-manage"), *neutron, "stamp", "heads"]],
        "placement": [[str(b / "placement-manage"), "--config-file", str(e / "placement" / "placement.conf"),
                       "db", "sync"]],
        "glance": [[str(b / "glance-manage"), "--config-file", str(e / "glance" / "glance-api.conf"), "db_sync"]],
    }

    def runner(name: str) -> Callable[[], None]:
        return lambda: [run_step(f"{name} db sync", argv, lay.logs / f"sync-{name}.log") for argv in steps[name]]
    return {name: runner(name) for name in steps}


def keystone_setup(lay: cfg.Layout) -> None:
    km = [str(lay.venv / "bin" / "keystone-manage"), "--config-file", str(lay.etc / "keystone" / "keystone.conf")]
    url = f"http://{H}:5000/v3"
    for argv in ([*km, "db_sync"], [*km, "fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 [*km, "credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 [*km, "bootstrap", "--bootstrap-password", lay.password, "--bootstrap-username", "admin",
                  "--bootstrap-project-name", "admin", "--bootstrap-role-name", "admin",
                  "--bootstrap-service-name", "keystone", "--bootstrap-region-id", "RegionOne",
                  "--bootstrap-admin-url", url, "--bootstrap-public-url", url, "--bootstrap-internal-url", url]):
        run_step("keystone db", argv, lay.logs / "sync-keystone.log")
    say("keystone db ready")


def wsgi(lay: cfg.Layout, svc: Service, module: str, port: int, env: dict[str, str]) -> None:
    svc.start([str(lay.venv / "bin" / "python"), str(HERE / "serve.py"), svc.name, f"{H}:{port}", module], env)


def start(lay: cfg.Layout, svc: dict[str, Service]) -> None:
    """Everything, in the order the services need one another."""
    py, e = str(lay.venv / "bin" / "python"), lay.etc
    start_postgres(lay, svc["pg"])
    renv = cfg.rabbit_env(lay)
    svc["epmd"].start(["/usr/bin/epmd", "-address", H, "-port", str(cfg.PORTS["epmd"])])
    svc["rabbit"].start([str(RABBIT_BIN / "rabbitmq-server")], renv)
    with ThreadPoolExecutor(4) as pool:
        syncs = [pool.submit(f) for f in db_syncs(lay).values()]
        keystone_setup(lay)
        wsgi(lay, svc["keystone"], "keystone.wsgi.api:application", 5000,
             {"OS_KEYSTONE_CONFIG_DIR": str(e / "keystone")})
        for f in syncs:
            f.result()  # raises the ServiceFailed of a failed sync, naming it
    say("all databases ready")
    svc["rabbit"].wait(lambda: port_open(cfg.PORTS["rabbit"]), 120, "listen on 5672")
    say("rabbitmq up")
    wsgi(lay, svc["placement"], "placement.wsgi.api:application", 8778,
         {"OS_PLACEMENT_CONFIG_DIR": str(e / "placement")})
    wsgi(lay, svc["glance"], "glance.wsgi.api:application", 9292, {"OS_GLANCE_CONFIG_DIR": str(e / "glance")})
    wsgi(lay, svc["neutron"], "neutron.wsgi.api:application", 9696,
         {"OS_NEUTRON_CONFIG_DIR": str(e / "neutron"), "OS_NEUTRON_CONFIG_FILES": "neutron.conf;ml2_conf.ini"})
    svc["keystone"].wait(http_answers(APIS["keystone"]), 120)
    run_step("keystone catalog", [py, str(HERE / "in_venv.py"), "catalog", str(lay.clouds), lay.password],
             lay.logs / "catalog.log")
    say("catalog ready")
    # nova's services only after the catalog: nova-scheduler caches "placement not in catalog" forever
    nova = ["--config-file", str(e / "nova" / "nova.conf")]
    svc["nova-conductor"].start([str(lay.venv / "bin" / "nova-conductor"), *nova])
    svc["nova-scheduler"].start([str(lay.venv / "bin" / "nova-scheduler"), *nova])
    wsgi(lay, svc["nova-api"], "nova.wsgi.osapi_compute:application", 8774, {"OS_NOVA_CONFIG_DIR": str(e / "nova")})
    # nova-compute's first call to the conductor is lost (60 s timeout) if its queue does not exist yet
    queues = [str(RABBIT_BIN / "rabbitmqctl"), "-n", "rabbit@localhost", "-q", "list_queues", "name"]
    svc["nova-conductor"].wait(lambda: "conductor" in subprocess.run(
        queues, env={**os.environ, **renv}, capture_output=True, text=True).stdout.split(), 180, "consume its queue")
    say("nova-conductor consuming")
    # FakeDriver whose snapshots upload a disk to Glance, as a real hypervisor does (lab_nova_driver.py)
    svc["nova-compute"].start([py, str(HERE / "lab_nova_driver.py"), *nova])
    for name in ("placement", "glance", "neutron", "nova-api"):
        svc[name].wait(http_answers(APIS[name]), 180)
        say(f"{name} up")
    run_step("nova-compute registration", [py, str(HERE / "in_venv.py"), "warm-up", str(lay.clouds)],
             lay.logs / "warm-up.log")
    run_step("nova discover_hosts", [str(lay.venv / "bin" / "nova-manage"), *nova, "cell_v2", "discover_hosts"],
             lay.logs / "discover-hosts.log")
    say("nova-compute registered")


def up(lay: cfg.Layout, fresh: bool) -> None:
    if os.geteuid() != 0:
        raise ServiceFailed("the lab needs root (apt packages, PostgreSQL run as the postgres account)")
    ensure_packages()
    built = lab_venv.ensure(lay.venv, lay.logs / "venv.log")
    say(f"venv {'built' if built else 'reused'}: {lay.venv}")
    key = lab_venv.key()
    svc = services(lay)
    if not fresh and healthy(lay, svc, key):
        say(f"already up. export OS_CLIENT_CONFIG_FILE={lay.clouds} OS_CLOUD=lab")
        return
    down(lay)
    check_ports(lay)
    fresh_state(lay)
    try:
        start(lay, svc)
    except BaseException:
        down(lay)  # nothing half-started is left behind; the logs stay
        raise
    (lay.run / READY).write_text(key + "\n")
    say(f"UP. export OS_CLIENT_CONFIG_FILE={lay.clouds} OS_CLOUD=lab")


def status(lay: cfg.Layout) -> bool:
    svc = services(lay)
    for name, s in svc.items():
        answers = f", HTTP {'answers' if http_answers(APIS[name])() else 'silent'}" if name in APIS else ""
        print(f"{name:15} {'running' if s.alive() else 'stopped'}{answers}")
    ok = healthy(lay, svc, lab_venv.key())
    print("lab is up" if ok else "lab is not (fully) up")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--fresh", action="store_true", help="up: restart with empty state even if already up")
    parser.add_argument("--now", action="store_true", help="down: kill the services at once (state thrown away)")
    args = parser.parse_args(argv)
    lay = layout()
    try:
        if args.command == "status":
            return 0 if status(lay) else 1
        with locked(lay):
            if args.command == "up":
                up(lay, args.fresh)
            else:
                down(lay, args.now)
                say("stopped")
    except (ServiceFailed, lab_venv.VenvError) as e:
        print(f"labctl {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
