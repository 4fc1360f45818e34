"""The boot agent, run as a real process (so these tests are not `fast`) against a fake guest: sysfs/proc trees, a pty for the
virtio-serial port, a file for the serial console. The start script is a small stand-in (the real
one creates accounts on the machine it runs on)."""
from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

import visa_agent  # images/agent is on pytest's pythonpath (setup.cfg)
from tests.support import free_port
from visa_spawner.backends.guest import cloudinit, protocol

AGENT = Path(visa_agent.__file__)
TOKEN = "s3cr3t-token-value"
# stands in for START_SCRIPT: records how it was run, then ends as told by the config's command
FAKE_SCRIPT = """#!/usr/bin/python3
import json, os, sys
cfg = json.load(open(os.environ["VISA_INSTANCE_CONFIG"]))
root = os.path.dirname(os.path.dirname(os.path.dirname(os.environ["VISA_INSTANCE_CONFIG"])))
open(os.path.join(os.path.dirname(os.environ["VISA_INSTANCE_CONFIG"]), "ran"), "w").write(json.dumps(
    {"uid": os.getuid(), "account": cfg["account"],
     "zygote_listens": os.path.exists(os.path.join(root, "run/visa/zygote.sock"))}))
if cfg["command"] == ["listen"]:  # stands in for Jupyter: listens until told to stop
    import socket, time
    s = socket.create_server(("127.0.0.1", cfg["port"]))
    stop = os.path.join(os.path.dirname(os.environ["VISA_INSTANCE_CONFIG"]), "stop")
    while not os.path.exists(stop):
        time.sleep(0.05)
if cfg["command"] == ["fail"]:
    sys.stderr.write("visa-start: mount failed token=%s\\n" % cfg["env"]["JUPYTERHUB_API_TOKEN"])
    sys.exit(3)
"""


def config(command=("jupyterhub-singleuser",), port: int = 1) -> dict:
    return cloudinit.instance_config(
        owner="daemon", server_name="s1", display_name="S1", proposal="", command=list(command),
        env={"JUPYTERHUB_API_TOKEN": TOKEN}, port=port, screen="1280x800", keyboard="us")


class Guest:
    """A fake guest tree and the agent process running against it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root, self.sysfs, self.proc, self.dev = (tmp / n for n in ("root", "sys", "proc", "dev"))
        for d in (self.root / "etc", self.sysfs, self.proc / "net", self.dev):
            d.mkdir(parents=True)
        (self.root / "etc/machine-id").write_text("0" * 32 + "\n")
        (self.proc / "net/route").write_text("Iface\tDestination\tGateway\neth0\t00000000\t0202000A\n")
        self.console = tmp / "console"
        self.console.write_text("")
        self.master: int | None = None

    def fw_cfg(self, cfg: dict, script: str) -> None:
        base = self.sysfs / "firmware/qemu_fw_cfg/by_name"
        for name, data in ((protocol.FW_CFG_CONFIG, cloudinit.config_json(cfg)), (protocol.FW_CFG_SCRIPT, script)):
            (base / name).mkdir(parents=True)
            (base / name / "raw").write_text(data)

    def port(self) -> None:
        """A pty stands in for /dev/vport0p1 (raw mode: no echo, no line editing)."""
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.slave = slave
        (self.sysfs / "class/virtio-ports/vport0p1").mkdir(parents=True)
        (self.sysfs / "class/virtio-ports/vport0p1/name").write_text(protocol.AGENT_PORT_NAME + "\n")
        (self.dev / "vport0p1").symlink_to(os.ttyname(slave))

    def start(self, port_wait: float = 5, *extra: str) -> subprocess.Popen:
        self.proc_ = subprocess.Popen(
            [sys.executable, str(AGENT), "--root", str(self.root), "--sysfs", str(self.sysfs),
             "--proc", str(self.proc), "--dev", str(self.dev), "--urandom", str(self.tmp / "urandom"),
             "--console", str(self.console), "--port-wait", str(port_wait), "--network-wait", "5", *extra],
            stderr=subprocess.PIPE, text=True)
        return self.proc_

    def port_lines(self, until: str, timeout: float = 30) -> list[dict]:
        """Stage lines read from the port up to the first `until` stage."""
        out, buf, deadline = [], b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                buf += os.read(self.master, 65536)
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    out.append(json.loads(line))
                    if out[-1]["stage"] == until:
                        return out
        raise AssertionError(f"no {until!r} on the port within {timeout}s; got {out}")

    def send(self, msg) -> None:
        os.write(self.master, (msg if isinstance(msg, str) else json.dumps(msg)).encode() + b"\n")

    def console_stages(self) -> list[str]:
        lines = [ln for ln in self.console.read_text().splitlines() if ln]
        assert all(ln.startswith(protocol.CONSOLE_PREFIX) for ln in lines), lines
        return [json.loads(ln[len(protocol.CONSOLE_PREFIX):])["stage"] for ln in lines]

    def wait(self) -> tuple[int, str]:
        _, err = self.proc_.communicate(timeout=60)
        return self.proc_.returncode, err


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    g = Guest(tmp_path)
    yield g
    if getattr(g, "proc_", None) and g.proc_.poll() is None:
        g.proc_.kill()
        g.proc_.wait()


@pytest.mark.root
def test_cold_boot_from_fw_cfg_runs_the_script_and_reports_stages(guest: Guest):
    guest.fw_cfg(config(), FAKE_SCRIPT)
    guest.start()
    code, err = guest.wait()
    assert code == 0, err
    assert guest.console_stages() == ["agent-started", "fw-cfg", "configured", "started", "account", "data", "exited"]
    cfg_file = guest.root / "etc/visa/instance.json"
    assert stat.S_IMODE(cfg_file.stat().st_mode) == 0o600
    assert json.loads(cfg_file.read_text())["env"]["JUPYTERHUB_API_TOKEN"] == TOKEN
    assert stat.S_IMODE((guest.root / "usr/local/sbin/visa-start").stat().st_mode) == 0o755
    ran = json.loads((guest.root / "etc/visa/ran").read_text())
    assert ran == {"uid": 0, "account": "daemon", "zygote_listens": False}
    # a cold boot keeps the machine-id systemd made at first boot
    assert (guest.root / "etc/machine-id").read_text() == "0" * 32 + "\n"


def zygote_state(guest: Guest, state: str | None, pid: int = 4242, alive: bool = True) -> None:
    """What systemd and visa_zygote.py leave in the guest: the socket (made before any service)
    and zygote.json; the zygote's process is a /proc entry of the fake proc tree."""
    run = guest.root / "run/visa"
    run.mkdir(parents=True, exist_ok=True)
    (run / "zygote.sock").touch()
    if alive:
        (guest.proc / str(pid)).mkdir(exist_ok=True)
    if state:
        status = {"state": state, "pid": pid, **({"seconds": 14.2, "modules": 13, "failed": []} if state == "ready" else {})}
        (run / "zygote.json.tmp").write_text(json.dumps(status))
        (run / "zygote.json.tmp").replace(run / "zygote.json")


