"""The desktop in the browser through the hub versus straight on Xvnc's socket (issue 16's benchmark).

One run, one sandbox instance (alice, P-2026-011), one Debian Chromium (headless, loopback), the
page's screen 1920×1080, the same page and noVNC client on two paths:

* **hub**: noVNC → configurable-http-proxy → jupyter-server (visa_instance.desktop_socket: auth,
  role, RFB filter) → unix socket → Xvnc;
* **direct**: noVNC → a bare websocket↔unix-socket bridge (tornado, started by this script as its
  own process, like websockify; relaying as jupyter-server-proxy's raw bridge does, TCP_NODELAY
  as the hub's handler) → the *same* Xvnc socket (reached through ``/proc/<pid>/root``).
  The page is the hub's own desktop page, served by the bridge with its URLs made local.

Workloads, each measured on both paths in turn (one viewer at a time):

* **W0** the transport alone: RFB round trips (a 1×1 update request → its update) from a Python
  websocket client on each path, no browser and no drawing: what the proxies add. p50/p95 in ms.

* **W1** an xterm in the desktop: a key pressed (or a click raising the window behind it, or it) → the
  first animation frame whose pixels in the xterm's window differ. Both stamps are
  the page's own clock: the input event as the page receives it (a capturing listener) and the
  ``requestAnimationFrame`` that sees the change. p50/p95 in ms.
* **W2** a 1000×700 matplotlib figure (QtAgg, the instance env's Python, run in the sandbox as
  the instance's user) panned at 30 Hz: for ``--seconds`` the page counts frames whose figure
  pixels changed, the changed pixels, and the bytes its websocket received; psutil gives the CPU
  of Xvnc and of the proxy (CHP + jupyter-server on the hub path, the bridge on the direct path).

Targets: W2 ≥ 25 fps and ≤ 1 bit per changed pixel; W1 p95 ≤ 60 ms; hub ≤ 1.1× direct.

    .venv/bin/python bench/desktop.py [--seconds 20] [--keys 40] [--levels page,4/2]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.desktop_direct import local_page  # noqa: E402
from bench.instrument import percentiles  # noqa: E402
from tests.browser import chromium, demo_login  # noqa: E402
from tests.hubtools import (  # noqa: E402
    DEMO_CONFIG,
    free_port,
    login_factory,
    make_demo_data,
    make_state_dir,
    run_code,
    running_hub,
    unique,
    wait_for,
)
from tests.instance import instrument_ui as ui  # noqa: E402

WIDTH, HEIGHT = 1920, 1080
FIGURE = (1000, 700)
TERM_TITLE = "visa-bench-term"

# Runs in the sandbox (instance env's Python): a 1000x700 figure panned at 30 Hz for ever; writes
# the canvas's place on the screen, then counts the frames it drew (the app's own rate).
PAN_APP = r'''
import json, os, sys
import numpy as np
import matplotlib
matplotlib.use("QtAgg")
matplotlib.rcParams["toolbar"] = "None"
import matplotlib.pyplot as plt
from matplotlib.backends.qt_compat import QtCore

y, x = np.mgrid[-140:140, -280:280] / 20.0  # a 560x280 detector image
r = np.hypot(x - 1.0, y + 0.5)
image = np.exp(-r / 6) + sum(np.exp(-((r - q) ** 2) / 0.02) / (1 + q) for q in (2.0, 3.5, 4.7, 6.1, 7.4))
fig = plt.figure(figsize=(10, 7), dpi=100)
ax = fig.add_subplot()
ax.imshow(image, extent=(-14, 14, -7, 7), origin="lower", cmap="viridis", interpolation="nearest")
ax.set_title("D11 detector (bench pan)")
window = fig.canvas.manager.window
window.move(400, 150)
drawn = [0]
fig.canvas.mpl_connect("draw_event", lambda e: drawn.__setitem__(0, drawn[0] + 1))
step = [0]

def pan():
    step[0] += 1
    offset = 4 - abs((step[0] * 0.05) % 8 - 4)  # a triangle wave: left and right across the data
    ax.set_xlim(-10 + offset, -2 + offset)
    fig.canvas.draw()

def where():
    corner = fig.canvas.mapToGlobal(QtCore.QPoint(0, 0))
    with open(sys.argv[1], "w") as f:
        json.dump({"x": corner.x(), "y": corner.y(), "w": fig.canvas.width(), "h": fig.canvas.height()}, f)

def report():  # written whole, then renamed: the bench never reads a half-written count
    with open(sys.argv[1] + ".frames.new", "w") as f:
        f.write(str(drawn[0]))
    os.replace(sys.argv[1] + ".frames.new", sys.argv[1] + ".frames")

timer = QtCore.QTimer(); timer.timeout.connect(pan); timer.start(33)
QtCore.QTimer.singleShot(1500, where)
reporter = QtCore.QTimer(); reporter.timeout.connect(report); reporter.start(500)
plt.show()
'''

# Kernel code (sandbox, as the instance's user): start a program on the desktop's display.
ON_DISPLAY = r'''
import glob, os, subprocess, sys, time
env = dict(os.environ, DISPLAY=":" + sorted(glob.glob("/tmp/.X11-unix/X*"))[0].rsplit("X", 1)[1],
           XAUTHORITY=glob.glob("/tmp/visa-desktop-*/Xauthority")[0], QT_QPA_PLATFORM="xcb")
'''

# Page side: bytes received by websockets, the time of the last input event, and a watcher that
# stamps the frames whose pixels changed in a region (and counts the changed pixels).
PROBE = r"""
(() => {
  const bench = window.visaBench = { bytes: 0, input: null, watch: null };
  const Native = window.WebSocket;
  window.WebSocket = new Proxy(Native, { construct(target, args) {
    const ws = new target(...args);
    ws.addEventListener("message", (e) => { bench.bytes += e.data.byteLength || e.data.size || e.data.length || 0; });
    return ws;
  }});
  const stamp = (e) => { bench.input = e.timeStamp; };
  window.addEventListener("keydown", stamp, true);
  window.addEventListener("pointerdown", stamp, true); // noVNC cancels it: no mousedown follows
})();
"""
WATCH = r"""([x, y, w, h]) => {
  const ctx = document.querySelector('#visa-screen canvas').getContext('2d', { willReadFrequently: true });
  const read = () => new Uint32Array(ctx.getImageData(x, y, w, h).data.buffer);
  const bench = window.visaBench;
  const watch = bench.watch = { frames: 0, pixels: 0, latencies: [], last: read(), stop: false };
  // the visible canvas changes only when noVNC flips its back buffer onto it: read the pixels
  // (a 1000x700 read and compare costs the browser ~5 ms) only after a flip, not every frame
  const display = window.visaDesktop.rfb._display;
  if (!display.visaBenchFlips) {
    const flip = display.flip;
    display.visaBenchFlips = 0;
    display.flip = function (...args) { display.visaBenchFlips++; return flip.apply(this, args); };
  }
  let flips = -1;
  const frame = () => {
    if (watch.stop) return;
    if (display.visaBenchFlips === flips) { requestAnimationFrame(frame); return; }
    flips = display.visaBenchFlips;
    const now = performance.now();
    const pixels = read();
    let changed = 0;
    for (let i = 0; i < pixels.length; i++) if (pixels[i] !== watch.last[i]) changed++;
    if (changed) {
      watch.frames++; watch.pixels += changed; watch.last = pixels;
      if (bench.input !== null) { watch.latencies.push(now - bench.input); bench.input = null; }
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}"""


# ---------------------------------------------------------------- processes


def desktop_processes(instance_name: str) -> tuple[psutil.Process, psutil.Process, str]:
    """(Xvnc, its jupyter-server, the published RFB socket as the host reaches it) of our instance."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "visa_instance.desktop_launcher" not in cmd:
            continue
        try:
            if proc.environ().get("VISA_INSTANCE_NAME") != instance_name:
                continue
            xvnc = next(c for c in proc.children() if c.name() == "Xvnc")
        except (psutil.Error, StopIteration):
            continue
        path = cmd[cmd.index("--socket") + 1]
        return xvnc, proc.parent(), f"/proc/{xvnc.pid}/root{path}"
    raise LookupError(f"no desktop launcher for {instance_name!r}")


def chp_process(hub_pid: int) -> psutil.Process:
    return next(p for p in psutil.Process(hub_pid).children(recursive=True)
                if "configurable-http-proxy" in " ".join(p.cmdline()))


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


# ---------------------------------------------------------------- workloads


def new_instance(page, name: str) -> str:
    """A sandbox instance with a 1920x1080 screen, kept at that size (the page's "Fixed size"); its
    server name once Lab shows."""
    page.context.add_init_script("localStorage.setItem('visa-desktop-fit', 'false')")
    page.fill("#visa-name", name)
    page.select_option("#visa-proposal", "P-2026-011")
    page.select_option("#visa-screen", f"{WIDTH}x{HEIGHT}")
    page.select_option("#visa-keyboard", "us")
    page.click("#visa-create")
    page.wait_for_url("**/lab**", timeout=120_000)
    return page.url.split("/user/", 1)[1].split("/")[1]


def connect(page, url: str) -> None:
    page.goto(url)
    ui.wait_connected(page)
    page.wait_for_function(f"document.querySelector('#visa-screen canvas').width === {WIDTH}"
                           f" && document.querySelector('#visa-screen canvas').height === {HEIGHT}",
                           timeout=30_000)


def screen_point(page, x: int, y: int) -> tuple[float, float]:
    """The page's point showing the screen's (x, y), however noVNC scales the canvas."""
    box = page.locator("#visa-screen canvas").bounding_box()
    return box["x"] + x * box["width"] / WIDTH, box["y"] + y * box["height"] / HEIGHT


def quiet(page, region: list[int], for_ms: float = 400) -> None:
    """Until the region has not changed for ``for_ms`` (the previous input's drawing is over)."""
    page.evaluate(WATCH, region)
    def still() -> bool:
        frames = page.evaluate("window.visaBench.watch.frames")
        time.sleep(for_ms / 1000)
        return page.evaluate("window.visaBench.watch.frames") == frames
    wait_for(still, 20, "the region to stop changing", interval=0.01)
    page.evaluate("window.visaBench.watch.stop = true")


def focus(page, region: list[int]) -> None:
    """Click the xterm until a key typed there is drawn (a click before openbox manages the new
    window is lost), then clear the line."""
    x, y, w, h = region

    def echoed() -> bool:
        page.mouse.click(*screen_point(page, x + w // 2, y + h // 2))
        quiet(page, region, 300)
        page.evaluate(WATCH, region)
        page.keyboard.press("x")
        time.sleep(0.5)
        page.evaluate("window.visaBench.watch.stop = true")
        return page.evaluate("window.visaBench.watch.frames") > 0

    wait_for(echoed, 30, "the xterm to take the keyboard", interval=0.2)
    page.keyboard.press("Control+u")


def w1(page, region: list[int], keys: int) -> tuple[list[float], int]:
    """Input → changed pixels in the xterm, ms: ``keys`` key presses, then clicks that raise the
    desktop's own terminal (behind ours, at +40+40) and ours again; and how many inputs drew
    nothing within 2 s."""
    x, y, w, h = region
    focus(page, region)
    quiet(page, region)
    page.evaluate(WATCH, region)
    latencies: list[float] = []
    missed = 0

    def one(action) -> None:
        nonlocal missed
        page.evaluate("window.visaBench.input = null")
        count = len(latencies)
        action()
        try:
            wait_for(lambda: len(page.evaluate("window.visaBench.watch.latencies")) > count, 2,
                     "the input drawn", interval=0.005)
        except TimeoutError:
            missed += 1
        latencies[:] = page.evaluate("window.visaBench.watch.latencies")
        time.sleep(0.15)  # what a typist leaves between keys; lets the echo's last rectangles land

    for i in range(keys):
        one(lambda i=i: page.keyboard.press("abcdefghij klmnopqrst"[i % 21]))
    for _ in range(max(keys // 4, 1)):  # a click on the window behind raises it over ours, then back
        one(lambda: page.mouse.click(*screen_point(page, x + 20, y - 60)))
        one(lambda: page.mouse.click(*screen_point(page, x + w // 2, y + h // 2)))
    page.evaluate("window.visaBench.watch.stop = true")
    page.keyboard.press("Control+u")
    return latencies, missed


def w0(url: str, cookie: str, origin: str, n: int) -> list[float]:
    """The transport alone: ``n`` RFB round trips (a 1x1 non-incremental update request → its
    update) from a Python websocket client, seconds; no browser, no drawing."""
    import websocket

    from tests.rfb import RfbClient

    ws = websocket.create_connection(url, header=[f"Cookie: {cookie}"] if cookie else [], origin=origin,
                                     timeout=30)
    client = RfbClient(ws)
    client.screen()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        ws.send_binary(struct.pack(">BBHHHH", 3, 0, 0, 0, 1, 1))
        client.read_update()
        out.append(time.perf_counter() - t0)
    client.close()
    return out


def w2(page, region: list[int], seconds: float, procs: list[psutil.Process], xvnc: psutil.Process) -> dict:
    page.evaluate(WATCH, region)
    bytes0, cpu_x0, cpu_p0 = page.evaluate("window.visaBench.bytes"), cpu_seconds([xvnc]), cpu_seconds(procs)
    t0 = time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - t0
    watch = page.evaluate("(() => { const w = window.visaBench.watch; w.stop = true;"
                          " return { frames: w.frames, pixels: w.pixels, bytes: window.visaBench.bytes }; })()")
    return {
        "fps": watch["frames"] / took,
        "bits_per_px": 8 * (watch["bytes"] - bytes0) / max(watch["pixels"], 1),
        "mbit_s": 8 * (watch["bytes"] - bytes0) / took / 1e6,
        "xvnc_cpu": 100 * (cpu_seconds([xvnc]) - cpu_x0) / took,
        "proxy_cpu": 100 * (cpu_seconds(procs) - cpu_p0) / took,
    }


# ---------------------------------------------------------------- the run


def run(seconds: float, keys: int, levels: list[str], shots: str = "") -> None:
    state = make_state_dir("visahub-bench-desktop-")
    make_demo_data(DEMO_CONFIG.parent / "catalogue.yaml", state / "data")
    bridge = None
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    try:
        with running_hub(state) as hub, chromium() as browser:
            page = demo_login(browser, hub.url, "alice", width=WIDTH, height=HEIGHT + ui.BAR + 4)
            page.context.add_init_script(PROBE)
            name = unique("Bench desktop")
            server = new_instance(page, name)
            hub_url = f"{hub.url}/user/alice/{server}/visa/desktop"
            connect(page, hub_url)
            xvnc, jupyter, rfb_socket = desktop_processes(name)
            html = page.request.get(hub_url).text()
            page_file = state / "direct.html"
            page_file.write_text(local_page(html, f"/user/alice/{server}/"))
            port = free_port()
            bridge = subprocess.Popen([sys.executable, str(REPO / "bench" / "desktop_direct.py"), rfb_socket, str(port),
                                       str(page_file)])
            wait_for(lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True, 20,
                     "the direct bridge", interval=0.05)
            bridge_proc = psutil.Process(bridge.pid)
            paths = {"hub": (hub_url, [chp_process(hub.proc.pid), jupyter]),
                     "direct": (f"http://127.0.0.1:{port}/", [bridge_proc])}
            browser_user = login_factory(hub)("alice")

            out = run_code(browser_user, "alice", server, ON_DISPLAY + (
                f"subprocess.Popen(['xterm', '-T', '{TERM_TITLE}', '-geometry', '80x6+300+300', '-fa', "
                f"'DejaVu Sans Mono', '-fs', '14'], env=env, start_new_session=True)\n"
                f"for _ in range(200):\n"  # xwininfo (x11-utils, in the image), not xdotool (not installed)
                f"    info = subprocess.run(['xwininfo', '-name', '{TERM_TITLE}'], env=env, capture_output=True,"
                f" text=True).stdout\n"
                f"    if 'IsViewable' in info: break\n"
                f"    time.sleep(0.1)\n"
                f"print(info)\n"))
            geo = dict(re.findall(r"(Absolute upper-left [XY]|Width|Height):\s+(\d+)", out))
            assert "Width" in geo, f"no xterm geometry: {out!r}"
            term = [int(geo["Absolute upper-left X"]), int(geo["Absolute upper-left Y"]), int(geo["Width"]),
                    int(geo["Height"])]
            print(f"xterm at {term}", flush=True)

            results: dict[str, dict] = {k: {} for k in paths}
            base = f"/user/alice/{server}/"
            cookie = "; ".join(f"{c.name}={c.value}" for c in browser_user.s.cookies if base.startswith(c.path))
            rtt_urls = {"hub": (hub.url.replace("http", "ws") + f"{base}desktop/", cookie, hub.url),
                        "direct": (f"ws://127.0.0.1:{port}/desktop/", "", f"http://127.0.0.1:{port}")}
            for path, (url, jar, origin) in rtt_urls.items():
                results[path]["w0"] = percentiles(w0(url, jar, origin, 300))
                print(f"W0 {path}: RFB round trip p50 {results[path]['w0'][0]:.2f} ms, "
                      f"p95 {results[path]['w0'][1]:.2f} ms", flush=True)
            for path, (url, _procs) in paths.items():
                if page.url != url:
                    connect(page, url)
                lat, missed = w1(page, term, keys)
                results[path]["w1"] = percentiles([v / 1000 for v in lat])
                print(f"W1 {path}: p50 {results[path]['w1'][0]:.0f} ms, p95 {results[path]['w1'][1]:.0f} ms "
                      f"({len(lat)} inputs drawn, {missed} drew nothing in 2 s)", flush=True)

            where = "bench-pan.json"
            run_code(browser_user, "alice", server, ON_DISPLAY + (
                f"script = os.path.expanduser('~/bench_pan.py')\n"
                f"open(script, 'w').write({PAN_APP!r})\n"
                f"subprocess.Popen([sys.executable, script, os.path.expanduser('~/{where}')], env=env,"
                f" start_new_session=True)\n"))
            home = Path(f"/proc/{xvnc.pid}/root") / xvnc.environ()["HOME"].lstrip("/")
            figure = wait_for(lambda: json.loads((home / where).read_text()), 60, "the matplotlib window")
            region = [figure["x"], figure["y"], figure["w"], figure["h"]]
            print(f"figure canvas at {region} (asked {FIGURE[0]}x{FIGURE[1]})", flush=True)
            for path, (url, procs) in paths.items():
                if page.url != url:
                    connect(page, url)
                for level in levels:
                    set_levels(page, level)
                    frames0 = int((home / f"{where}.frames").read_text())
                    r = results[path][f"w2 {level}"] = w2(page, region, seconds, procs, xvnc)
                    if shots:  # the figure while it moves: what the lossy levels cost the eye
                        x, y = screen_point(page, region[0], region[1])
                        x2, y2 = screen_point(page, region[0] + region[2], region[1] + region[3])
                        page.screenshot(path=str(Path(shots) / f"pan-{path}-{level.replace('/', '-')}.png"),
                                        clip={"x": x, "y": y, "width": x2 - x, "height": y2 - y})
                    r["app_fps"] = (int((home / f"{where}.frames").read_text()) - frames0) / seconds  # ± 0.5 s
                    print(f"W2 {path}, levels {level}: {r['fps']:.1f} fps in the page "
                          f"(app drew ~{r['app_fps']:.1f}/s), "
                          f"{r['bits_per_px']:.2f} bit/changed px, {r['mbit_s']:.1f} Mbit/s, "
                          f"Xvnc {r['xvnc_cpu']:.0f}% CPU, proxy {r['proxy_cpu']:.0f}% CPU", flush=True)
            report(results)
    finally:
        if bridge is not None:
            bridge.terminate()
            bridge.wait(10)
        print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        shutil.rmtree(state, ignore_errors=True)


def set_levels(page, level: str) -> None:
    """``q/c``: noVNC's JPEG quality and compression level (noVNC sends SetEncodings at once);
    ``page``: what the desktop page itself sets."""
    if level != "page":
        quality, compression = (int(v) for v in level.split("/"))
        page.evaluate(f"window.visaDesktop.rfb.qualityLevel = {quality};"
                      f" window.visaDesktop.rfb.compressionLevel = {compression}")
    time.sleep(1)  # the updates in flight at the old levels


def report(results: dict[str, dict]) -> None:
    hub, direct = results["hub"], results["direct"]
    rows = [
        ("W0 RFB round trip p50 (ms)", hub["w0"][0], direct["w0"][0], None),
        ("W0 RFB round trip p95 (ms)", hub["w0"][1], direct["w0"][1], None),
        ("W1 p50 (ms)", hub["w1"][0], direct["w1"][0], None),
        ("W1 p95 (ms)", hub["w1"][1], direct["w1"][1], "≤ 60"),
    ]
    for key in (k for k in hub if k.startswith("w2 ")):
        rows += [
            (f"W2 {key[3:]}: fps in the page", hub[key]["fps"], direct[key]["fps"], "≥ 25"),
            (f"W2 {key[3:]}: bit / changed px", hub[key]["bits_per_px"], direct[key]["bits_per_px"], "≤ 1"),
            (f"W2 {key[3:]}: Xvnc CPU (%)", hub[key]["xvnc_cpu"], direct[key]["xvnc_cpu"], None),
            (f"W2 {key[3:]}: proxy CPU (%)", hub[key]["proxy_cpu"], direct[key]["proxy_cpu"], None),
        ]
    print("\n| figure | hub | direct | hub / direct | target |\n|---|---|---|---|---|")
    for label, h, d, target in rows:
        ratio = h / d if d else float("inf")
        print(f"| {label} | {h:.2f} | {d:.2f} | {ratio:.2f} | {target or ''} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="W2's length on each path")
    parser.add_argument("--keys", type=int, default=40, help="W1's key presses on each path")
    parser.add_argument("--levels", default="page",
                        help="W2 once per item, comma-separated: 'page' (the page's own settings) or "
                        "'quality/compression' for noVNC (e.g. 6/2, noVNC's defaults)")
    parser.add_argument("--shots", default="", help="a directory: a screenshot of the moving figure per path and level")
    args = parser.parse_args()
    if args.shots:
        Path(args.shots).mkdir(parents=True, exist_ok=True)
    run(args.seconds, args.keys, args.levels.split(","), args.shots)


if __name__ == "__main__":
    main()
