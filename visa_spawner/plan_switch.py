"""Plans switched off by an admin, without a hub restart: a small JSON file the console writes.

The file is `{"disabled": ["plan-id", ...]}`. The hub reads it at each home page and each spawn,
so it is cached on its modification time (one `stat` per read). A disabled plan is not offered
and not started; instances already running on it are untouched.

Why a file and not the hub's database: the ops console is a separate service (it must not write
the hub's tables), and a file written atomically is read by the hub without any lock.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: path → ((inode, mtime_ns, size), disabled ids): the last good read of each file (each atomic
#: write makes a new inode, so two writes within one mtime tick are still told apart)
_cache: dict[str, tuple[tuple[int, int, int], frozenset[str]]] = {}


def parse_disabled(text: str) -> frozenset[str]:
    """The plan ids of the file's text; ValueError when it is not the expected shape."""
    data = json.loads(text)
    ids = data.get("disabled") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError('expected {"disabled": ["plan-id", ...]}')
    return frozenset(ids)


def read_disabled(path: str | os.PathLike) -> set[str]:
    """Ids of the plans disabled in `path` (none if the file does not exist).

    A file that cannot be read or parsed keeps the last good answer (logged): a hand edit gone
    wrong must not switch every plan back on, or off.
    """
    key = os.fspath(path)
    try:
        st = os.stat(key)
    except FileNotFoundError:
        _cache.pop(key, None)
        return set()
    except OSError as e:
        log.warning("Plan switch file %s: cannot stat (%s); keeping the last answer", key, e.strerror)
        return set(_cache.get(key, ((0, 0, 0), frozenset()))[1])
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _cache.get(key)
    if cached and cached[0] == stamp:
        return set(cached[1])
    try:
        disabled = parse_disabled(Path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("Plan switch file %s is unusable (%s); keeping the last answer", key, e)
        return set(cached[1]) if cached else set()
    _cache[key] = (stamp, disabled)
    return set(disabled)


def write_disabled(path: str | os.PathLike, ids: Iterable[str]) -> None:
    """Replace the file atomically (readers see the old or the new list, never half of one)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"disabled": sorted(set(ids))}, indent=1) + "\n"
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
