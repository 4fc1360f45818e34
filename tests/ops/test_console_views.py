"""The console's pure views: query parsing, paging links, plan availability, the hourly SVG plot."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest

from visa_ops.console_views import BadQuery, InstanceQuery, hourly, plan_rows, plot_svg, select_instances
from visa_ops.inventory import Instance

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_query_survives_its_own_links() -> None:
    q = InstanceQuery.parse({"user": "al", "idle_days": "2.5", "sort": "last_activity", "order": "asc"})
    again = InstanceQuery.parse({k: v[0] for k, v in parse_qs(q.link(page=3)).items()})
    assert again == InstanceQuery(user="al", idle_days=2.5, sort="last_activity", descending=False, page=3)


@pytest.mark.parametrize(("args", "expected"), [
    ({}, ("created", True)),
    ({"sort": "owner"}, ("owner", False)),
    ({"sort": "-owner"}, ("owner", True)),
    ({"sort": "owner", "order": "desc"}, ("owner", True)),
])
def test_sort_defaults(args: dict, expected: tuple) -> None:
    q = InstanceQuery.parse(args)
    assert (q.sort, q.descending) == expected


@pytest.mark.parametrize("args", [{"page": "1e9"}, {"page": "-1"}, {"max_age_days": "inf"}, {"state": "RUNNING"},
                                  {"sort": "owner.__class__"}, {"min_age_days": "4000"}])
def test_bad_queries(args: dict) -> None:
    with pytest.raises(BadQuery):
        InstanceQuery.parse(args)


def test_a_page_past_the_end_is_empty_not_an_error() -> None:
    instances = [Instance(owner=f"u{n}", server="s") for n in range(3)]
    page = select_instances(instances, InstanceQuery(page=2), NOW.replace(tzinfo=None), page_size=2)
    assert ([i.owner for i in page.rows], page.total, page.pages) == (["u2"], 3, 2)
    assert select_instances(instances, InstanceQuery(page=9), NOW, page_size=2).rows == []


CAPACITY = {"backends": {"qemu": {"gpus_free": 1}, "sandbox": {"gpus_free": 0}},
            "plans": [{"id": "gpu-1", "backend": "qemu", "gpus": 1}, {"id": "gpu-2", "backend": "qemu", "gpus": 2},
                      {"id": "gpu-os", "backend": "openstack", "gpus": 1}, {"id": "cpu", "backend": "sandbox"}]}


@pytest.mark.parametrize(("disabled", "capacity", "expected"), [
    (set(), CAPACITY, {"gpu-1": (True, ""), "gpu-2": (False, "no GPU free"), "gpu-os": (False, "no GPU free"),
                       "cpu": (True, "")}),
    ({"gpu-1", "cpu"}, CAPACITY, {"gpu-1": (False, "disabled"), "gpu-2": (False, "no GPU free"),
                                  "gpu-os": (False, "no GPU free"), "cpu": (False, "disabled")}),
    (set(), None, {"gpu-1": (True, "GPU capacity unknown"), "gpu-2": (True, "GPU capacity unknown"),
                   "gpu-os": (True, "GPU capacity unknown"), "cpu": (True, "")}),
])
def test_plan_availability(disabled: set, capacity, expected: dict) -> None:
    rows = plan_rows(CAPACITY["plans"], disabled, capacity)
    assert {r.id: (r.available, r.note) for r in rows} == expected


def test_hourly_keeps_the_last_sample_of_each_hour_in_the_window() -> None:
    naive = NOW.replace(tzinfo=None)
    samples = [(naive - timedelta(days=8), 99), (naive - timedelta(minutes=50), 3), (naive - timedelta(minutes=40), 4),
               (naive, 5), (naive + timedelta(hours=1), 77)]
    assert hourly(samples, NOW, days=7) == [(NOW - timedelta(hours=1), 4), (NOW, 5)]


def test_plot_is_inline_svg_scaled_to_the_largest_count() -> None:
    svg = plot_svg([(NOW - timedelta(days=7), 0), (NOW, 10)], NOW, days=7, width=240, height=100,
                   title="<running>")
    assert svg.startswith("<svg") and "<script" not in svg and "&lt;running&gt;" in svg
    # first point at the left of the axis and at the bottom, last at the right and at the top
    assert 'points="40.0,78.0 220.0,12.0"' in svg and svg.count("<circle") == 2
    assert "no samples yet" in plot_svg([], NOW)


def test_samples_keep_a_gap_forget_the_old_and_tolerate_a_twin(tmp_path) -> None:
    from sqlalchemy import create_engine

    from visa_ops.console_samples import MIN_GAP, record_sample_sync, series_sync

    engine = create_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    t0 = NOW.replace(tzinfo=None) - timedelta(days=40)
    assert record_sample_sync(engine, t0, {"running": 1})
    assert not record_sample_sync(engine, t0, {"running": 9})  # the same instant twice
    assert not record_sample_sync(engine, t0 + MIN_GAP / 2, {"running": 2})
    assert record_sample_sync(engine, NOW, {"running": 3})  # aware UTC is stored as naive UTC
    assert series_sync(engine, t0) == [(NOW.replace(tzinfo=None), 3)]  # the 40-day-old one is gone


def test_outbox_parses_only_the_newest_messages(tmp_path) -> None:
    import mailbox
    from email.message import EmailMessage

    from visa_ops.console import read_outbox

    box = mailbox.Maildir(tmp_path / "outbox", create=True)
    for n in range(5):
        msg = EmailMessage()
        msg["Subject"], msg["To"] = f"message {n}", "alice@example.org"
        msg.set_content("é" * n)
        m = mailbox.MaildirMessage(msg)
        m.set_date(NOW.timestamp() + n)
        if n == 3:
            m.set_subdir("cur")  # read once
        box.add(m)
    assert len(list((tmp_path / "outbox" / "cur").iterdir())) == 1
    shown = read_outbox(str(tmp_path / "outbox"), limit=2)
    assert [m["subject"] for m in shown] == ["message 4", "message 3"]
    assert shown[0]["body"].strip() == "éééé" and shown[0]["date"] == "2026-12-03 12:00"
    assert read_outbox(str(tmp_path / "missing")) == []
