"""PostgreSQL URLs as SQLAlchemy needs them: a leaf module, so every hub_config may import it."""
from __future__ import annotations

import importlib.util


def installed_pg_driver() -> str:
    """The PostgreSQL driver this environment has: psycopg (3) if present, else psycopg2."""
    return "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"


def with_pg_driver(url: str, driver: str) -> str:
    """`postgresql://…` with the installed driver named (pure).

    SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3; naming the driver
    lets operators write the usual URL whichever driver is installed.
    """
    return f"postgresql+{driver}://{url[len('postgresql://'):]}" if url.startswith("postgresql://") else url
