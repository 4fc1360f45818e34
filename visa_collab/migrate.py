"""Alembic migrations run from code, for any service that keeps its own tables.

A service ships an ``alembic/`` directory in its package (``env.py`` calling `run_env`,
``script.py.mako``, ``versions/``) and names its own version table, so that several services,
and the hub itself (``alembic_version``), can share one database without reading each other's
revision. `upgrade` brings a database to the newest revision when the service starts, as
JupyterHub's ``upgrade-db`` does, but automatically: these tables belong to the service alone.
No ``alembic.ini`` is needed: the configuration is built here.

To write a new revision (developers)::

    python -c "from alembic import command; from visa_collab import migrate, db; \\
        command.revision(migrate.alembic_config(db.ALEMBIC_DIR, db.VERSION_TABLE), 'what changes')"
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from os import PathLike

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer version of the service than this one."""


def alembic_config(script_location: str | PathLike, version_table: str,
                   connection: Connection | None = None) -> Config:
    """The configuration an ``alembic.ini`` would hold, plus the connection to migrate on."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("version_table", version_table)
    cfg.attributes["connection"] = connection
    return cfg


def run_env(target_metadata: MetaData | None = None) -> None:
    """The whole of each service's ``env.py``: migrate on the connection `upgrade` passes.

    Offline mode (``--sql``, for a database administrator who applies SQL by hand) renders
    the statements for the URL in the configuration's ``sqlalchemy.url``.
    """
    from alembic import context

    cfg = context.config
    options = {"target_metadata": target_metadata, "version_table": cfg.get_main_option("version_table")}
    if target_metadata is not None:
        options["include_name"] = own_tables(target_metadata)
    if context.is_offline_mode():
        context.configure(url=cfg.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
    else:
        connection = cfg.attributes.get("connection")
        if connection is None:
            raise RuntimeError("run these migrations through visa_collab.migrate.upgrade (it passes the connection)")
        context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


def own_tables(metadata: MetaData) -> Callable[[str | None, str, dict], bool]:
    """For autogenerate: only `metadata`'s tables are ours. The database may hold the hub's or
    another service's tables (and a retired pre-Alembic version table), never to be dropped."""

    def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
        return type_ != "table" or name in metadata.tables

    return include_name


def current_revision(conn: Connection, version_table: str) -> str | None:
    """The revision stored in `version_table`; None if it does not exist (a new database)."""
    return MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()


def head(script_location: str | PathLike) -> str:
    """The newest revision this code knows."""
    return ScriptDirectory(str(script_location)).get_current_head()


def upgrade(engine: Engine, script_location: str | PathLike, version_table: str, *,
            legacy: Callable[[Connection], str | None] | None = None, name: str = "service") -> str | None:
    """Bring the database to the newest revision, in one transaction; returns the revision it
    started from (None: it was empty).

    `legacy(conn)`, asked only when `version_table` does not exist, recognises a database
    written before the service used Alembic and returns the revision it matches (it is stamped
    so, then upgraded), or None. A revision this code does not know means newer code wrote the
    database: `SchemaTooNew`, and nothing is changed.
    """
    script = ScriptDirectory(str(script_location))
    target = script.get_current_head()
    with engine.begin() as conn:
        cfg = alembic_config(script_location, version_table, conn)
        start = current_revision(conn, version_table)
        if start is None and legacy is not None:
            start = legacy(conn)
            if start is not None:
                log.warning("The %s database predates its Alembic migrations; it matches revision %s", name, start)
                _known(script, start, name)
                command.stamp(cfg, start)
        if start is not None:
            _known(script, start, name)
        if start != target:
            command.upgrade(cfg, "head")
            log.info("The %s database was upgraded from revision %s to %s", name, start or "(empty)", target)
    return start


def _known(script: ScriptDirectory, revision: str, name: str) -> None:
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise SchemaTooNew(
            f"The {name} database is at revision {revision!r}, which this version does not know "
            f"(newest here: {script.get_current_head()}): a newer version wrote it. "
            "Run that version, or restore a backup taken before it was upgraded."
        )
