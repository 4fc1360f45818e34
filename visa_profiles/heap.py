"""The hub's garbage collector and its one event loop.

The objects made while the hub starts (modules, classes, the ORM's mappers, the configuration:
about 290 000 on import alone) live as long as the hub, yet every full collection walks them all:
a pause of the hub's event loop, and so of every request, of 65 ms on an idle host and 138-155 ms
on the OpenStack classroom bench's hub (bench/loop_watch.py; logged after a class start, as its
instances were removed). `gc.freeze` moves them out of the collector's sight once the hub has
started, so full collections only walk what was made since. The freeze's own collection is one
such pause, once, 30 s after the start.
"""
from __future__ import annotations

import asyncio
import gc
import logging

log = logging.getLogger("JupyterHub")

DEFAULT_DELAY = 30.0  # seconds after the config is loaded: the hub has started, nobody works yet


def freeze_after_start(delay: float = DEFAULT_DELAY) -> bool:
    """Schedule the freeze on the hub's running loop (JupyterHub loads its config inside it);
    False, and nothing scheduled, when the config is only read or `delay` <= 0 (switched off)."""
    if delay <= 0:
        return False
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    loop.call_later(delay, freeze_startup_objects)
    return True


def freeze_startup_objects() -> int:
    """Collect the start's own garbage (frozen objects are never collected), then freeze the rest;
    the number of objects frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("Garbage collector: %d objects made at start frozen (full collections skip them)", frozen)
    return frozen
