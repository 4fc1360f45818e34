"""The desktop's environment contract with the hub, validated.

The hub passes VISA_SCREEN, VISA_KEYBOARD, VISA_PROPOSAL and VISA_INSTANCE_NAME through the
environment. They come from user input, so each one is checked here, and a bad value falls back
to a safe default with a log line rather than stopping the desktop. Everything here is pure (no
processes, no file system) so it can be tested as a table.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("visa_instance.desktop")

DEFAULT_SCREEN = (1280, 720)
MIN_SCREEN = (640, 480)
MAX_SCREEN = (3840, 2160)
DEFAULT_KEYBOARD = "us"
DEFAULT_NAME = "VISA instance"
MAX_NAME_LENGTH = 250
DATA_ROOT = "/data"

_SCREEN_RE = re.compile(r"^([0-9]{3,4})x([0-9]{3,4})$")
_KEYBOARD_RE = re.compile(r"^([a-z]{2,3})(?:\(([a-z0-9_]+)\))?$")
# A proposal id becomes a path component under /data: no separators, no dot-only names.
_PROPOSAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Keyboard:
    """An XKB layout and optional variant, e.g. ``fr`` or ``us(intl)``."""

    layout: str
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.layout}({self.variant})" if self.variant else self.layout


@dataclass(frozen=True)
class DesktopSettings:
    """What the launcher needs to know, already validated."""

    width: int = DEFAULT_SCREEN[0]
    height: int = DEFAULT_SCREEN[1]
    keyboard: Keyboard = Keyboard(DEFAULT_KEYBOARD)
    proposal: str | None = None
    name: str = DEFAULT_NAME

    @property
    def geometry(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def data_dir(self) -> str | None:
        """Where the proposal's data would be mounted (it may not exist)."""
        return f"{DATA_ROOT}/{self.proposal}" if self.proposal else None


def parse_screen(value: str | None) -> tuple[int, int] | None:
    """``"1920x1080"`` → ``(1920, 1080)`` within the allowed bounds, else None."""
    if value is None:
        return None
    match = _SCREEN_RE.fullmatch(value.strip())
    if not match:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    if not (MIN_SCREEN[0] <= width <= MAX_SCREEN[0] and MIN_SCREEN[1] <= height <= MAX_SCREEN[1]):
        return None
    return width, height


def parse_keyboard(value: str | None) -> Keyboard | None:
    """``"fr"`` / ``"us(intl)"`` → Keyboard, else None (never passed to a shell either way)."""
    if value is None:
        return None
    match = _KEYBOARD_RE.fullmatch(value.strip())
    if not match:
        return None
    return Keyboard(match.group(1), match.group(2) or "")


def parse_proposal(value: str | None) -> str | None:
    """A proposal id usable as one path component under /data, else None."""
    if value is None:
        return None
    value = value.strip()
    if not _PROPOSAL_RE.fullmatch(value) or set(value) <= {"."}:
        return None
    return value


def clean_name(value: str | None) -> str | None:
    """Free text shown as a window title: printable characters only, length capped."""
    if value is None:
        return None
    printable = "".join(
        " " if ch.isspace() else ch
        for ch in value
        if ch.isspace() or unicodedata.category(ch)[0] not in ("C",)
    )
    printable = " ".join(printable.split())[:MAX_NAME_LENGTH]
    return printable or None


def settings_from_env(
    env: Mapping[str, str], logger: logging.Logger | logging.LoggerAdapter = log
) -> DesktopSettings:
    """Read the VISA_* variables; each bad value is logged (truncated) and replaced by a default."""
    kwargs: dict = {}

    screen_raw = env.get("VISA_SCREEN")
    screen = parse_screen(screen_raw)
    if screen:
        kwargs["width"], kwargs["height"] = screen
    elif screen_raw:
        logger.warning(
            "VISA_SCREEN=%r is not WxH within %dx%d..%dx%d; using %dx%d",
            screen_raw[:40], *MIN_SCREEN, *MAX_SCREEN, *DEFAULT_SCREEN,
        )

    keyboard_raw = env.get("VISA_KEYBOARD")
    keyboard = parse_keyboard(keyboard_raw)
    if keyboard:
        kwargs["keyboard"] = keyboard
    elif keyboard_raw:
        logger.warning(
            "VISA_KEYBOARD=%r is not an XKB layout; using %s", keyboard_raw[:40], DEFAULT_KEYBOARD
        )

    proposal_raw = env.get("VISA_PROPOSAL")
    proposal = parse_proposal(proposal_raw)
    if proposal:
        kwargs["proposal"] = proposal
    elif proposal_raw:
        logger.warning("VISA_PROPOSAL=%r is not a valid proposal id; ignoring it", proposal_raw[:40])

    name = clean_name(env.get("VISA_INSTANCE_NAME"))
    if name:
        kwargs["name"] = name

    return DesktopSettings(**kwargs)
