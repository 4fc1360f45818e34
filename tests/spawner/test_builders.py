"""Pure builders of the sandbox backend: account names, bwrap argv, cgroup files, plans."""
import pytest

from visa_spawner.backends.sandbox.cgroups import Limits, limit_files
from visa_spawner.backends.sandbox.command import (
    SandboxLayout,
    account_name,
    bwrap_argv,
    proposal_mount_point,
    sandbox_env,
)
from visa_spawner.plans import parse_plans

LAYOUT = SandboxLayout(
    uid=1234, gid=1235, home_host="/srv/homes/visa-x", home_inside="/home/visa-x",
    instance_env="/opt/env", data_host="/srv/data/P-1", data_inside="/data/P-1",
)


def test_account_names_are_deterministic_distinct_and_short():
    a = account_name("alice", "one")
    assert a == account_name("alice", "one")
    assert a != account_name("alice", "two") != account_name("bob", "one")
    assert a.startswith("visa-") and len(a) <= 32


def test_argv_drops_privileges_before_bwrap_and_binds_data_read_only():
    argv = bwrap_argv(LAYOUT, ["jupyterhub-singleuser", "--port=1"])
    assert argv[:5] == ["setpriv", "--reuid=1234", "--regid=1235", "--clear-groups", "--no-new-privs"]
    assert argv.index("bwrap") < argv.index("--ro-bind")
    i = argv.index("/srv/data/P-1")
    assert argv[i - 1] == "--ro-bind" and argv[i + 1] == "/data/P-1"
    i = argv.index("/srv/homes/visa-x")
    assert argv[i - 1] == "--bind" and argv[i + 1] == "/home/visa-x"
    assert argv[-2:] == ["jupyterhub-singleuser", "--port=1"] and argv[argv.index("--chdir") + 2] == "--"  # after the seccomp wrapper
    assert "--share-net" not in argv and "--unshare-all" in argv and "--new-session" in argv  # own network
    assert "/var/lib" not in " ".join(argv)  # nothing of the host's state is visible


def test_argv_without_data_has_no_data_bind():
    layout = SandboxLayout(**{**LAYOUT.__dict__, "data_host": "", "data_inside": ""})
    assert "/data/P-1" not in bwrap_argv(layout, ["x"])


@pytest.mark.parametrize("bad", ["..", ".", "../etc", "a/b", "", "-rf", "x" * 200])
def test_proposal_mount_point_refuses_unsafe_ids(bad):
    with pytest.raises(ValueError):
        proposal_mount_point(bad)


def test_sandbox_env_is_minimal_and_keeps_hub_variables():
    env = sandbox_env({"JUPYTERHUB_API_TOKEN": "t", "X": None}, home="/home/h", user="alice", instance_env="/opt/env")
    assert env["JUPYTERHUB_API_TOKEN"] == "t" and env["HOME"] == "/home/h"
    assert env["PATH"].startswith("/opt/env/bin:")
    assert "X" not in env


@pytest.mark.parametrize(
    "version, limits, expected",
    [
        (1, Limits(1, 2048), {"memory/memory.limit_in_bytes": str(2048 << 20), "cpu/cpu.cfs_quota_us": "100000"}),
        (1, Limits(0.5, 512), {"cpu/cpu.cfs_quota_us": "50000", "pids/pids.max": "4096"}),
        (2, Limits(2, 1024, 100), {"memory.max": str(1024 << 20), "cpu.max": "200000 100000", "pids.max": "100"}),
    ],
)
def test_limit_files(version, limits, expected):
    files = limit_files(version, limits)
    for key, value in expected.items():
        assert files[key] == value


@pytest.mark.parametrize(
    "raw, message",
    [
        ([{"id": "a", "display_name": "A", "backend": "sandbox", "cpus": 1}], "missing memory_mb"),
        ([{"id": "a", "display_name": "A", "backend": "nope", "cpus": 1, "memory_mb": 512}], "unknown backend"),
        ([{"id": "a", "display_name": "A", "backend": "sandbox", "cpus": "x", "memory_mb": 512}], "must be numbers"),
        ([{"id": "a", "display_name": "A", "backend": "sandbox", "cpus": 0, "memory_mb": 512}], "cpus must be > 0"),
        ([{"id": "a", "display_name": "A", "backend": "sandbox", "cpus": 1, "memory_mb": 512}] * 2, "duplicate id"),
    ],
)
def test_bad_plans_are_named(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_plans(raw, ["sandbox"])


def test_first_plan_is_default_when_none_is():
    plans = parse_plans([{"id": "a", "display_name": "A", "backend": "sandbox", "cpus": 1, "memory_mb": 512}], ["sandbox"])
    assert plans[0].default
