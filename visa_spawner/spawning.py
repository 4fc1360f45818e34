"""Start a named server from a hub page and send the person to its progress page."""
from __future__ import annotations

import asyncio
from typing import Any

from jupyterhub.utils import url_escape_path, url_path_join


async def spawn_then_progress(handler: Any, user: Any, server_name: str, display_name: str,
                              options: dict) -> None:
    """Start `server_name` of `user` and redirect `handler` to its spawn-pending page.

    The progress page shows "not running" unless the spawn is already pending: wait for that (a few
    ms), or for an immediate failure, before sending the person there (at most 5 s).
    """
    spawner = user.get_or_create_spawner(server_name, display_name)
    spawn = asyncio.ensure_future(handler.spawn_single_user(user, server_name, display_name, options=options))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not (spawner.pending or spawner.ready or spawn.done()) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    if spawn.done() and not spawn.cancelled() and spawn.exception() is not None:  # the progress page shows it
        handler.log.info("Spawn of %s:%s failed at once: %s", user.name, server_name, spawn.exception())
    handler.redirect(url_path_join(handler.hub.base_url, "spawn-pending", user.escaped_name,
                                   url_escape_path(server_name)))
