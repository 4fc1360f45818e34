"""One QEMU process and the channels to it: QMP, the boot agent's virtio-serial port, the serial
console and Jupyter's forwarded port. No policy here (that is `qemu.QemuBackend`), only the
mechanics, each blocking step off the event loop or awaited with a deadline.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import psutil
from qemu.qmp import QMPClient

from visa_spawner.backends.qemu.accel import pid_runs

#: QMPClient logs every exchange at DEBUG; keep it to warnings (commands carry paths, not secrets)
logging.getLogger("qemu.qmp").setLevel(logging.WARNING)


async def launch(argv: Sequence[str], log_path: Path) -> asyncio.subprocess.Process:
    """Start QEMU in its own session (it outlives a hub restart), output to `log_path`."""
    with open(log_path, "ab") as log:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


async def qmp(socket_path: str, command: str, arguments: dict | None = None, timeout: float = 15) -> object:
    """One QMP command on a fresh connection (QEMU accepts one monitor client at a time)."""
    client = QMPClient("visa-hub")
    try:
        await asyncio.wait_for(client.connect(socket_path), timeout)
        return await asyncio.wait_for(client.execute(command, arguments), timeout)
    finally:
        try:
            await client.disconnect()
        except (EOFError, OSError):  # `quit` and power-off close the monitor under our feet
            pass


async def wait_qmp(socket_path: str, proc: asyncio.subprocess.Process | None, timeout: float) -> dict:
    """Wait until QEMU answers on its monitor (its machine is initialised); `query-status`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.returncode is not None:
            raise ProcessLookupError(f"QEMU exited with status {proc.returncode}")
        if os.path.exists(socket_path):
            try:
                return await qmp(socket_path, "query-status", timeout=5)  # type: ignore[return-value]
            except Exception as e:  # noqa: BLE001 - not ready yet, keep trying
                last = e
        await asyncio.sleep(0.05)
    raise TimeoutError(f"QEMU's monitor did not answer within {timeout:g} s ({last!r})")


class AgentChannel:
    """The host end of the boot agent's virtio-serial port: JSON lines both ways."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(self.socket_path, limit=1 << 20)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def messages(self) -> AsyncIterator[dict]:
        """Every JSON object the agent writes (other lines are ignored); ends when QEMU closes."""
        assert self._reader is not None
        while True:
            line = await self._reader.readline()
            if not line:
                return
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                yield message

    async def send(self, message: dict) -> None:
        assert self._writer is not None
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await self._writer.drain()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def console_lines(path: Path, stop: asyncio.Event) -> AsyncIterator[str]:
    """Follow the serial console file (QEMU appends to it) until `stop` is set."""
    offset, pending = 0, b""
    while not stop.is_set():
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace").rstrip("\r")
        if not chunk:
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except TimeoutError:
                pass


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_bytes()[-16384:].decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(line.rstrip("\r") for line in text.splitlines()[-lines:])


async def http_answers(port: int, path: str, timeout: float = 3) -> bool:
    """Does an HTTP server answer on 127.0.0.1:port? (A user-mode `hostfwd` accepts the TCP
    connection even when nothing listens in the guest, so only an HTTP status line counts.)"""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (TimeoutError, OSError):
        return False
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"HTTP/")
    except (TimeoutError, OSError):
        return False
    finally:
        writer.close()


async def wait_gone(pid: int, overlay: str, timeout: float, proc: asyncio.subprocess.Process | None = None) -> bool:
    """Wait until QEMU `pid` (identified by its overlay) has exited; True if it did in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), 0.1)
                return True
            except TimeoutError:
                continue
        if not pid_runs(pid, overlay):
            return True
        await asyncio.sleep(0.1)
    return not pid_runs(pid, overlay)


async def terminate(pid: int, overlay: str, qmp_socket: str, grace: float,
                    proc: asyncio.subprocess.Process | None = None, log: logging.Logger | None = None) -> None:
    """ACPI power-off over QMP, SIGKILL after `grace` seconds (0: kill at once)."""
    if not pid_runs(pid, overlay):
        if proc is not None and proc.returncode is None:
            await proc.wait()
        return
    if grace > 0:
        try:
            await qmp(qmp_socket, "system_powerdown", timeout=5)
        except Exception as e:  # noqa: BLE001 - a wedged monitor: go on to the kill
            if log:
                log.info("QEMU %s: system_powerdown failed (%s); killing", pid, type(e).__name__)
        if await wait_gone(pid, overlay, grace, proc):
            return
        if log:
            log.info("QEMU %s did not power off within %g s; killing it", pid, grace)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if not await wait_gone(pid, overlay, 15, proc) and log:
        log.error("QEMU %s survived SIGKILL", pid)


def memory_of(pid: int) -> dict[str, int]:
    """PSS and RSS of a process in MB ({} when it is gone or not ours to read)."""
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.Error:
        return {}
    return {"rss": info.rss >> 20, "pss": info.pss >> 20}
