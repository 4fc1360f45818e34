"""The qemu test hub (hub_qemu_config.py) delivering instance configs as cloud-init NoCloud seeds:
for the image's OpenStack variant (VISA_QEMU_IMAGE_DIR = its cache dir), test_cloudinit_boot.py."""
from pathlib import Path

load_subconfig(str(Path(__file__).resolve().with_name("hub_qemu_config.py")))  # noqa: F821

c = get_config()  # noqa: F821
c.QemuBackend.config_delivery = "nocloud"
