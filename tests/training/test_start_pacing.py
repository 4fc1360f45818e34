"""The class start's spacing (visa_training.pacing) and its settings, checked where the hub is configured."""
from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from visa_training import hub_config
from visa_training.pacing import StartSpacing


def test_requests_asked_together_get_slots_an_interval_apart_and_a_quiet_one_goes_at_once():
    spacing = StartSpacing(0.2)
    assert [round(spacing.reserve(10.0), 6) for _ in range(3)] == [0.0, 0.2, 0.4]
    assert round(spacing.reserve(10.5), 6) == 0.1  # the third slot was 10.4: the next one is 10.6
    assert spacing.reserve(20.0) == 0.0
    assert [StartSpacing(0).reserve(1.0) for _ in range(3)] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_interval_is_refused(bad):
    with pytest.raises(ValueError, match="start interval"):
        StartSpacing(bad)


def test_the_numeric_settings_reach_the_service_and_a_bad_one_stops_the_hub_naming_it(tmp_path: Path):
    c = Config()
    hub_config.apply(c, state_dir=tmp_path, env={"VISA_TRAINING_START_INTERVAL": "0.5",
                                                 "VISA_TRAINING_START_CONCURRENCY": "4"})
    (service,) = [s for s in c.JupyterHub.services if s["name"] == hub_config.SERVICE]
    assert service["environment"]["VISA_TRAINING_START_INTERVAL"] == "0.5"
    assert service["environment"]["VISA_TRAINING_START_CONCURRENCY"] == "4"
    assert "VISA_TRAINING_POOL_SPARE" not in service["environment"]  # unset: the service's default
    with pytest.raises(SystemExit) as e:
        hub_config.apply(Config(), state_dir=tmp_path, env={"VISA_TRAINING_START_INTERVAL": "fast",
                                                            "VISA_TRAINING_START_CONCURRENCY": "0",
                                                            "VISA_TRAINING_START_TIMEOUT": "nan"})
    message = str(e.value)
    assert "VISA_TRAINING_START_INTERVAL='fast'" in message and "VISA_TRAINING_START_CONCURRENCY='0'" in message
    assert "VISA_TRAINING_START_TIMEOUT='nan'" in message
