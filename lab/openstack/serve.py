"""Serve one OpenStack WSGI application under gunicorn (run by the lab venv's Python).

Why not the `gunicorn` command: keystone and neutron parse sys.argv with oslo.config at import
and refuse gunicorn's own flags, so the arguments are read here and sys.argv is left clean.
usage: serve.py NAME HOST:PORT module:attribute [threads]
"""
from __future__ import annotations

import importlib
import sys

from gunicorn.app.base import BaseApplication


class App(BaseApplication):
    def __init__(self, name: str, bind: str, target: str, threads: int) -> None:
        self.settings = {"bind": bind, "workers": 1, "worker_class": "gthread", "threads": threads,
                         "timeout": 300, "graceful_timeout": 5, "proc_name": name, "accesslog": "-"}
        self.target = target
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.settings.items():
            self.cfg.set(key, value)

    def load(self):
        module, attribute = self.target.split(":")
        return getattr(importlib.import_module(module), attribute)


if __name__ == "__main__":
    name, bind, target = sys.argv[1:4]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    sys.argv = [name]
    App(name, bind, target, threads).run()
