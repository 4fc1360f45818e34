"""The hub → desktop environment contract: untrusted strings in, safe settings out."""

from __future__ import annotations

import logging

import pytest

from visa_instance.desktop_env import (
    DEFAULT_NAME,
    DesktopSettings,
    Keyboard,
    clean_name,
    parse_keyboard,
    parse_proposal,
    parse_screen,
    settings_from_env,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1920x1080", (1920, 1080)),
        ("1280x720", (1280, 720)),
        (" 1024x768 ", (1024, 768)),
        ("640x480", (640, 480)),  # lower bound
        ("3840x2160", (3840, 2160)),  # upper bound
        ("639x480", None),
        ("640x479", None),
        ("3841x2160", None),
        ("3840x2161", None),
        ("7680x4320", None),
        ("1920X1080", None),
        ("1920x1080x24", None),
        ("1920*1080", None),
        ("-1920x1080", None),
        ("1920x1080; rm -rf /", None),
        ("0x0", None),
        ("", None),
        (None, None),
        ("１９２０x１０８０", None),  # full-width digits are digits to Python, not to us
    ],
)
def test_parse_screen(raw: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_screen(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("us", Keyboard("us")),
        ("fr", Keyboard("fr")),
        ("gb", Keyboard("gb")),
        ("deu", Keyboard("deu")),
        ("us(intl)", Keyboard("us", "intl")),
        ("fr(bepo_afnor)", Keyboard("fr", "bepo_afnor")),
        ("US", None),
        ("u", None),
        ("usaa", None),
        ("us(", None),
        ("us()", None),
        ("us(intl", None),
        ("us,fr", None),
        ("us -option", None),
        ("us(intl);xterm", None),
        ("../../etc", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_keyboard(raw: str | None, expected: Keyboard | None) -> None:
    assert parse_keyboard(raw) == expected


def test_keyboard_str() -> None:
    assert str(Keyboard("us", "intl")) == "us(intl)"
    assert str(Keyboard("fr")) == "fr"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("12345", "12345"),
        ("ILL-5-23-123", "ILL-5-23-123"),
        ("exp_2024.1", "exp_2024.1"),
        ("..", None),
        (".", None),
        (".hidden", None),
        ("a/b", None),
        ("../etc", None),
        ("/etc", None),
        ("a b", None),
        ("x" * 65, None),
        ("", None),
        (None, None),
    ],
)
def test_parse_proposal(raw: str | None, expected: str | None) -> None:
    assert parse_proposal(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("My analysis", "My analysis"),
        ("  spaced   out\tname\n", "spaced out name"),
        ("bell\x07and\x1b[31mescape", "belland[31mescape"),
        ("Über-Messung α", "Über-Messung α"),
        ("x" * 300, "x" * 250),
        ("\x00\x01", None),
        ("", None),
        (None, None),
    ],
)
def test_clean_name(raw: str | None, expected: str | None) -> None:
    assert clean_name(raw) == expected


@pytest.mark.parametrize(
    "env, expected, warnings",
    [
        ({}, DesktopSettings(), 0),
        (
            {"VISA_SCREEN": "1920x1080", "VISA_KEYBOARD": "fr", "VISA_PROPOSAL": "42",
             "VISA_INSTANCE_NAME": "Beamtime"},
            DesktopSettings(1920, 1080, Keyboard("fr"), "42", "Beamtime"),
            0,
        ),
        ({"VISA_SCREEN": "99999x1"}, DesktopSettings(), 1),
        ({"VISA_KEYBOARD": "$(reboot)"}, DesktopSettings(), 1),
        ({"VISA_PROPOSAL": "../../root"}, DesktopSettings(), 1),
        (
            {"VISA_SCREEN": "bad", "VISA_KEYBOARD": "bad!", "VISA_PROPOSAL": "..",
             "VISA_INSTANCE_NAME": "\x1b"},
            DesktopSettings(),
            3,
        ),
        ({"VISA_SCREEN": "", "VISA_KEYBOARD": ""}, DesktopSettings(), 0),
    ],
)
def test_settings_from_env(
    env: dict[str, str], expected: DesktopSettings, warnings: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.desktop_env")
    with caplog.at_level(logging.WARNING, logger="test.desktop_env"):
        assert settings_from_env(env, logger) == expected
    assert len(caplog.records) == warnings


def test_defaults_and_paths() -> None:
    settings = DesktopSettings()
    assert settings.geometry == "1280x720"
    assert str(settings.keyboard) == "us"
    assert settings.name == DEFAULT_NAME
    assert settings.data_dir is None
    assert DesktopSettings(proposal="42").data_dir == "/data/42"


def test_bad_value_is_logged_truncated(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.desktop_env")
    with caplog.at_level(logging.WARNING, logger="test.desktop_env"):
        settings_from_env({"VISA_SCREEN": "A" * 10_000}, logger)
    assert len(caplog.records[0].getMessage()) < 200
