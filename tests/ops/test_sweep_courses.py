"""The sweep leaves a course's instances alone while the course runs (issue 19): a participant who
goes to lunch, or is away a day of a two-week school, keeps their instance; an ordinary instance
idle as long is warned and deleted. Real hub database, real SMTP server, stand-in hub REST API."""
from __future__ import annotations

from datetime import timedelta

from tests.ops.conftest import T0
from visa_ops.sweep import sweep_once

COURSE_END = T0 + timedelta(days=10)


async def test_course_instances_are_not_idle_while_the_course_runs(ops, hubdb, clock, fakehub, outbox):
    hubdb.server("alice", "plain", started=T0, last_activity=T0)
    course = hubdb.server("alice", "course-py", started=T0, last_activity=T0, commit=False)
    course.user_options = {"course": "py", "plan": "small", "course_ends_at": COURSE_END.isoformat() + "Z",
                           "download_until": (COURSE_END + timedelta(days=7)).isoformat() + "Z"}
    hubdb.session.commit()
    clock.advance(days=3)
    assert (await sweep_once(ops)).warned == [("alice", "plain", "inactivity")]
    outbox.wait_count(1)
    clock.advance(days=3)
    report = await sweep_once(ops)
    assert report.deleted == [("alice", "plain", "inactivity")] and report.warned == []
    assert ("remove", "alice", "course-py") not in fakehub.calls
    clock.advance(days=7, hours=1)  # 1 day before the course end + 4 days unused: the usual warning
    assert (await sweep_once(ops)).warned == [("alice", "course-py", "inactivity")]
