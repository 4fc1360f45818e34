"""The qemu test hub (hub_qemu_config.py) with the training service over the courses of
`$VISA_STATE_DIR/courses.yaml` (written by the test), applied after the VM plans exist so its
courses may use them; materials up to 1 MiB."""
import os
from pathlib import Path

load_subconfig(str(Path(__file__).with_name("hub_qemu_config.py")))  # noqa: F821

import visa_training.hub_config  # noqa: E402

c = get_config()  # noqa: F821
state = Path(os.environ["VISA_STATE_DIR"])
visa_training.hub_config.apply(c, state_dir=state, courses=state / "courses.yaml")
c.MaterialsPush.max_bytes = 2**20  # the test's "big" course is over it with a small file
