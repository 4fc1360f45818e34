#!/usr/bin/env python3
"""Build the VISA analysis VM image: `python images/build.py --cache-dir /var/cache/visahub/images`.

See docs/images.md (what is inside, how to add a package, the Ubuntu/Mantid production variant) and
`python images/build.py --help-all` for every option.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # the guest protocol (visa_spawner/backends/guest/protocol.py)

from imagebuild.builder import ImageBuilder  # noqa: E402

if __name__ == "__main__":
    ImageBuilder.launch_instance()
