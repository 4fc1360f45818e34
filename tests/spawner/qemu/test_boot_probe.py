"""The boot watcher's HTTP probe: backed off while the VM boots, immediate when the agent reports
Jupyter's port open (that report is the moment the hub can stop waiting; a backed-off probe would
add up to a second to every start)."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from visa_spawner.backends.qemu.boot import BootWatcher


def test_jupyter_up_from_the_agent_makes_the_probe_ask_at_once(tmp_path: Path):
    async def scenario() -> float:
        state = {"answer": False, "probes": []}

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state["probes"].append(time.monotonic())
            await reader.readline()
            if state["answer"]:  # as Jupyter does; before, like QEMU's hostfwd with nothing behind it
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec("sleep", "60")
        (tmp_path / "console.log").write_text("")
        watcher = BootWatcher(tmp_path / "console.log", tmp_path / "no-agent.sock", proc, lambda p, m: None,
                              vm="vm1", probe_path="/user/a/s/", port=port, inbox=None, timeout=60,
                              log=logging.getLogger("test"))
        ready = asyncio.ensure_future(watcher.wait_ready())
        try:
            while len(state["probes"]) < 6:  # backed off to one probe a second by now
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)  # just after a probe: the next one is a second away
            state["answer"] = True
            t0 = time.monotonic()
            watcher._events.put_nowait(("stage", {"stage": "jupyter-up"}))
            await asyncio.wait_for(ready, 10)
            return time.monotonic() - t0
        finally:
            proc.kill()
            await proc.wait()
            server.close()

    assert asyncio.run(scenario()) < 0.4
