"""Issue 16, the scientific stack and NeXus in Lab, on the installed instance env (scripts/setup.sh;
requirements-science.txt): what a scientist does first, for real: the home shows `data` and the
starter notebook, the notebook runs top to bottom in the "Data analysis" kernel on the demo data
(scippnexus, scippneutron, matplotlib, lmfit), h5web's server extension reads a run and answers a
corrupt file with a clear 4xx, and Lab's news pop-up is switched off in the page it serves."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.instance.jupyter import REPO, JupyterServer

pytestmark = pytest.mark.root  # the instance env is installed by scripts/setup.sh, as root

INSTANCE_ENV = Path(os.environ.get("VISA_INSTANCE_ENV", "/opt/visahub/instance-env"))
PROPOSAL = "P-2026-011"  # D11, SANS: two experiments, four runs


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's data root (visa-make-demo-data), plus a corrupt `.nxs` beside the runs."""
    out = tmp_path_factory.mktemp("data")
    subprocess.run([sys.executable, "-m", "visa_demo.data", "--out", str(out),
                    "--catalogue", str(REPO / "hub_config" / "demo" / "catalogue.yaml")],
                   check=True, capture_output=True, timeout=120)
    (out / PROPOSAL / "broken.nxs").write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really HDF5" * 20)
    run = sorted((out / PROPOSAL).glob("*.nxs"))[0]
    (out / PROPOSAL / "truncated.nxs").write_bytes(run.read_bytes()[:4000])  # a copy cut short
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, demo_data: Path):
    """A server of the instance env opening in its home, as the backends start it."""
    assert (INSTANCE_ENV / "bin" / "python").exists(), f"no instance env at {INSTANCE_ENV}: run scripts/setup.sh"
    root = tmp_path_factory.mktemp("lab")
    (root / "config").mkdir()
    (root / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"VisaHome": {"data_root": str(demo_data)}}))
    server = JupyterServer(root, python=str(INSTANCE_ENV / "bin" / "python"), copy_shipped_config=False,
                           env_extra={"VISA_PROPOSAL": PROPOSAL}).start()
    yield server
    server.stop()


def _get(server: JupyterServer, path: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{server.url}{path}", headers={"Authorization": f"token {server.token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_home_shows_the_data_and_the_starter_notebook_runs_in_the_data_analysis_kernel(
        lab: JupyterServer, demo_data: Path) -> None:
    home = lab.root / "home"
    assert os.readlink(home / "data") == str(demo_data / PROPOSAL)
    notebook = home / "first-look.ipynb"
    assert json.loads(notebook.read_text())["metadata"]["kernelspec"]["name"] == "data-analysis"
    status, body = _get(lab, "api/contents/data")  # Lab's file browser lists the runs through the link
    assert status == 200, body[:300]
    assert sum(f["name"].endswith(".nxs") for f in json.loads(body)["content"]) >= 4, body[:500]
    status, body = _get(lab, "api/kernelspecs")
    assert json.loads(body)["kernelspecs"]["data-analysis"]["spec"]["display_name"] == "Data analysis"

    executed = lab.root / "executed.ipynb"
    run = subprocess.run(  # nbclient's command line
        [str(INSTANCE_ENV / "bin" / "jupyter"), "execute", "--kernel_name=data-analysis",
         f"--output={executed}", str(notebook)],
        cwd=home, env={"PATH": os.defpath, "HOME": str(home)}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = [o for cell in json.loads(executed.read_text())["cells"] for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    pngs = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2, outputs  # I(Q), then the fit
    text = "".join("".join(o.get("text", "")) for o in outputs)
    radius = float(re.search(r"radius of gyration: ([\d.]+)", text).group(1))
    assert 15 < radius < 40, text[-1500:]  # spheres of 30-40 Å radius: R_g = 0.77 R


def test_h5web_reads_a_run_and_answers_a_corrupt_file_with_a_clear_error(lab: JupyterServer) -> None:
    run = sorted((lab.root / "home" / "data").glob("[0-9]*.nxs"))[0].name
    status, body = _get(lab, f"h5web/meta?file=data/{run}&path=/entry/data/counts")
    assert status == 200, body[:300]
    assert json.loads(body)["shape"] == [128, 128]
    for name in ("broken.nxs", "truncated.nxs"):
        status, body = _get(lab, f"h5web/meta?file=data/{name}&path=/")
        assert status == 400, (status, body[:500])
        assert f"{name} cannot be opened as an HDF5/NeXus file" in json.loads(body)["message"], body[:500]


def test_lab_serves_no_news_pop_up(lab: JupyterServer) -> None:
    status, body = _get(lab, "lab")
    found = re.search(rb'<script id="jupyter-config-data" type="application/json">(.*?)</script>', body, re.S)
    assert status == 200 and found, body[:500]
    page = json.loads(found.group(1))
    assert "@jupyterlab/apputils-extension:announcements" in page["disabledExtensions"], page["disabledExtensions"]
    assert page["news"] == {"disabled": True}


SILX_OPENS = """
import sys
from silx.gui import qt
app = qt.QApplication([])
from silx.app.view.Viewer import Viewer  # what `silx view` runs: it imports qtawesome and OpenGL
viewer = Viewer()
viewer.appendFile(sys.argv[1])
model = viewer._Viewer__treeview.findHdf5TreeModel()
print("opened", model.data(model.index(0, 0, qt.QModelIndex()), qt.Qt.DisplayRole))
"""


def test_silx_view_opens_a_demo_run(demo_data: Path) -> None:
    """The desktop's "silx view" entry: its viewer loads a demo run (it died at import before
    qtawesome and PyOpenGL were in the lock). Qt offscreen: the window itself is the desktop tests'."""
    run = sorted((demo_data / PROPOSAL).glob("[0-9]*.nxs"))[0]
    done = subprocess.run([str(INSTANCE_ENV / "bin" / "python"), "-c", SILX_OPENS, str(run)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0 and f"opened {run.name}" in done.stdout, done.stderr[-2000:]
