"""Plans switched off by an admin, without a hub restart: a small JSON file the console writes.

The file is `{"disabled": ["plan-id", ...]}`. The hub reads it at each home page and each spawn,
so it is cached on its modification time (one `stat` per read). A disabled plan is not offered
and not started; instances already running on it are untouched.

Why a file and not the hub's database: the ops console is a separate service (it must not write
the hub's tables), and a file written atomically is read by the hub without any lock.
`read_switch_file` and `write_switch_file` are that mechanism for any such file (the quota
overrides use them too: `quota_overrides.py`).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: (path, parser) → ((inode, mtime_ns, size), parsed): the last good read of each file (each atomic
#: write makes a new inode, so two writes within one mtime tick are still told apart)
_cache: dict[tuple[str, Callable], tuple[tuple[int, int, int], Any]] = {}


def read_switch_file(path: str | os.PathLike, parse: Callable[[str], T], empty: T, what: str) -> T:
    """`parse` of the file's text, re-parsed only when the file changed; `empty` if it does not exist.

    A file that cannot be read or parsed (`parse` raises ValueError) keeps the last good answer
    (logged): a hand edit gone wrong must not switch everything back on, or off. The answer is
    shared between callers: `parse` should return an immutable value (or callers copy it).
    """
    key = (os.fspath(path), parse)
    try:
        st = os.stat(key[0])
    except FileNotFoundError:
        _cache.pop(key, None)
        return empty
    except OSError as e:
        log.warning("%s %s: cannot stat (%s); keeping the last answer", what, key[0], e.strerror)
        return _cache.get(key, ((0, 0, 0), empty))[1]
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _cache.get(key)
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        parsed = parse(Path(key[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("%s %s is unusable (%s); keeping the last answer", what, key[0], e)
        return cached[1] if cached else empty
    _cache[key] = (stamp, parsed)
    return parsed


def write_switch_file(path: str | os.PathLike, data: Any) -> None:
    """Replace the file with `data` as JSON, atomically (readers see the old or the new file, never half)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(data, indent=1, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # the hub (another account, maybe) reads it
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_disabled(text: str) -> frozenset[str]:
    """The plan ids of the file's text; ValueError when it is not the expected shape."""
    data = json.loads(text)
    ids = data.get("disabled") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError('expected {"disabled": ["plan-id", ...]}')
    return frozenset(ids)


def read_disabled(path: str | os.PathLike) -> set[str]:
    """Ids of the plans disabled in `path` (none if the file does not exist, last good answer if broken)."""
    return set(read_switch_file(path, parse_disabled, frozenset(), "Plan switch file"))


def write_disabled(path: str | os.PathLike, ids: Iterable[str]) -> None:
    """Replace the file atomically (readers see the old or the new list, never half of one)."""
    write_switch_file(path, {"disabled": sorted(set(ids))})
