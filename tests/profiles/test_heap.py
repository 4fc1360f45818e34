"""The hub's start objects are frozen out of full garbage collections once it runs (visa_profiles/heap.py)."""
from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from traitlets.config import Config

from tests.hubtools import wait_for
from visa_profiles.common import apply_hub_and_instances
from visa_profiles.heap import freeze_after_start

REPO = Path(__file__).resolve().parents[2]


def test_the_freeze_runs_on_the_running_loop_after_its_delay():
    async def scenario() -> tuple[bool, int]:
        scheduled = freeze_after_start(0.05)
        await asyncio.to_thread(wait_for, lambda: gc.get_freeze_count() > 0, 10, "the freeze", interval=0.01)
        return scheduled, gc.get_freeze_count()

    gc.unfreeze()  # whatever another test's loop may have frozen
    try:
        scheduled, frozen = asyncio.run(scenario())
    finally:
        gc.unfreeze()
    assert scheduled, "the freeze is scheduled on the running loop"
    assert frozen > 10_000, f"the objects made so far are frozen ({frozen})"


def test_nothing_is_scheduled_when_the_config_is_only_read_or_switched_off():
    gc.unfreeze()
    assert freeze_after_start(0.01) is False  # no running loop: e.g. `jupyterhub --generate-config`

    async def switched_off() -> bool:
        return freeze_after_start(0)

    assert asyncio.run(switched_off()) is False
    assert gc.get_freeze_count() == 0


def test_a_bad_delay_stops_the_hub_with_a_message_naming_it(tmp_path: Path):
    with pytest.raises(SystemExit) as stop:
        apply_hub_and_instances(Config(), tmp_path, REPO, {"VISA_HUB_GC_FREEZE_AFTER": "soon"})
    assert "VISA_HUB_GC_FREEZE_AFTER='soon' must be a number >= 0" in str(stop.value)
