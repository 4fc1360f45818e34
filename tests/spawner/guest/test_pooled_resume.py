"""The board's side of a pooled server waiting for its config (phonehome.PhoneHomeBoard), and the
pooled server's neutral config (openstack/pool.pooled_config): no hub, no cloud."""
from __future__ import annotations

import asyncio

from visa_spawner.backends.guest.phonehome import PhoneHomeBoard, resume_fingerprint
from visa_spawner.backends.openstack.pool import pooled_config

KEY = "k" * 43


async def test_a_waiting_pooled_server_gets_the_config_as_soon_as_it_is_offered():
    board = PhoneHomeBoard()
    asked = board.expect(resume_fingerprint(KEY))
    waiting = asyncio.ensure_future(board.wait_resume(KEY, 10))
    await asyncio.wait_for(asked.wait(), 5)  # the server's first call says it booted
    assert not waiting.done()
    board.offer_resume(resume_fingerprint(KEY), {"owner": "alice"})
    assert await asyncio.wait_for(waiting, 2) == {"owner": "alice"}


async def test_a_forgotten_key_answers_at_once_and_unknown_keys_never_wait():
    board = PhoneHomeBoard()
    board.expect(resume_fingerprint(KEY))
    waiting = asyncio.ensure_future(board.wait_resume(KEY, 10))
    await asyncio.sleep(0)
    board.forget(resume_fingerprint(KEY))  # adopted elsewhere or deleted: nothing for it
    assert await asyncio.wait_for(waiting, 2) is None
    # a key nobody expects (a guess, an old server) is answered at once and leaves nothing behind
    assert await asyncio.wait_for(board.wait_resume("x" * 43, 30), 1) is None
    assert board._expected == {} and board._offered == {}


async def test_the_wait_ends_without_an_offer():
    board = PhoneHomeBoard()
    board.expect(resume_fingerprint(KEY))
    assert await board.wait_resume(KEY, 0.05) is None


def test_a_pooled_config_names_nobody_and_carries_no_token():
    config = pooled_config(resume_key=KEY, phone_home_url="http://hub/hub/api/visa/phone-home", wait=25)
    assert config == {"version": 1, "pooled": True, "pool_wait": 25.0, "resume_key": KEY,
                      "phone_home_url": "http://hub/hub/api/visa/phone-home"}


def test_the_start_script_of_a_pooled_server_asks_again_until_it_is_adopted(tmp_path, monkeypatch):
    """`start_script.resume` with `pooled`: a 404 (not adopted yet) is asked again, with the wait in
    the body; the config it gets is written 0600 with the server's own key kept."""
    import http.server
    import json
    import os
    import threading

    from visa_spawner.backends.guest import start_script as ss

    asked = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            asked.append((self.headers["Authorization"], json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            body = json.dumps({"owner": "alice"}).encode() if len(asked) > 1 else b"{}"
            self.send_response(200 if len(asked) > 1 else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(ss, "CONFIG", str(tmp_path / "instance.json"))
    try:
        url = f"http://127.0.0.1:{server.server_port}/hub/api/visa/phone-home"
        new = ss.resume(pooled_config(resume_key=KEY, phone_home_url=url, wait=0.5))
    finally:
        server.shutdown()
    assert asked == [(f"visa-resume {KEY}", {"wait": 0.5})] * 2
    assert new == {"owner": "alice", "resume_key": KEY}
    assert json.loads((tmp_path / "instance.json").read_text()) == new
    assert os.stat(tmp_path / "instance.json").st_mode & 0o777 == 0o600
