"""VM boot: time from the spawn request until the VM's Jupyter answers *for its owner* through the hub.

Cold boots (median of --runs), memory per VM (PSS and RSS of the QEMU process), the acceleration
used; then the warm start: a memory snapshot of a booted, unconfigured VM is saved once, and each
new instance is restored from it and configured after the restore. With --desktop, each run also
opens the owner's desktop websocket once Lab answers (as the desktop page does, through the hub)
and times it until the VNC server greets: "desktop after Lab" (the launcher publishes its socket
only once the session is drawn, so the greeting means a drawn desktop).

    .venv/bin/python bench/vm_boot.py [--runs 3] [--warm-runs 3] [--desktop]
Targets on TCG-only hosts: cold <= 40 s, warm <= 10 s, warm desktop after Lab <= 5 s.
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.hubtools import DEMO_CONFIG, Browserless, Hub, make_demo_data, make_state_dir, running_hub, wait_for  # noqa: E402
from tests.spawner.qemu.conftest import pinned_image_dir, qemu_pids  # noqa: E402
from visa_spawner.backends.qemu.accel import choose_acceleration  # noqa: E402
from visa_spawner.backends.qemu.backend import QemuBackend  # noqa: E402
from visa_spawner.backends.qemu.image import DEFAULT_IMAGE_DIR, availability  # noqa: E402
from visa_spawner.backends.qemu.vm import memory_of  # noqa: E402
from visa_spawner.backends.qemu.warm import build_snapshot  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "tests" / "spawner" / "qemu" / "hub_qemu_config.py"
USER, PROPOSAL = "alice", "P-2026-011"


def desktop_after_lab(hub: Hub, owner: Browserless, name: str, timeout: float = 120) -> float:
    """Seconds from opening the desktop websocket (Lab answers already) until the VNC greeting;
    a launcher that gave up (a slow TCG guest) is retried, as the desktop page does."""
    import websocket  # websocket-client, a jupyter-server dependency

    base = f"/user/{USER}/{name}/"
    cookies = "; ".join(f"{c.name}={c.value}" for c in owner.s.cookies if base.startswith(c.path))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            ws = websocket.create_connection(hub.url.replace("http", "ws") + f"{base}desktop/",
                                             header=[f"Cookie: {cookies}"], origin=hub.url, timeout=timeout)
            try:
                greeting = ws.recv()
            finally:
                ws.close()
            if greeting[:4] in (b"RFB ", "RFB "):
                return time.perf_counter() - t0
        except (OSError, websocket.WebSocketException) as e:
            print(f"    desktop not there yet ({type(e).__name__}); retrying", flush=True)
        time.sleep(1)
    raise AssertionError(f"no desktop on {name} after {timeout} s")


def boot_once(hub: Hub, owner: Browserless, name: str, qemu_state: Path,
              desktop: bool = False) -> tuple[float, dict]:
    """Seconds from the spawn request until GET <server>/api/me answers 200 as the owner (and,
    with `desktop`, memory["desktop_s"]: the desktop's greeting after that)."""
    body = {"display_name": name, "user_options": {"proposal": PROPOSAL, "plan": "vm", "screen": "1280x720",
                                                   "keyboard": "us"}}
    t0 = time.perf_counter()
    r = hub.api("POST", f"/users/{USER}/servers/{name}", json=body)
    assert r.status_code in (201, 202), r.text

    def answers_for_owner() -> bool:
        model = hub.server_model(USER, name) or {}
        if not model.get("pending") and not model.get("ready"):
            raise AssertionError(f"spawn of {name} failed: {hub.log_tail(10)}")
        if not model.get("ready"):
            return False
        r = owner.instance_api("GET", USER, name, "api/me")  # the owner's cookies and XSRF, as Lab does
        return r.status_code == 200 and r.json().get("identity", {}).get("username") == USER

    wait_for(answers_for_owner, 420, f"{name} answering for {USER}", interval=0.05, reraise=AssertionError)
    elapsed = time.perf_counter() - t0
    pids = qemu_pids(qemu_state)
    memory = memory_of(pids[0]) if len(pids) == 1 else {}
    if desktop:
        memory["desktop_s"] = round(desktop_after_lab(hub, owner, name), 1)
    t_stop = time.perf_counter()
    hub.stop_server(USER, name, timeout=120)  # ACPI power-off; a kill after the grace is logged by the hub
    memory["stop_s"] = round(time.perf_counter() - t_stop, 1)
    hub.delete_server(USER, name, timeout=120)
    return elapsed, memory


async def snapshot(backend: QemuBackend, cpus: int, memory_mb: int) -> dict:
    return await build_snapshot(await backend.snapshot_template(), cpus, memory_mb,
                                say=lambda m: print("  snapshot:", m, flush=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--image-dir", default=DEFAULT_IMAGE_DIR)
    parser.add_argument("--desktop", action="store_true", help="also time the desktop after Lab, each run")
    args = parser.parse_args()
    ok, why = availability(args.image_dir)
    if not ok:
        raise SystemExit(f"cannot benchmark VMs: {why}")
    accel = asyncio.run(choose_acceleration("qemu-system-x86_64"))
    print(f"acceleration: {accel.name} ({accel.reason}); QEMU args: {' '.join(accel.argv)}", flush=True)
    state = make_state_dir("visahub-bench-vm-")
    make_demo_data(DEMO_CONFIG.parent / "catalogue.yaml", state / "data")
    image_dir = pinned_image_dir(args.image_dir, state)  # one build for the whole run
    print(f"image: {Path(image_dir, 'current').resolve().name}", flush=True)
    env = {"VISA_QEMU_IMAGE_DIR": image_dir, "VISA_QEMU_WARM": "1"}
    cold: list[float] = []
    warm: list[float] = []
    desktops: dict[str, list[float]] = {"cold": [], "warm": []}
    try:
        with running_hub(state, config=CONFIG, extra_env=env) as hub:
            owner = Browserless(hub, USER, f"{USER}-demo")
            assert owner.logged_in, "demo login failed"
            for i in range(args.runs):
                t, mem = boot_once(hub, owner, f"cold-{i}", state / "qemu", args.desktop)
                cold.append(t)
                if args.desktop:
                    desktops["cold"].append(mem["desktop_s"])
                print(f"  cold run {i}: {t:.1f} s; QEMU memory PSS {mem.get('pss')} MB, RSS {mem.get('rss')} MB; "
                      f"stop {mem.get('stop_s')} s; desktop after Lab {mem.get('desktop_s', '-')} s", flush=True)
            t0 = time.perf_counter()
            meta = asyncio.run(snapshot(QemuBackend(state_dir=str(state / "qemu"), image_dir=image_dir), 2, 2048))
            print(f"  snapshot ready in {time.perf_counter() - t0:.1f} s: {meta['state_mb']} MB, "
                  f"saved in {meta['save_seconds']} s", flush=True)
            for i in range(args.warm_runs):
                t, mem = boot_once(hub, owner, f"warm-{i}", state / "qemu", args.desktop)
                warm.append(t)
                if args.desktop:
                    desktops["warm"].append(mem["desktop_s"])
                print(f"  warm run {i}: {t:.1f} s; QEMU memory PSS {mem.get('pss')} MB, RSS {mem.get('rss')} MB; "
                      f"desktop after Lab {mem.get('desktop_s', '-')} s", flush=True)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    print(f"\nacceleration        {accel.name}")
    if cold:
        print(f"cold boot median    {statistics.median(cold):.1f} s of {len(cold)} (target <= 40 s)  {cold}")
    if warm:
        print(f"warm start median   {statistics.median(warm):.1f} s of {len(warm)} (target <= 10 s)  {warm}")
    for kind, target in (("cold", ""), ("warm", " (target <= 5 s)")):
        if desktops[kind]:
            figures = desktops[kind]
            print(f"{kind} desktop after Lab median {statistics.median(figures):.1f} s{target}  {figures}")


if __name__ == "__main__":
    main()
