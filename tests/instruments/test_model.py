"""The instruments' physics on a manual clock: motors move at VELO, the temperature settles
exponentially, the detector counts only with the shutter open."""
from __future__ import annotations

import math

import pytest

from visa_instruments.model import DEFAULT_DEVICES, Instrument, LimitError, devices_of


def test_a_motor_moves_at_its_velocity_and_is_done_on_arrival(clock):
    d11 = Instrument("D11", clock)
    detector = d11.motors["DET:Z"]  # 8 m at 0.5 m/s
    assert detector.position() == 8.0 and detector.done()
    detector.move(12.0)
    assert not detector.done()
    clock.t += 2.0
    assert detector.position() == pytest.approx(9.0)
    clock.t += 5.9
    assert detector.position() == pytest.approx(11.95) and not detector.done()
    clock.t += 0.2
    assert detector.position() == 12.0 and detector.done()


def test_a_new_target_or_velocity_starts_from_where_the_motor_is(clock):
    motor = Instrument("D11", clock).motors["SAMPLE:X"]  # 0 mm at 10 mm/s
    motor.move(100.0)
    clock.t += 3.0
    motor.move(0.0)  # turn back at 30 mm
    clock.t += 1.0
    assert motor.position() == pytest.approx(20.0)
    motor.set_velocity(20.0)
    clock.t += 0.5
    assert motor.position() == pytest.approx(10.0)
    clock.t += 1.0
    assert motor.position() == 0.0 and motor.done()


def test_moves_outside_the_limits_and_non_positive_speeds_are_refused(clock):
    motor = Instrument("D11", clock).motors["DET:Z"]
    with pytest.raises(LimitError, match=r"DET:Z 40 m is outside \[1.5, 39\]"):
        motor.move(40.0)
    with pytest.raises(LimitError, match="velocity must be positive"):
        motor.set_velocity(0.0)
    assert motor.target == 8.0 and motor.velocity == 0.5


def test_the_sample_temperature_settles_exponentially_towards_its_setpoint(clock):
    sample = Instrument("D11", clock).sample  # 295 K, tau 30 s
    sample.set(195.0)
    assert sample.temperature() == pytest.approx(295.0) and not sample.settled()
    clock.t += 30.0
    assert sample.temperature() == pytest.approx(195.0 + 100.0 / math.e)
    clock.t += 30.0 * 7  # 100 K e^-8 = 0.034 K
    assert sample.temperature() == pytest.approx(195.0, abs=0.05) and sample.settled()
    with pytest.raises(LimitError, match="outside"):
        sample.set(-4.0)


def test_the_detector_counts_only_with_the_shutter_open_and_less_further_away(clock):
    d11 = Instrument("D11", clock)
    assert d11.count_rate() == 0.0
    d11.shutter_open = True
    near = d11.count_rate()
    assert near == pytest.approx(12000.0, rel=0.03)
    d11.motors["DET:Z"].move(16.0)
    clock.t += 16.0
    assert d11.count_rate() == pytest.approx(near / 4, rel=0.05)
    d11.shutter_open = False
    assert d11.count_rate() == 0.0


def test_devices_come_from_the_table_and_unknown_instruments_get_the_default():
    assert [m.name for m in devices_of("IN5").motors] == ["SAMPLE:ROT", "CHOPPER:PHASE"]
    assert devices_of("d11") is devices_of("D11")
    assert devices_of("XYZ") is DEFAULT_DEVICES


def test_a_snapshot_records_positions_temperature_and_rate(clock):
    in5 = Instrument("IN5", clock)
    in5.shutter_open = True
    state = in5.snapshot()
    assert set(state) == {"SAMPLE:ROT", "CHOPPER:PHASE", "TEMP", "DET:RATE"}
    assert state["TEMP"] == 1.5 and state["DET:RATE"] > 3000
