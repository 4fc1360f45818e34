"""An OpenStack backend for warm-pool tests and bench/classroom.py: a server named `course-<pool>`
adopts from the warm pool `<pool>`, standing in for the spawner's course path (a participant's
`course-<id>` server asks the training service for the course's pool), as
tests/training/pool_backend.py does for sandboxes."""
from __future__ import annotations

from dataclasses import replace

from visa_spawner.backends.base import InstanceSpec, ProgressCallback
from visa_spawner.backends.openstack.backend import OpenStackBackend


class CourseHookOpenStack(OpenStackBackend):
    async def create(self, spec: InstanceSpec, progress: ProgressCallback) -> dict:
        if spec.server_name.startswith("course-") and not spec.warm_pool:
            spec = replace(spec, warm_pool=spec.server_name.removeprefix("course-"))
        return await super().create(spec, progress)
