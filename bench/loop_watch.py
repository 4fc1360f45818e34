"""Where the hub's event loop stalls: a thread that notices when the loop has not run a callback
for `threshold` seconds and logs the loop thread's stack at that moment (the code holding it).

Loaded by a bench hub's config (`VISA_BENCH_LOOP_WATCH=<ms>`); it tells a blocked loop (one long
callback, shown by its stack) from a busy one (many short callbacks: stacks differ each time).
`watch_gc` logs the garbage collector's passes that take that long (a pause no stack shows).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger("JupyterHub")


def watch(loop: asyncio.AbstractEventLoop, threshold: float, tick: float = 0.01) -> threading.Thread:
    """Start the watching thread for `loop` (call from the loop's own thread)."""
    loop_thread = threading.get_ident()
    last = [time.monotonic()]

    def beat() -> None:
        last[0] = time.monotonic()

    def run() -> None:
        reported = 0.0
        while not loop.is_closed():
            loop.call_soon_threadsafe(beat)
            time.sleep(tick)
            stalled = time.monotonic() - last[0]
            if stalled >= threshold and last[0] != reported:
                reported = last[0]
                frame = sys._current_frames().get(loop_thread)
                stack = "".join(traceback.format_stack(frame, limit=12)) if frame else "?"
                log.warning("Loop watch: no callback for %.0f ms; the loop thread is at:\n%s", stalled * 1000, stack)

    thread = threading.Thread(target=run, name="loop-watch", daemon=True)
    thread.start()
    return thread


def watch_gc(threshold: float) -> None:
    """Log each garbage-collector pass that lasts `threshold` seconds or more, with its generation."""
    started = [0.0]

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif (took := time.perf_counter() - started[0]) >= threshold:
            log.warning("Loop watch: garbage collection of generation %s took %.0f ms (%s collected)",
                        info.get("generation"), took * 1000, info.get("collected"))

    gc.callbacks.append(timed)
