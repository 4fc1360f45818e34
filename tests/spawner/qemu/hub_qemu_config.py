"""The test hub (tests/hub_test_config.py) plus the "Virtual machine" plan on the qemu backend.

What hub_config/demo should get (see docs/qemu.md): the plan when `availability()` says yes, the
backend's state dir, a start timeout for VM boots, and the phone-home handler.
Test knobs: VISA_QEMU_IMAGE_DIR, VISA_QEMU_WARM=1 (warm starts from snapshots).
"""
import os
from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parents[2] / "hub_test_config.py"))  # noqa: F821

from visa_spawner.backends.qemu.image import DEFAULT_IMAGE_DIR, availability  # noqa: E402
from visa_spawner.spawner import DEFAULT_PLANS  # noqa: E402

c = get_config()  # noqa: F821
state = Path(os.environ["VISA_STATE_DIR"])
image_dir = os.environ.get("VISA_QEMU_IMAGE_DIR") or os.environ.get("VISA_IMAGE_DIR") or DEFAULT_IMAGE_DIR
ok, why = availability(image_dir)
VM_PLANS = [
    {"id": "vm", "display_name": "Virtual machine", "backend": "qemu", "cpus": 2, "memory_mb": 2048,
     "description": "A full virtual machine: 2 CPUs, 2 GB"},
    # more memory than any host has: the capacity check must refuse it before anything starts
    {"id": "vm-huge", "display_name": "Huge virtual machine", "backend": "qemu", "cpus": 2,
     "memory_mb": 4_000_000, "description": "for the capacity test"},
]
if not ok:
    raise SystemExit(f"the qemu tests need a VM image and QEMU: {why}")
c.VisaSpawner.plans = [*DEFAULT_PLANS, *VM_PLANS]
c.VisaSpawner.start_timeout = 600  # TCG on a shared, loaded 2-core host: Jupyter alone can take minutes
c.QemuBackend.boot_timeout = 570  # below start_timeout, so the backend's own message reaches the person
c.QemuBackend.state_dir = str(state / "qemu")
c.QemuBackend.image_dir = image_dir
c.QemuBackend.warm_start = os.environ.get("VISA_QEMU_WARM") == "1"
# deleting a VM here does not archive its disk (a flattened, compressed copy: a minute of CPU per VM on
# this host); tests/spawner/test_archive_qemu.py covers the qemu archive itself
c.VisaSpawner.archive_on_delete = False
c.QemuBackend.build_snapshots = False  # the tests build the snapshot themselves (and count QEMU processes)
# the guest powers off cleanly on ACPI power-off (systemd-logind acts on the power button, see
# images/recipes): a stop that needed the whole grace is a bug, which test_qemu_vm_flow measures
c.QemuBackend.stop_grace = 60
