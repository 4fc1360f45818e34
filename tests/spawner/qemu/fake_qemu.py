"""A stand-in for qemu-system-x86_64 that does, on the host, what a template VM does for a
snapshot build: its QMP monitor and boot agent sockets, a console file, the agent's
`waiting-config` line, `migrate` to an `exec:` URI (writes `FAKE_QEMU_STATE_MB` MB through the
command, as QEMU streams the guest's memory) and `quit`. No guest runs.

    fake_qemu.py <the argv `command.qemu_argv` builds>
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys


def _chardev_paths(argv: list[str]) -> dict[str, str]:
    """{chardev id: socket path} from `-chardev socket,id=…,path=…,…`."""
    out = {}
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-chardev":
            opts = dict(part.split("=", 1) for part in value.split(",")[1:] if "=" in part)
            out[opts["id"]] = opts["path"]
    return out


async def _json_stream(reader: asyncio.StreamReader):
    """JSON objects as a QMP client sends them: one after another, not necessarily one per line."""
    decoder, buffer = json.JSONDecoder(), ""
    while chunk := await reader.read(65536):
        buffer += chunk.decode()
        while buffer.strip():
            try:
                message, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                break  # incomplete: read more
            buffer = buffer.lstrip()[end:]
            yield message


class FakeQemu:
    def __init__(self, argv: list[str]) -> None:
        self.paths = _chardev_paths(argv)
        self.console = argv[argv.index("-serial") + 1].removeprefix("file:")
        self.state_mb = int(os.environ.get("FAKE_QEMU_STATE_MB", "16"))
        self.migration = "none"
        self.done = asyncio.Event()

    async def run(self) -> None:
        with open(self.console, "a") as f:
            f.write("Linux version 6.1.0-fake\nVISA-STAGE agent-started\n")
        agent = await asyncio.start_unix_server(self.agent, self.paths["agent"])
        monitor = await asyncio.start_unix_server(self.monitor, self.paths["qmp"])
        async with agent, monitor:
            await self.done.wait()

    async def agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for stage in ("agent-started", "waiting-config"):
            writer.write(json.dumps({"stage": stage}).encode() + b"\n")
        await writer.drain()
        await reader.read()  # until the host closes its end

    async def monitor(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeting = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "fake"},
                            "capabilities": []}}
        writer.write(json.dumps(greeting).encode() + b"\n")
        async for request in _json_stream(reader):
            command, arguments = request["execute"], request.get("arguments") or {}
            result: object = {}
            if command == "query-status":
                result = {"status": "running", "running": True}
            elif command == "migrate":
                self.migration = "active"
                asyncio.get_running_loop().run_in_executor(None, self.migrate, arguments["uri"])
            elif command == "query-migrate":
                result = {"status": self.migration}
            reply = {"return": result, **({"id": request["id"]} if "id" in request else {})}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            if command in ("quit", "system_powerdown"):
                self.done.set()
                return

    def migrate(self, uri: str) -> None:
        assert uri.startswith("exec:")
        chunk = b"\0" * (1 << 20)
        with subprocess.Popen(["/bin/sh", "-c", uri[len("exec:"):]], stdin=subprocess.PIPE) as sink:
            for _ in range(self.state_mb):
                sink.stdin.write(chunk)  # type: ignore[union-attr]
        self.migration = "completed" if sink.returncode == 0 else "failed"


if __name__ == "__main__":
    asyncio.run(FakeQemu(sys.argv[1:]).run())
