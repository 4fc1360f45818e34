"""The trainer's pages: the course list (with "New course"), and one course's page (participants,
seats, "Start the class" and its progress). The pages draw themselves from the JSON API
(`visa_training.handlers`); here only the access checks and the first render."""

from __future__ import annotations

from tornado import web

from .handlers import BaseHandler, course_detail


class CoursesPage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        courses = await self.training.courses_for(self.actor, self.is_admin())
        mine = await self.training.my_courses(self.actor)
        self.render("course_list.html", courses=courses, my_courses=mine, plans=self.training.plans,
                    materials=self.training.materials_choices())


class CoursePage(BaseHandler):
    @web.authenticated
    async def get(self, course_id: str) -> None:
        course = await self.course(course_id)
        detail = await course_detail(self.training, course, self.settings["hub_public_prefix"])
        self.render("course.html", course=course, detail=detail)


def page_handlers(prefix: str) -> list[tuple]:
    from .handlers import COURSE

    return [(f"{prefix}?", CoursesPage), (f"{prefix}courses/{COURSE}/?", CoursePage)]