def wait_console(guest: Guest, stage: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while stage not in (stages := guest.console_stages()):
        assert time.monotonic() < deadline and guest.proc_.poll() is None, stages
        time.sleep(0.05)
    return stages


@pytest.mark.root
def test_cold_boot_goes_on_during_the_zygotes_imports_and_reports_them_when_done(guest: Guest):
    """visa-zygote.service imports Jupyter beside the boot: the agent does not wait for it (the start
    script's request waits in the zygote's socket), it reports the zygote's stage once it is ready."""
    zygote_state(guest, "importing")
    port = free_port()
    guest.fw_cfg(config(["listen"], port), FAKE_SCRIPT)
    guest.start()
    assert "zygote" not in wait_console(guest, "jupyter-up")
    zygote_state(guest, "ready")
    wait_console(guest, "zygote")
    (guest.root / "etc/visa/stop").write_text("")
    code, err = guest.wait()
    assert code == 0, err
    assert json.loads((guest.root / "etc/visa/ran").read_text())["zygote_listens"] is True
    stages = guest.console_stages()
    assert stages == ["agent-started", "fw-cfg", "configured", "started", "account", "data", "jupyter-up",
                      "zygote", "exited"]
    lines = [json.loads(ln[len(protocol.CONSOLE_PREFIX):]) for ln in guest.console.read_text().splitlines() if ln]
    zygote = lines[stages.index("zygote")]
    assert (zygote["seconds"], zygote["modules"], zygote["failed"]) == (14.2, 13, [])


@pytest.mark.root
def test_warm_template_waits_for_the_zygotes_imports_before_the_snapshot(guest: Guest):
    """The snapshot is taken at waiting-config: Jupyter must be imported in the saved memory."""
    zygote_state(guest, "importing")
    guest.port()
    guest.start()
    assert [m["stage"] for m in guest.port_lines("agent-started")] == ["agent-started"]
    zygote_state(guest, "ready")
    assert [m["stage"] for m in guest.port_lines("waiting-config")] == ["zygote", "waiting-config"]


@pytest.mark.root
@pytest.mark.parametrize("state, alive, extra", [
    ("importing", False, ()),  # the zygote died during its imports
    (None, True, ("--zygote-start", "0.5")),  # systemd made the socket, the zygote never started
])
def test_warm_template_without_a_working_zygote_goes_on_without_it(guest: Guest, state, alive, extra):
    zygote_state(guest, state, alive=alive)
    guest.port()
    guest.start(5, *extra)
    assert [m["stage"] for m in guest.port_lines("waiting-config", timeout=20)] == ["agent-started", "waiting-config"]
    assert "no zygote ready" in guest.proc_.stderr.readline()


@pytest.mark.root
def test_warm_start_waits_on_the_port_and_gives_each_clone_its_identity(guest: Guest):
    guest.port()
    guest.start()
    assert [m["stage"] for m in guest.port_lines("waiting-config")] == ["agent-started", "waiting-config"]
    # a bad message is refused and the agent waits again; nothing of it is used
    guest.send({"config": config(), "script": FAKE_SCRIPT, "seed": "abc"})
    failed = guest.port_lines("waiting-config")
    assert failed[0]["stage"] == "failed" and "seed" in failed[0]["message"]
    guest.send("not json")
    assert guest.port_lines("waiting-config")[0]["stage"] == "failed"
    seed = os.urandom(32).hex()
    guest.send({"config": config(), "script": FAKE_SCRIPT, "seed": seed, "hostname": "visa-clone-1"})
    stages = [m["stage"] for m in guest.port_lines("exited")]
    assert stages == ["identity", "configured", "started", "account", "data", "exited"]
    code, err = guest.wait()
    assert code == 0, err
    machine_id = (guest.root / "etc/machine-id").read_text().strip()
    assert len(machine_id) == 32 and machine_id != "0" * 32
    assert (guest.root / "etc/hostname").read_text() == "visa-clone-1\n"
    assert "127.0.1.1 visa-clone-1\n" in (guest.root / "etc/hosts").read_text()  # resolves without DNS
    assert (guest.tmp / "urandom").read_bytes() == bytes.fromhex(seed)
    assert "waiting-config" in guest.console_stages()
    assert TOKEN not in guest.console.read_text() + err


@pytest.mark.root
def test_two_clones_get_different_machine_ids(tmp_path: Path):
    ids = []
    for n in (1, 2):
        g = Guest(tmp_path / f"clone{n}")
        g.port()
        g.start()
        g.port_lines("waiting-config")
        g.send({"config": config(), "script": FAKE_SCRIPT, "seed": os.urandom(16).hex(), "hostname": f"c{n}"})
        g.port_lines("exited")
        assert g.wait()[0] == 0
        ids.append((g.root / "etc/machine-id").read_text())
    assert ids[0] != ids[1]


@pytest.mark.root
def test_jupyter_up_is_reported_while_the_server_runs(guest: Guest):
    port = free_port()
    guest.fw_cfg(config(command=["listen"], port=port), FAKE_SCRIPT)
    guest.start()
    deadline = time.monotonic() + 30
    while "jupyter-up" not in guest.console_stages():
        assert guest.proc_.poll() is None and time.monotonic() < deadline, guest.console_stages()
        time.sleep(0.05)
    assert guest.proc_.poll() is None, "the agent stays with the server it started"
    (guest.root / "etc/visa/stop").write_text("")
    assert guest.wait()[0] == 0
    assert guest.console_stages()[-3:] == ["data", "jupyter-up", "exited"]


@pytest.mark.root
def test_no_config_source_leaves_the_start_to_cloud_init(guest: Guest):
    guest.start(port_wait=0.2)
    code, err = guest.wait()
    assert code == 0
    assert guest.console_stages() == ["agent-started", "no-config"]
    assert "cloud-init" in err
    assert not (guest.root / "etc/visa/instance.json").exists()


@pytest.mark.root
def test_a_failing_start_script_is_reported_without_the_token(guest: Guest):
    guest.fw_cfg(config(command=["fail"]), FAKE_SCRIPT)
    guest.start()
    code, err = guest.wait()
    assert code == 3
    last = json.loads(guest.console.read_text().rstrip().splitlines()[-1][len(protocol.CONSOLE_PREFIX):])
    assert last["stage"] == "failed" and "mount failed" in last["message"]
    assert TOKEN not in guest.console.read_text() + err


@pytest.mark.parametrize("msg, error", [
    ([], "JSON object"),
    ({"config": {"account": "a"}, "script": "#!/x", "seed": "00" * 16}, "instance config"),
    ({"config": config(), "script": "rm -rf /", "seed": "00" * 16}, "start script"),
    ({"config": config(), "script": "#!/x", "seed": "zz" * 16}, "seed"),
    ({"config": config(), "script": "#!/x", "seed": "00" * 16, "hostname": "Bad_Host"}, "hostname"),
    ({"config": config(), "script": "#!/x", "seed": "00" * 16, "time": "now"}, "time"),
])
def test_check_message_refuses_bad_messages(msg, error):
    with pytest.raises(ValueError, match=error):
        visa_agent.check_message(msg)


def test_check_message_accepts_what_the_backend_sends():
    cfg = config()
    msg = {"config": cfg, "script": cloudinit.START_SCRIPT, "seed": os.urandom(32).hex(),
           "hostname": "visa-1", "time": time.time()}
    assert visa_agent.check_message(msg) == (cfg, cloudinit.START_SCRIPT)
