"""Seed a hub for bench/scale.py: people, instance records and shares, through the hub's own paths.

People are created with the hub's REST API (in bulk); instance records are JupyterHub `Spawner`
rows written with `jupyterhub.orm` while the hub is stopped (the hub only reads them at start),
stopped, with `user_options` made by `visa_spawner.options.InstanceRequest`, as the New-instance
form makes them; shares go through the collaboration service's API as each owner, so the hub
has the shares and the service has its grants and audit rows.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
import yaml
from jupyterhub import orm

from tests.hubtools import Hub
from visa_spawner.options import KEYBOARDS, SCREENS, InstanceRequest, slugify

PROPOSALS = ("P-2026-011", "P-2026-042", "P-2021-007")
PLANS = ("sandbox-small", "sandbox-large")
COLLAB = "/services/visa-collab/"


@dataclass(frozen=True)
class Seeded:
    """What the bench needs to drive the seeded hub: each person's token and first instance."""

    tokens: dict[str, str]  # bench person -> API token (access to the collab service)
    instances: dict[str, list[str]]  # owner -> server names
    shares: int


def user_names(n: int) -> list[str]:
    return [f"bench-u{i:04d}" for i in range(n)]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def create_users(hub: Hub, names: list[str]) -> None:
    """POST /hub/api/users in batches of 200 (the hub's bulk creation)."""
    for batch in _chunks(names, 200):
        r = hub.api("POST", "/users", json={"usernames": batch})
        assert r.status_code == 201, f"bulk user creation: {r.status_code} {r.text[:300]}"


def make_tokens(hub: Hub, names: list[str], workers: int = 8) -> dict[str, str]:
    """One API token a person, able to call the collaboration service (as their page does)."""
    def one(name: str) -> tuple[str, str]:
        r = hub.api("POST", f"/users/{name}/tokens", json={
            "note": "bench/scale.py", "expires_in": 6 * 3600,
            "scopes": ["access:services!service=visa-collab"]})
        assert r.status_code == 201, f"token for {name}: {r.status_code} {r.text[:300]}"
        return name, r.json()["token"]

    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(one, names))


def plan_instances(owners: Iterable[str], total: int, fixed: dict[str, int], idle_days: float = 2.9,
                   seed: int = 17) -> dict[str, list[dict]]:
    """`total` instance records spread over `owners` (3 or 2 each, as far as they go), `fixed`
    owners getting exactly their count; each record as the New-instance form would make it, last
    used up to `idle_days` ago (below the inactivity warning: a steady state, nothing due)."""
    rng = random.Random(seed)
    owners = list(owners)
    counts = dict(fixed)
    left = total - sum(fixed.values())
    for i, owner in enumerate(owners):
        if owner in counts:
            continue
        remaining_owners = len(owners) - i
        counts[owner] = min(left, 3 if left > 2 * remaining_owners else 2) if remaining_owners else 0
        left -= counts[owner]
    assert left == 0, f"cannot place {total} instances on {len(owners)} owners"
    plan: dict[str, list[dict]] = {}
    for owner, count in counts.items():
        taken: list[str] = []
        for k in range(count):
            display = f"{rng.choice(['Reduction', 'Analysis', 'Fitting', 'Mantid', 'Course'])} {k + 1}"
            request = InstanceRequest(
                display_name=display, server_name=slugify(display, taken), proposal=rng.choice(PROPOSALS),
                plan=rng.choice(PLANS), screen=rng.choice(SCREENS), keyboard=rng.choice(list(KEYBOARDS)))
            taken.append(request.server_name)
            plan.setdefault(owner, []).append({"name": request.server_name, "display_name": display,
                                               "user_options": request.user_options(),
                                               "idle_days": rng.uniform(0, idle_days)})
    return plan


def insert_instances(db_url: str, plan: dict[str, list[dict]]) -> int:
    """Write the stopped instance records with the hub's ORM (the hub must be stopped), as a
    stopped VisaSpawner leaves them: no `started`, no server, only the identity in its state."""
    session = orm.new_session_factory(db_url)()
    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        users = {u.name: u for u in session.query(orm.User).filter(orm.User.name.in_(list(plan)))}
        missing = set(plan) - set(users)
        assert not missing, f"not in the hub's database: {sorted(missing)[:5]}"
        n = 0
        for owner, records in plan.items():
            for rec in records:
                identity = {"backend": "sandbox", "owner": owner, "server_name": rec["name"]}
                session.add(orm.Spawner(
                    user=users[owner], name=rec["name"], display_name=rec["display_name"],
                    user_options=rec["user_options"], state={"identity": identity}, started=None,
                    last_activity=now - timedelta(days=rec["idle_days"])))
                n += 1
        session.commit()
        return n
    finally:
        session.close()


def share_all(hub: Hub, tokens: dict[str, str], instances: dict[str, list[str]], staff: list[str],
              workers: int = 8) -> int:
    """Share each instance with one of `staff` in turn, as SUPPORT (facility support staff may
    hold it on a stopped instance, whose proposal the service does not know yet), through the
    collaboration service's API as the owner: the hub gets the share, the service its grant."""
    jobs = [(owner, server, staff[i % len(staff)]) for i, (owner, server) in enumerate(
        (owner, server) for owner, servers in instances.items() if owner in tokens for server in servers)]
    local = threading.local()

    def one(job: tuple[str, str, str]) -> int:
        owner, server, member = job
        if not hasattr(local, "session"):
            local.session = requests.Session()
        r = local.session.post(f"{hub.url}{COLLAB}api/instances/{owner}/{server}/members", timeout=60,
                               headers={"Authorization": f"token {tokens[owner]}"},
                               json={"member": member, "role": "support"})
        assert r.status_code == 201, f"share {owner}/{server} with {member}: {r.status_code} {r.text[:300]}"
        return 1

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one, jobs))


def staff_catalogue(demo: Path, out: Path, n: int) -> list[str]:
    """The demo catalogue plus `n` facility support staff (IT_SUPPORT), who log in with the demo
    password: the people instances are shared with (the hub's groups come from the catalogue)."""
    catalogue = yaml.safe_load(demo.read_text())
    names = [f"staff{i:02d}" for i in range(n)]
    catalogue["persons"] += [{"id": name, "name": f"Support {name}", "email": f"{name}@facility.example",
                              "roles": ["STAFF", "IT_SUPPORT"], "demo_password": f"{name}-demo"} for name in names]
    out.write_text(yaml.safe_dump(catalogue, sort_keys=False))
    return names
