"""visa-training's internal API as an attacker reaches it through the hub's proxy (issue 19 review):
without the hub's secret, with a wrong one, another scheme, or on a service configured without
one, nothing is answered but 403 {"error"}; a seat token is never found by a guess. No hub (fast)."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support import free_port
from visa_training.app import make_app
from visa_training.course import parse_course
from visa_training.store import Store
from visa_training.training import Training

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
PREFIX = "/services/visa-training/"


@pytest.fixture
async def api(tmp_path):
    store = Store.from_url(f"sqlite:///{tmp_path / 't.sqlite'}", b"k" * 32, clock=lambda: NOW)
    await store.save_course(parse_course({"id": "py", "title": "Python", "trainers": ["tina"], "start": "today",
                                          "end": "today+1", "plan": "p", "participants": ["frank"],
                                          "guest_seats": 1}, NOW), source="yaml", actor="t")
    servers = []

    async def call(path: str, header: str | None, secret: str = "s3cret", method: str = "GET"):
        port = free_port()
        servers.append(make_app(Training(store, hub=None), PREFIX, "/hub/", b"c" * 32, secret).listen(port, "127.0.0.1"))
        r = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}{PREFIX}api/internal/{path}", method=method,
                                          body=b"" if method == "POST" else None, raise_error=False,
                                          headers={"Authorization": header} if header is not None else {})
        return r.code, json.loads(r.body or b"{}")

    yield call
    for s in servers:
        s.stop()
    store.engine.dispose()


@pytest.mark.parametrize("header, secret", [
    (None, "s3cret"), ("token ", "s3cret"), ("token s3cre", "s3cret"), ("token s3cret2", "s3cret"),
    ("Bearer s3cret", "s3cret"), ("s3cret", "s3cret"), ("token ", ""), (None, ""),
])
async def test_without_the_hubs_secret_nothing_is_answered(api, header, secret) -> None:
    code, body = await api("courses/py/participants/frank", header, secret)
    assert (code, body) == (403, {"error": "This API is for the hub only."})
    code, body = await api("seats/anything/redeem", header, secret, method="POST")
    assert code == 403 and "course" not in body


async def test_a_guessed_seat_token_is_unknown_and_used_seats_stay_used(api) -> None:
    assert (await api("courses/py/participants/frank", "token s3cret"))[0] == 200
    code, body = await api("seats/" + "A" * 43 + "/redeem", "token s3cret", method="POST")
    assert code == 404 and set(body) == {"error"}
