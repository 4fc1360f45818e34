"""The instrument panels' routes in the single-user server: page and gated websocket.

Each instrument offered (:class:`visa_instance.instrument.VisaInstruments`) gets

* ``visa/instrument/<ID>``: the desktop page (noVNC, status bar, reconnects, the room's
  view-only state) on the instrument's display, with a "read-only" note for members who may
  not write (the Authorizer's ``write`` on the desktop resource, as the desktop's view-only);
* ``instrument-<id>/``: the desktop's websocket handler (role check, a view-only member's
  input dropped at the server) bridging to that instrument's display.

A GUEST therefore watches the panel and cannot press anything in it: not a write reaches PyDM.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.utils import url_path_join

from .authorizer import hub_model
from .desktop_socket import desktop_socket_handler
from .handlers import DesktopPageHandler
from .instrument import SERVER_PREFIX, may_pilot_here, page_path, server_name, title


def instance_proposal() -> str:
    return os.environ.get("VISA_PROPOSAL", "")


class InstrumentPageHandler(DesktopPageHandler):
    """``{base_url}visa/instrument/<ID>``: one instrument's panel in a browser tab."""

    template = "instrument.html"
    fits_window = False  # a panel laid out for its screen: scaled, never resized

    def may_input(self) -> bool:
        """The read-only note for a USER member without the instrument right (their input is
        dropped at the websocket too)."""
        model = hub_model(self.current_user)
        if model is None:  # a plain jupyter server: the token holder is the owner
            return True
        role = self.settings["visa_room"].role(model)
        return may_pilot_here(model, role, instance_proposal(), self.page_vars.get("instrument", ""))


def page_routes(base_url: str, instruments: list[str]) -> list[tuple[str, type, dict[str, Any]]]:
    """The pages, built as data so a test can check them without a server."""
    return [
        (url_path_join(base_url, page_path(i) + "/?"), InstrumentPageHandler,
         {"websocket_path": server_name(i) + "/", "page_vars": {"instrument": i, "instrument_title": title(i)}})
        for i in instruments
    ]


def socket_routes(base_url: str, processes: dict[str, dict[str, Any]]) -> list[tuple[str, type, dict]]:
    """The gated websockets (``{name: ServerProcess config}``), to register ahead of jsp's own."""
    routes = []
    for name, process in processes.items():
        instrument = name.removeprefix(SERVER_PREFIX).upper()

        def may_input(model, role, instrument=instrument) -> bool:
            return may_pilot_here(model, role, instance_proposal(), instrument)

        cls, kwargs = desktop_socket_handler(name, process, may_input)
        routes.append((url_path_join(base_url, name, "(.*)"), cls, kwargs))
    return routes
