"""The OpenStack test hub (hub_config.py; give it `stop_action: shelve` in VISA_TEST_OPENSTACK), with
visa-ops told again, once everything is merged, which backends it may delete (a sub-config's settings
come after the profile configured visa-ops); archive retention from VISA_TEST_ARCHIVE_RETENTION_DAYS."""
import os
from pathlib import Path

from visa_ops.hub_config import refresh_archiving

c = get_config()  # noqa: F821
load_subconfig(str(Path(__file__).resolve().parent / "hub_config.py"))  # noqa: F821
c.VisaSpawner.archive_retention_days = float(os.environ.get("VISA_TEST_ARCHIVE_RETENTION_DAYS", "30"))
refresh_archiving(c)
