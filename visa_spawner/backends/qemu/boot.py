"""Following one VM's boot to a Jupyter that answers, from every real signal there is.

Sources, merged into one event queue: the serial console (kernel and `VISA-STAGE` lines), the boot
agent's virtio-serial port (JSON stage lines), the start script phoning home to the hub, Jupyter's
HTTP answer on the forwarded port, and the QEMU process exiting. The progress bar only moves
forward; a `failed` stage, an exit or the deadline end the wait with a clear message.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from qemu.qmp import QMPError

from visa_spawner.backends.base import BackendError, ProgressCallback
from visa_spawner.backends.guest.phonehome import Inbox
from visa_spawner.backends.qemu.command import console_stage
from visa_spawner.backends.qemu.vm import AgentChannel, console_lines, http_answers, qmp, tail

#: stage → (percent, message) shown in the progress bar
STAGE_PROGRESS = {
    "kernel": (25, "Kernel booted"),
    "init": (35, "The system is starting (systemd)"),
    "agent-started": (45, "Kernel booted; boot agent started"),
    "waiting-config": (45, "Boot agent waiting for its configuration"),
    "identity": (50, "New machine identity (machine-id, random seed, hostname)"),
    "configured": (55, "Instance configuration received (owner, proposal, desktop)"),
    "started": (60, "Start script running"),
    "account": (65, "Owner account ready"),
    "data": (70, "Proposal data mounted read-only"),
    "jupyter-up": (80, "Jupyter is up inside the VM"),
}


class BootWatcher:
    """Waits for one VM to be ready, reporting each stage once, in order of progress."""

    def __init__(self, console: Path, agent_socket: Path, proc: asyncio.subprocess.Process,
                 progress: ProgressCallback, *, vm: str, probe_path: str, port: int, inbox: Inbox | None,
                 timeout: float, log: logging.Logger, has_data: bool = True) -> None:
        self.console, self.proc, self.progress = console, proc, progress
        self.agent = AgentChannel(str(agent_socket))
        self.vm, self.port, self.inbox, self.log, self.has_data = vm, port, inbox, log, has_data
        self.probe_path = probe_path.rstrip("/") + "/api"
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self._events: asyncio.Queue = asyncio.Queue()
        self._seen: set[str] = set()
        self._percent = 20
        self._agent_connected = False
        self._jupyter_up = asyncio.Event()  # the agent saw the port open: probe HTTP now

    async def restore_and_configure(self, line: dict, qmp_socket: str) -> None:
        """Warm start: wait until the saved memory is loaded and the VM runs, then hand the
        waiting agent its configuration (identity, owner, token) over the port."""
        while True:
            if self.proc.returncode is not None:
                raise ProcessLookupError(f"QEMU exited with status {self.proc.returncode}")
            try:  # while it loads the memory, QEMU's monitor can be slow to answer on a busy host
                state = (await qmp(qmp_socket, "query-status", timeout=5)).get("status")  # type: ignore[union-attr]
            except (TimeoutError, OSError, EOFError, QMPError) as e:
                state = None
                self.log.debug("VM %s: monitor busy during restore (%s)", self.vm, type(e).__name__)
            if state == "running":
                break
            if state == "paused":  # restored from a snapshot saved paused (warm.py): resume it
                try:
                    await qmp(qmp_socket, "cont", timeout=5)
                except (TimeoutError, OSError, EOFError, QMPError) as e:
                    self.log.debug("VM %s: cont after restore (%s)", self.vm, type(e).__name__)
                continue
            if state not in (None, "inmigrate", "prelaunch"):
                raise BackendError(f"Restoring the virtual machine failed ({state}).", reason="restore")
            if time.monotonic() > self.deadline:
                raise BackendError("Restoring the virtual machine took too long.", reason="timeout")
            await asyncio.sleep(0.05)
        # boot-time lines still queued in the saved UART or port buffers are the template's, not ours
        self._seen.update(("kernel", "init", "agent-started", "waiting-config"))
        self._report(30, "Memory snapshot restored")
        await self.agent.connect(timeout=10)
        self._agent_connected = True
        await self.agent.send(line)

    async def wait_ready(self) -> None:
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(t) for t in (
            self._follow_console(stop), self._follow_agent(), self._follow_inbox(), self._probe_http(),
            self._watch_exit())]
        try:
            while True:
                remaining = self.deadline - time.monotonic()
                try:
                    kind, value = await asyncio.wait_for(self._events.get(), max(remaining, 0.01))
                except TimeoutError:
                    raise BackendError(
                        f"The virtual machine did not get Jupyter running within {self.timeout:g} s. "
                        f"Last console lines:\n{tail(self.console, 6)}", reason="timeout") from None
                if kind == "exit":
                    raise ProcessLookupError(value)
                if kind == "http":
                    self._report(90, "Jupyter answers; connecting through the hub")
                    return
                self._stage(value)
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.agent.close()

    # -- one stage ------------------------------------------------------------------------------
    def _stage(self, message: dict) -> None:
        stage = str(message.get("stage", ""))
        if stage == "failed":
            text = str(message.get("message", ""))[:300] or "no reason given"
            raise BackendError(f"The virtual machine could not start Jupyter: {text}", reason="guest")
        if stage in self._seen or stage not in STAGE_PROGRESS:
            return
        self._seen.add(stage)
        if stage == "jupyter-up":
            self._jupyter_up.set()
        percent, text = STAGE_PROGRESS[stage]
        if stage == "agent-started" and isinstance(message.get("uptime"), (int, float)):
            text = f"Kernel booted in {message['uptime']:.1f} s; boot agent started"
        elif stage == "data" and not self.has_data:
            text = "No proposal data to mount"
        self._report(percent, text)

    def _report(self, percent: int, text: str) -> None:
        if percent < self._percent:
            self.log.debug("VM %s: late stage %s", self.vm, text)
            return
        self._percent = percent
        self.progress(percent, text)

    # -- sources --------------------------------------------------------------------------------
    async def _follow_console(self, stop: asyncio.Event) -> None:
        async for line in console_lines(self.console, stop):
            stage = console_stage(line)
            if stage == "agent":
                try:
                    self._events.put_nowait(("stage", json.loads(line[len("VISA-STAGE "):])))
                except ValueError:
                    pass
            elif stage:
                self._events.put_nowait(("stage", {"stage": stage}))

    async def _follow_agent(self) -> None:
        if not self._agent_connected:
            await self.agent.connect(timeout=max(self.deadline - time.monotonic(), 1))
        async for message in self.agent.messages():
            self._events.put_nowait(("stage", message))

    async def _follow_inbox(self) -> None:
        if self.inbox is None:
            return
        while True:
            report = await self.inbox.queue.get()
            self._events.put_nowait(("stage", {"stage": report.stage, "message": report.message}))

    async def _probe_http(self) -> None:
        """Backs off to one probe a second while the VM boots, and probes at once (then every
        0.1 s) when the agent reports Jupyter's port open: a probe is a request in the guest."""
        delay = 0.2
        while not await http_answers(self.port, self.probe_path):
            if self._jupyter_up.is_set():
                await asyncio.sleep(0.1)
                continue
            try:
                await asyncio.wait_for(self._jupyter_up.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 1.5, 1.0)
        self._events.put_nowait(("http", True))

    async def _watch_exit(self) -> None:
        rc = await self.proc.wait()
        self._events.put_nowait(("exit", f"QEMU exited with status {rc}"))
