"""The trainer's grid of every participant's live desktop (issue 19); routes mounted by the service app."""

from __future__ import annotations


def grid_routes(prefix: str, **settings: object) -> list[tuple]:
    """Tornado routes of the grid pages and actions under the service's `prefix` (filled in by the grid's author)."""
    return []
