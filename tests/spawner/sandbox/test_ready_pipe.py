"""Jupyter's readiness is signalled, not polled: the bridge writes one byte on a pipe once it
publishes Jupyter (the hub waits on it), and looks for Jupyter every 10 ms once the hub hurries
it (SIGUSR1 at a pooled sandbox's adoption). Stand-in processes; no root, no sandbox."""
from __future__ import annotations

import argparse
import asyncio
import os
import socket

import pytest

from visa_spawner.backends.base import BackendError
from visa_spawner.backends.sandbox import bridge as bridge_mod
from visa_spawner.backends.sandbox.backend import SandboxBackend
from visa_spawner.backends.sandbox.network import BridgePipes, bridge_argv


async def _sleeper(code: str = "sleep 30") -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec("sh", "-c", code)


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


@pytest.fixture
async def backend(tmp_path):
    yield SandboxBackend(state_dir=str(tmp_path), start_timeout=20)


async def _wait(backend: SandboxBackend, proc, bridge, read_end: int) -> BackendError | None:
    backend._ready_pipes["visa-t"] = read_end
    try:
        await asyncio.wait_for(backend._wait_listening("visa-t", proc, bridge), 15)
    except BackendError as e:
        return e
    finally:
        for p in (proc, bridge):
            if p.returncode is None:
                p.kill()
                await p.wait()
    return None


async def test_the_hub_returns_on_the_bridges_byte(backend):
    r, w = os.pipe()
    proc, bridge = await _sleeper(), await _sleeper()
    asyncio.get_running_loop().call_later(0.05, os.write, w, b"1")
    assert await _wait(backend, proc, bridge, r) is None
    assert _closed(r) and "visa-t" not in backend._ready_pipes
    os.close(w)


async def test_a_bridge_ending_without_the_byte_is_a_network_error(backend):
    r, w = os.pipe()
    proc, bridge = await _sleeper(), await _sleeper("exec 3>&-; exit 1")
    os.close(w)  # the bridge's copy was its only one: end of file when it exits
    error = await _wait(backend, proc, bridge, r)
    assert error is not None and error.reason == "network"
    assert _closed(r)


async def test_a_sandbox_exiting_during_start_says_its_status(backend):
    r, w = os.pipe()
    proc, bridge = await _sleeper("exit 3"), await _sleeper()
    error = await _wait(backend, proc, bridge, r)
    assert error is not None and error.reason == "exited" and "status 3" in error.message
    os.close(w)


async def test_no_byte_within_the_start_timeout(backend):
    backend.start_timeout = 0.2
    r, w = os.pipe()
    error = await _wait(backend, await _sleeper(), await _sleeper(), r)
    assert error is not None and error.reason == "timeout"
    os.close(w)


def test_the_hub_keeps_only_the_read_end_it_took():
    pipes = BridgePipes()
    kept = pipes.take_ready()
    assert pipes.ready_w in pipes.bridge_fds and kept not in (*pipes.bridge_fds, *pipes.sandbox_fds)
    pipes.close()
    assert not _closed(kept) and _closed(pipes.ready_w) and _closed(pipes.info_r)
    os.close(kept)
    untaken = BridgePipes()
    untaken.close()
    assert _closed(untaken.ready_r)


def test_bridge_argv_names_the_ready_pipe_only_when_given():
    common = dict(info_fd=3, block_fd=4, jupyter_port=5000, routes=(), uid=7, gid=8, python="/py", script="/b.py")
    assert "--ready-fd=9" in bridge_argv(**common, ready_fd=9)
    assert not any(a.startswith("--ready-fd") for a in bridge_argv(**common))
    assert bridge_mod.parse_args(bridge_argv(**common, ready_fd=9)[3:]).ready_fd == 9


@pytest.mark.parametrize(("delay", "hurried", "expected"), [
    (0.02, False, 0.03), (0.2, False, 0.25), (0.25, False, 0.25), (0.25, True, bridge_mod.HURRY_DELAY),
])
def test_the_bridge_looks_often_only_when_hurried(delay, hurried, expected):
    assert bridge_mod.next_delay(delay, hurried) == pytest.approx(expected)


async def test_the_bridge_publishes_then_writes_its_byte_and_a_hurry_wakes_it(monkeypatch):
    """Jupyter "appears" only after the hurry: the bridge, paused for 30 s between looks here, is woken
    by SIGUSR1's handler, looks again, publishes the port and writes the byte."""
    r, w = os.pipe()
    public = socket.socket()
    public.bind(("127.0.0.1", 0))
    args = argparse.Namespace(publish=public.getsockname()[1], ready_fd=w)
    b = bridge_mod.Bridge(args)
    b.public = public
    looks: list[bool] = []

    async def connect(port: int) -> socket.socket:
        looks.append(b.hurry_until > 0)
        if b.hurry_until == 0:
            raise ConnectionRefusedError
        return socket.socket()
    monkeypatch.setattr(b, "_connect_inside", connect)
    monkeypatch.setattr(bridge_mod, "next_delay", lambda delay, hurried: bridge_mod.HURRY_DELAY if hurried else 30)
    task = asyncio.ensure_future(b.wait_for_jupyter())
    while len(looks) < 2:  # the first look, at once, then one after the first (20 ms) pause
        await asyncio.sleep(0.01)
    b._hurry()
    await asyncio.wait_for(task, 10)  # woken, not at the end of its 30 s pause
    assert looks[-1] and not any(looks[:-1])
    assert os.read(r, 1) == b"1" and _closed(w)
    with socket.create_connection(("127.0.0.1", args.publish), timeout=2):
        pass  # published
    for server in b.servers:
        server.close()
    public.close()
    os.close(r)
