"""Desktop start cost: candidate desktop environments, and the real launcher before/after.

    .venv/bin/python bench/desktop_start.py candidates [--runs 3]
    .venv/bin/python bench/desktop_start.py launcher [--runs 5] [--before DIR]

``candidates``: for each session, Xvnc is started (as the launcher does) and timed from the
moment it announces its display (``-displayfd``): openbox (the launcher's config) is started, and
once it runs the candidate's panel and file manager, until the window manager manages every
window they show (by ``WM_CLASS``, as the launcher waits); then, 3 s later, the summed RSS and the
CPU time (user + system, Xvnc included) of the whole family. ``launcher``: the real
``visa-desktop`` from exec until its socket is published (what jupyter-server-proxy waits for).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from visa_instance.desktop_env import DesktopSettings  # noqa: E402
from visa_instance.desktop_launcher import DesktopSession  # noqa: E402
from visa_instance.desktop_session import session_commands, write_session_files  # noqa: E402

XTERM = ["xterm", "-geometry", "100x30+40+40"]
HOME = os.path.expanduser("~")
# name -> (programs started once openbox runs, window classes that must be mapped); "visa" is
# replaced by the launcher's own session (visa_instance.desktop_session)
CANDIDATES: dict[str, tuple[list[list[str]], list[str]]] = {
    "openbox + xterm (before)": ([XTERM], ["xterm"]),
    "openbox + tint2 + jgmenu + pcmanfm (chosen)": ([], ["tint2", "pcmanfm"]),
    "openbox + lxqt-panel + pcmanfm-qt": ([["lxqt-panel"], ["pcmanfm-qt", HOME]],
                                          ["lxqt-panel", "pcmanfm-qt"]),
    "openbox + xfce4-panel + thunar": ([["xfce4-panel"], ["thunar", HOME]],
                                       ["xfce4-panel", "thunar"]),
}


def family_cost(root: int) -> tuple[float, float]:
    """(RSS MiB, CPU s) of ``root``'s descendants."""
    rss = cpu = 0.0
    for p in psutil.Process(root).children(recursive=True):
        try:
            rss += p.memory_info().rss
            t = p.cpu_times()
            cpu += t.user + t.system
        except psutil.Error:
            pass
    return rss / 2**20, cpu


def one_candidate(commands: list[list[str]], classes: list[str]) -> tuple[float, float, float]:
    settings = DesktopSettings(width=1920, height=1080, name="bench desktop", proposal="P-2026-011")
    session = DesktopSession(settings, tempfile.mktemp(), 30)
    session.runtime_dir = tempfile.mkdtemp(prefix="visa-desktop-")
    try:
        session._start_xvnc(time.monotonic() + 20)
        t0 = time.monotonic()
        window_manager, visa = session_commands(write_session_files(settings, session.runtime_dir),
                                                settings, HOME)
        session._spawn_client(window_manager)
        session._wait_for_root_property("_NET_SUPPORTING_WM_CHECK", t0 + 20)
        for cmd in commands or visa:
            session._spawn_client(cmd)
        pending = set(classes)
        while pending and time.monotonic() - t0 < 30:
            pending -= session._managed_classes() or set()
            time.sleep(0.01)
        took = time.monotonic() - t0
        assert not pending, f"never mapped: {pending}"
        time.sleep(3)
        rss, cpu = family_cost(os.getpid())
        return took, rss, cpu
    finally:
        session.stop(grace=2)


def bench_candidates(runs: int) -> None:
    print("| session | start (s), median | RSS (MiB) | CPU (s) |\n|---|---|---|---|")
    for name, (commands, classes) in CANDIDATES.items():
        results = [one_candidate(commands, classes) for _ in range(runs)]
        starts = sorted(r[0] for r in results)
        print(f"| {name} | {statistics.median(starts):.2f} ({starts[0]:.2f}–{starts[-1]:.2f}) | "
              f"{statistics.median(r[1] for r in results):.0f} | "
              f"{statistics.median(r[2] for r in results):.2f} |", flush=True)


def launcher_start(tree: str) -> float:
    """One start of the launcher found in ``tree`` (a checkout's root), exec to socket."""
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "socket")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VISA_")}
        env.update(TMPDIR=tmp, PYTHONPATH=tree, VISA_SCREEN="1920x1080",
                   VISA_PROPOSAL="P-2026-011", VISA_INSTANCE_NAME="bench desktop")
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "visa_instance.desktop_launcher",
                                 "--socket", sock], env=env, stderr=subprocess.DEVNULL, cwd=tree)
        while not os.path.exists(sock):
            assert proc.poll() is None, "launcher died"
            time.sleep(0.005)
        took = time.monotonic() - t0
        time.sleep(1)
        proc.terminate()
        proc.wait(15)
        return took


def bench_launcher(runs: int, before: str | None) -> None:
    """This checkout's launcher, and (interleaved, same load) the one in ``before``."""
    trees = {"after (this checkout)": str(Path(__file__).resolve().parent.parent)}
    if before:
        trees["before (" + before + ")"] = before
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(runs):
        for name, tree in trees.items():
            times[name].append(launcher_start(tree))
    for name, values in times.items():
        values.sort()
        print(f"{name}: launcher exec -> socket published: median {statistics.median(values):.2f} s "
              f"(min {values[0]:.2f}, max {values[-1]:.2f}, {runs} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["candidates", "launcher"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", help="launcher: also time the visa_instance in this tree, e.g. "
                        "`git archive <commit> visa_instance | tar -x -C DIR`")
    args = parser.parse_args()
    if args.what == "candidates":
        bench_candidates(args.runs)
    else:
        bench_launcher(args.runs, args.before)


if __name__ == "__main__":
    main()
