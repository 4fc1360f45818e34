"""The course banner in a course instance's pages (Lab and the desktop page): the trainer's broadcast,
and who is helping.

A course instance (server ``course-<id>``, issue 19) shows, at the top of JupyterLab and of the
desktop page, the message its trainers broadcast and, for the owner, "<trainer> is helping" while
a trainer holds the SUPPORT role. The *browser* reads the message from the training service
(``api/courses/<id>/broadcast``, same origin through the hub's proxy, as the desktop page already
embeds visa-ops' banner), so the instance needs no new way out (a VM reaches only the hub's API),
and reads who is here from this server's room (``visa/api/room``).

JupyterLab's page is jupyterlab's, not ours: a tornado output transform adds one ``<script>`` tag
to these HTML pages, rather than a JupyterLab extension that would need a JavaScript build.
"""

from __future__ import annotations

import os
import re
from html import escape
from typing import Any

from jupyter_server.utils import url_path_join
from tornado.web import OutputTransform

COURSE_SERVER = re.compile(r"^course-([a-z0-9-]{1,24})$")


def training_prefix(env: Any = os.environ) -> str:
    """The training service's path as browsers reach it: ``$VISA_TRAINING_PREFIX``, else
    ``{$JUPYTERHUB_BASE_URL}services/visa-training/`` under JupyterHub, else "" (no banner)."""
    if "VISA_TRAINING_PREFIX" in env:
        return env["VISA_TRAINING_PREFIX"]
    if not env.get("JUPYTERHUB_USER"):
        return ""
    return url_path_join(env.get("JUPYTERHUB_BASE_URL") or "/", "services/visa-training/")


def broadcast_url(prefix: str, server_name: str) -> str:
    """The course's broadcast API for a course instance's server name; "" for any other server."""
    match = COURSE_SERVER.match(server_name or "")
    if not prefix or not match:
        return ""
    return url_path_join(prefix, "api/courses", match.group(1), "broadcast")


def script_tag(base_url: str, broadcast: str) -> bytes:
    """The tag the pages get: our script, told where the broadcast and the room are."""
    return (
        f'<script src="{escape(url_path_join(base_url, "visa/static/broadcast.js"))}" '
        f'data-broadcast="{escape(broadcast)}" data-room="{escape(url_path_join(base_url, "visa/api/room"))}" '
        f"defer></script>"
    ).encode()


def banner_transform(base_url: str, broadcast: str) -> type[OutputTransform]:
    """An output transform adding `script_tag` to Lab's pages and the desktop page (GET, 200, HTML)."""
    pages = re.compile("^" + re.escape(base_url) + r"(lab(/.*)?|visa/desktop/?)$")
    tag = script_tag(base_url, broadcast)

    class CourseBannerTransform(OutputTransform):
        def __init__(self, request: Any) -> None:
            self.active = request.method == "GET" and bool(pages.match(request.path))

        def transform_first_chunk(self, status_code: int, headers: Any, chunk: bytes,
                                  finishing: bool) -> tuple[int, Any, bytes]:
            if (self.active and status_code == 200 and finishing
                    and headers.get("Content-Type", "").startswith("text/html") and b"</body>" in chunk):
                head, _, tail = chunk.rpartition(b"</body>")
                chunk = head + tag + b"</body>" + tail
                if "Content-Length" in headers:
                    headers["Content-Length"] = str(len(chunk))
            return status_code, headers, chunk

    return CourseBannerTransform


def install(web_app: Any, base_url: str, env: Any = os.environ) -> str:
    """Add the banner to a course instance's pages; returns the broadcast URL ("" elsewhere)."""
    url = broadcast_url(training_prefix(env), env.get("JUPYTERHUB_SERVER_NAME", ""))
    if url:
        web_app.transforms.insert(0, banner_transform(base_url, url))  # before any compression
    return url
