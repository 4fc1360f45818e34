"""Test side: what a real VM would do with the user-data the backend gave Nova.

The lab's fake hypervisor boots nothing. This emulator watches the lab (as admin: reading
user_data needs it) for ACTIVE servers with the hub's tag and, after `boot_delay` (seconds, or a
function of the server), "boots" each:

- mode "real": runs the rendered start script (`cloudinit.START_SCRIPT`, extracted from the
  user-data) in a bubblewrap sandbox with a private /etc (it creates the owner's account) and
  its own loopback address, so jupyterhub-singleuser really starts and phones home to the hub;
- mode "standin": a tiny stand-in for the instance (phones home the same stages over HTTP, or
  straight onto the in-process board for backend-level tests, then answers HTTP 200 on its own
  loopback address) where Jupyter itself is not what is tested (bursts, fault storms). A server
  built ahead for a warm pool waits for its config as the start script does (`adopted` keeps
  what each server was given).

An instance stops when its server is deleted, shelved or rebuilt (a rebuild boots it again). In
mode "real" each server has a disk (its /etc, /home and the start script's files) that lasts as long
as the server and its user-data: a shelved server that becomes ACTIVE again boots from it, as a
real one does (cloud-init does not run again; the enabled unit runs the start script).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.spawner.openstack.lab import PAGE
from visa_spawner.backends.guest import cloudinit, phonehome
from visa_spawner.backends.openstack.cloud import list_servers

REPO = Path(__file__).resolve().parents[3]


class _Instance:
    def __init__(self, key: str, address: str) -> None:
        self.key, self.address = key, address
        self.task: asyncio.Task | None = None
        self.proc: subprocess.Popen | None = None
        self.server: asyncio.base_events.Server | None = None
        self.dir: Path | None = None


class BootEmulator:
    def __init__(self, connect, tag: str, *, boot_delay: float | Callable[[Any], float] = 0.0, mode: str = "real",
                 board_loop: asyncio.AbstractEventLoop | None = None, interval: float = 0.3) -> None:
        self.connect, self.tag, self.boot_delay, self.mode = connect, tag, boot_delay, mode
        self.board_loop = board_loop  # set: stand-ins post to phonehome.BOARD in that loop (no hub)
        self.interval = interval
        self.instances: dict[str, _Instance] = {}  # server id -> instance
        self.disks: dict[str, tuple[str, Path]] = {}  # server id -> (user-data key, its disk)
        self.standin_booted: set[str] = set()  # server ids a stand-in has booted (a next boot resumes)
        self.adopted: dict[str, dict] = {}  # pooled server id -> the config its adopter's start gave it
        self._waits = ThreadPoolExecutor(max_workers=160, thread_name_prefix="pooled-wait")  # held requests
        self.booted = 0
        self.errors: list[str] = []
        self._next = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="boot-emulator")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> BootEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._waits.shutdown(wait=False, cancel_futures=True)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    async def _run(self) -> None:
        conn = self.connect()
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                servers = await loop.run_in_executor(
                    None, lambda: list_servers(conn, PAGE, tags=self.tag, all_projects=True))
            except Exception as e:  # the lab may be briefly busy: try again next round
                self.errors.append(f"list: {e!r}"[:200])
                await asyncio.sleep(self.interval)
                continue
            live = {}
            for s in servers:
                if s.status == "ACTIVE" and not s.task_state and s.user_data:
                    live[s.id] = hashlib.sha256(s.user_data.encode()).hexdigest()
            for sid, inst in list(self.instances.items()):
                if live.get(sid) != inst.key:
                    await self._halt(self.instances.pop(sid))
            listed = {s.id: hashlib.sha256((s.user_data or "").encode()).hexdigest() for s in servers}
            for sid, (key, disk) in list(self.disks.items()):
                if listed.get(sid, key) != key or (sid not in listed and sid not in self.instances):
                    shutil.rmtree(disk, ignore_errors=True)  # deleted or rebuilt: the disk is gone
                    del self.disks[sid]
            self.standin_booted &= set(listed)
            for sid, key in live.items():
                if sid not in self.instances:
                    server = next(s for s in servers if s.id == sid)
                    inst = self.instances[sid] = _Instance(key, self._address())
                    inst.task = asyncio.ensure_future(self._boot(inst, server.user_data, sid, self._delay(server)))
            await asyncio.sleep(self.interval)
        for inst in list(self.instances.values()):
            await self._halt(inst)
        self.instances.clear()
        for _, disk in self.disks.values():
            shutil.rmtree(disk, ignore_errors=True)
        self.disks.clear()

    def _address(self) -> str:
        self._next += 1
        return f"127.0.{1 + self._next // 250}.{1 + self._next % 250}"

    # -- one instance ------------------------------------------------------------------------
    def _delay(self, server) -> float:
        """`boot_delay` may be a function of the server (some VMs boot slowly)."""
        return self.boot_delay(server) if callable(self.boot_delay) else self.boot_delay

    async def _boot(self, inst: _Instance, user_data: str, sid: str = "", delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        doc = cloudinit.parse_cloud_config(base64.b64decode(user_data).decode())
        files = {f["path"]: f["content"] for f in doc["write_files"]}
        config = json.loads(files[cloudinit.CONFIG_PATH])
        self.booted += 1
        try:
            if self.mode == "real":
                self._start_script(inst, files, sid)
            else:
                if config.get("pooled"):  # built ahead: wait until a participant adopts it
                    config = self.adopted[sid] = await self._wait_adopted(config)
                elif config.get("resume_key") and sid in self.standin_booted:  # a reboot after shelving
                    config = await self._resume(config)
                self.standin_booted.add(sid)
                if config:
                    await self._standin(inst, config)
        except Exception as e:
            self.errors.append(f"boot: {e!r}"[:300])

    def _start_script(self, inst: _Instance, files: dict, sid: str) -> None:
        if sid in self.disks and self.disks[sid][0] == inst.key:  # a reboot: the disk as it was left
            inst.dir = self.disks[sid][1]
        else:  # first boot: what cloud-init's write_files does
            inst.dir = Path(tempfile.mkdtemp(prefix="visa-vm-", dir="/var/tmp"))
            self.disks[sid] = (inst.key, inst.dir)
            (inst.dir / "instance.json").write_text(files[cloudinit.CONFIG_PATH])
            (inst.dir / "instance.json").chmod(0o600)
            (inst.dir / "visa-start").write_text(files[cloudinit.SCRIPT_PATH])
            shutil.copytree("/etc", inst.dir / "etc", symlinks=True, ignore_dangling_symlinks=True)
            (inst.dir / "home").mkdir()
        argv = [
            "bwrap", "--dev-bind", "/", "/", "--bind", str(inst.dir / "etc"), "/etc",
            "--bind", str(inst.dir / "home"), "/home", "--tmpfs", "/tmp", "--proc", "/proc", "--unshare-pid",
            "--die-with-parent",
            "--setenv", "VISA_INSTANCE_CONFIG", str(inst.dir / "instance.json"),
            "--setenv", "VISA_BIND_ADDRESS", inst.address,
            "--setenv", "VISA_INSTANCE_LOG", str(inst.dir / "jupyter.log"),
            "--setenv", "VISA_STARTED_MARKER", str(inst.dir / "started"),
            "/usr/bin/python3", str(inst.dir / "visa-start"),
        ]
        with open(inst.dir / "console.log", "ab") as out:
            inst.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    async def _standin(self, inst: _Instance, config: dict) -> None:
        async def answer(reader, writer):
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                             b"Connection: close\r\n\r\n{}")
                await writer.drain()
            except Exception:
                pass
            finally:
                writer.close()

        for stage in ("started", "account", "data"):
            await self._phone(config, stage)
        inst.server = await asyncio.start_server(answer, inst.address, int(config["port"]))
        await self._phone(config, "jupyter-up", address=inst.address, port=int(config["port"]))

    async def _resume(self, config: dict) -> dict | None:
        """What the start script does on a later boot: this start's config, asked with the key."""
        key = config["resume_key"]
        if self.board_loop is not None:
            async def ask():
                return phonehome.BOARD.resume_config(key)
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(ask(), self.board_loop))
        import requests
        url = config["phone_home_url"].rsplit("/", 1)[0] + "/resume"
        r = await asyncio.get_running_loop().run_in_executor(None, lambda: requests.post(
            url, json={}, headers={"Authorization": f"visa-resume {key}"}, timeout=10))
        return r.json() if r.status_code == 200 else None

    async def _wait_adopted(self, config: dict) -> dict:
        """The start script's `resume` for a pooled server: ask (the hub holds it), again on 404, and
        again while the hub is away (a restart), as the script does."""
        import requests
        url = config["phone_home_url"].rsplit("/", 1)[0] + "/resume"
        headers = {"Authorization": f"visa-resume {config['resume_key']}"}
        while True:
            try:
                r = await asyncio.get_running_loop().run_in_executor(self._waits, lambda: requests.post(
                    url, json={"wait": config["pool_wait"]}, headers=headers, timeout=config["pool_wait"] + 10))
                if r.status_code == 200:
                    return r.json()
            except requests.RequestException:
                pass
            await asyncio.sleep(1)

    async def _phone(self, config: dict, stage: str, **extra) -> None:
        token = config["env"]["JUPYTERHUB_API_TOKEN"]
        report = phonehome.Report(stage=stage, **extra)
        if self.board_loop is not None:
            self.board_loop.call_soon_threadsafe(phonehome.BOARD.post, token, report)
            return
        import requests
        body = {"stage": stage, "message": "", **extra}
        await asyncio.get_running_loop().run_in_executor(None, lambda: requests.post(
            config["phone_home_url"], json=body, headers={"Authorization": f"token {token}"}, timeout=10))

    async def _halt(self, inst: _Instance) -> None:
        if inst.task and not inst.task.done():
            inst.task.cancel()
        if inst.server:
            inst.server.close()
        if inst.proc and inst.proc.poll() is None:
            inst.proc.send_signal(signal.SIGKILL)  # --die-with-parent + pid namespace: all of it dies
            await asyncio.get_running_loop().run_in_executor(None, inst.proc.wait)

    def running(self) -> int:
        return sum(1 for i in self.instances.values()
                   if (i.proc and i.proc.poll() is None) or i.server is not None)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
