"""Fuzz fixtures: the real hub with the collaboration service (tests/collab's own fixtures,
reused as they are), the servers and shares it holds as the admin API sees them, and the
hypothesis settings every fuzz test shares (deterministic, no deadline: the hub is remote)."""
from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.collab.conftest import collab_hub, collab_state, instance_env, person  # noqa: F401 (fixtures)
from tests.hubtools import Hub

# One hypothesis configuration for the suite: the same examples on every run (CI is
# deterministic), no example database, no per-example deadline (a request to the hub is I/O).
FUZZ = {
    "deadline": None, "derandomize": True, "database": None, "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                              HealthCheck.large_base_example],
}


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, **FUZZ)


# What escaping must turn into entities: each special character between two marker letters,
# so the raw sequence cannot come from the page's own markup.
MARKERS = ("zq<zq", "zq>zq", 'zq"zq', "zq'zq")
HTML_PAYLOADS = (
    "<script>alert('zq')</script>zq<zq", '"><img src=x onerror=alert(1)>zq"zq', "'><svg onload=zq'zq>",
    "zq<zq/b>zq>zq", "</textarea></select><script>zq<zq</script>", "javascript:alert(1)//zq'zq",
    "{{7*7}}zq<zq{% raw %}", "&lt;zq<zq&#x3c;", "<!--zq>zq-->",
)


TRAVERSAL = ("../../etc/passwd", "..\\..\\windows", "/etc/shadow", "%2e%2e%2f%2e%2e%2f", "....//....//",
             "~root", "\x00../", "a/../../b", "file:///etc/passwd", "P-2026-011/../P-2026-042")
NUMBERS = st.one_of(st.integers(-(2**70), 2**70).map(str), st.floats().map(repr),
                    st.sampled_from(["-1", "0", "1e308", "NaN", "-inf", "0x10", "9" * 400]))
SHAPED = st.sampled_from(['{"a": [1, {"b": null}]}', "[[[[[]]]]]", "null", "true", "{}", "%s%n%x", "${jndi:x}",
                          "' OR 1=1 --", "\\u0000", "\r\n\r\nX-Injected: 1"])
# controls, format characters (zero-width, bidi overrides), combining marks, odd spaces, emoji,
# private use: what unicode normalisation and slugs must survive
ODD = st.text(st.characters(categories=["Cc", "Cf", "Co", "Mn", "Zs", "Zl", "Zp", "So", "Lo", "Nd"]), max_size=24)
HUGE = st.builds(lambda c, n: c * n, st.sampled_from(["A", "<", "é", "\u200b", "../", " ", "𝔘"]),
                 st.integers(251, 20000))
JUNK = st.one_of(st.text(max_size=40), st.sampled_from(HTML_PAYLOADS), st.sampled_from(TRAVERSAL), NUMBERS,
                 SHAPED, ODD, HUGE)


def unescaped(page: str) -> list[str]:
    """Markers that reached the page raw (each one is an escaping failure)."""
    return [m for m in MARKERS if m in page]


TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"/[^\"]+\.py\", line \d+")


def looks_like_traceback(text: str) -> bool:
    return bool(TRACEBACK.search(text))


@pytest.fixture(scope="session")
def server_records(collab_hub: Hub) -> Callable[[], dict[str, set[str]]]:  # noqa: F811 (the fixture)
    """servers() → every person's named servers, stopped ones included (admin REST API)."""

    def servers() -> dict[str, set[str]]:
        r = collab_hub.api("GET", "/users?include_stopped_servers=1")
        assert r.status_code == 200, r.text
        return {u["name"]: {n for n in u.get("servers", {}) if n} for u in r.json()}

    return servers


@pytest.fixture(scope="session")
def shares_of(collab_hub: Hub) -> Callable[[str, str], dict[str, list[str]]]:  # noqa: F811 (the fixture)
    """shares_of(owner, server) → {member: sorted scopes} as the hub holds them."""

    def shares(owner: str, server: str) -> dict[str, list[str]]:
        r = collab_hub.api("GET", f"/shares/{owner}/{server}")
        assert r.status_code == 200, r.text
        body = r.json()
        items = body["items"] if isinstance(body, dict) else body
        return {s["user"]["name"]: sorted(s["scopes"]) for s in items if s.get("user")}

    return shares
