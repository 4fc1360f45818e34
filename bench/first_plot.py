"""Time to first plot once the demo hub is up (issue 16 item 7), as a newcomer does it in Chromium:
log in, create an instance of P-2026-011, wait for Lab, open first-look.ipynb, Run All, see a plot.

Runs its own demo hub (demo profile, free ports, fresh state and demo data) so it never touches a
running `make demo`. Prints each step's seconds; the setup stages come from scripts/setup.sh.
Usage: .venv/bin/python bench/first_plot.py [--runs N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser import chromium, demo_login  # noqa: E402
from tests.hubtools import demo_state, running_hub  # noqa: E402

PROPOSAL = "P-2026-011"
NOTEBOOK = "first-look.ipynb"


def first_plot(hub_url: str, browser, name: str) -> dict[str, float]:
    """One newcomer's path; seconds per step (each waits on what a person would see)."""
    steps: dict[str, float] = {}
    start = last = time.monotonic()

    def mark(step: str) -> None:
        nonlocal last
        now = time.monotonic()
        steps[step], last = now - last, now

    page = demo_login(browser, hub_url, "alice", timeout=180_000)
    mark("login")
    page.fill("#visa-name", name)
    page.select_option("#visa-proposal", PROPOSAL)
    page.click("#visa-create")
    page.wait_for_url(f"**/user/alice/{name}/**", wait_until="commit")
    page.wait_for_selector(f".jp-DirListing-item[title*='{NOTEBOOK}'], .jp-DirListing-item:has-text('{NOTEBOOK}')")
    mark("create → Lab")
    page.dblclick(f".jp-DirListing-item:has-text('{NOTEBOOK}')")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("text=Data analysis | Idle")  # the kernel is up: Run All now runs
    mark("open notebook + kernel")
    page.click("text=Run >> nth=0")
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_selector(".jp-OutputArea-output img, .jp-OutputArea-output canvas", state="attached")
    mark("run → first plot")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count()
    steps["total"] = time.monotonic() - start
    steps["stderr outputs"] = errors
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="instances created one after another")
    args = parser.parse_args()
    for state in demo_state():
        with running_hub(state) as hub, chromium() as browser:
            for run in range(args.runs):
                try:
                    steps = first_plot(hub.url, browser, f"first-plot-{run}")
                except Exception:
                    for i, context in enumerate(browser.contexts):
                        context.pages[-1].screenshot(path=f"/tmp/first-plot-failed-{i}.png")
                    raise
                print(f"run {run + 1}: " + ", ".join(f"{k} {v:.1f} s" if k != "stderr outputs" else f"{k} {v}"
                                                    for k, v in steps.items()), flush=True)


if __name__ == "__main__":
    main()
