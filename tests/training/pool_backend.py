"""A sandbox backend for warm-pool tests and bench/classroom.py: a server named `course-<pool>`
adopts from the warm pool `<pool>`, with that pool's materials.

It stands in for the spawner's course path (a participant's `course-<id>` server asks the training
service for the course's pool), so the pool is measured and tested on its own.
"""
from __future__ import annotations

from dataclasses import replace

from visa_spawner.backends.base import InstanceSpec, ProgressCallback
from visa_spawner.backends.sandbox.backend import SandboxBackend


class CourseHookBackend(SandboxBackend):
    async def create(self, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        if spec.server_name.startswith("course-") and not spec.warm_pool:
            name = spec.server_name.removeprefix("course-")
            definition = self.warm_pool._defs.get(name)
            spec = replace(spec, warm_pool=name, materials=definition.materials if definition else "")
        return await super().create(spec, progress)
