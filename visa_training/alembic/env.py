"""Alembic environment of visa-training's tables, run by `visa_training.store.migrate`."""

from visa_collab.migrate import run_env
from visa_training.store import metadata

run_env(metadata)
