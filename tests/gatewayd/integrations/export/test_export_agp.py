"""The AGP report's parts, on real matplotlib figures and files: the daily profiles, the goals and
time per day, the 0-350 axis, labels that do not collide, visible small ranges, mmol/L."""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from gatewayd.integrations.export import agp
from gatewayd.integrations.export.profile import bar_heights, per_day
from gatewayd.integrations.summaries.metrics import summarize
from gatewayd.models import Reading

UTC_ZONE = ZoneInfo("UTC")
START = datetime(2026, 3, 1, tzinfo=UTC)


def reading(time: datetime, value: float | None, out: str | None = None) -> Reading:
    return Reading(
        device="cgm-1", driver="t", serial="S", session="s",
        seq=int((time - START).total_seconds() // 60), time=time, received=time,
        glucose_mgdl=value, out_of_range=out,  # type: ignore[arg-type]
    )  # fmt: skip


def trace(days: int, skip: frozenset[int] = frozenset()) -> list[Reading]:
    """Every 15 minutes for `days` days, but none on the days in `skip`; values 40..420."""
    values = (45.0, 62.0, 95.0, 140.0, 175.0, 210.0, 260.0, 420.0, 120.0, 100.0)
    return [
        reading(START + timedelta(minutes=15 * i), values[i % len(values)])
        for i in range(days * 96)
        if i // 96 not in skip
    ]


def draw(readings: list[Reading], days: int, unit: str = "mg/dL") -> list[Figure]:
    summary = summarize(readings, START, START + timedelta(days=days), interval=None)
    return agp.pages(readings, summary, title="cgm-1 on hub t", tz=UTC_ZONE, unit=unit)


def texts(figure: Figure) -> Iterator[Text]:
    yield from figure.texts
    for ax in figure.axes:
        yield from ax.texts
        yield from (t for t in ax.get_yticklabels() if t.get_text())
        yield ax.title
        yield ax.yaxis.label


def extent(text: Text, figure: Figure) -> Bbox:
    """The box of the letters alone (an annotation's own extent includes its connector)."""
    return Text.get_window_extent(text, renderer=figure.canvas.get_renderer())  # type: ignore[attr-defined]


def overlapping(items: list[Text], figure: Figure) -> list[tuple[str, str]]:
    figure.canvas.draw()  # places annotations and ticks as in the file
    boxes = [(t.get_text(), extent(t, figure)) for t in items if t.get_text()]
    return [(a, b) for (a, x), (b, y) in itertools.combinations(boxes, 2) if x.overlaps(y)]


def modal_axes(figure: Figure) -> Axes:
    return next(ax for ax in figure.axes if ax.get_title(loc="left").startswith("Ambulatory"))


def daily_axes(figure: Figure) -> list[Axes]:
    return [ax for ax in figure.axes if re.match(r"\w{3} \d\d \w{3}", _day_label(ax))]


def _day_label(ax: Axes) -> str:
    return ax.texts[0].get_text() if ax.texts else ""


def test_bar_heights_keep_small_ranges_visible_and_add_up() -> None:
    shares = [0.1, 0.4, 96.0, 3.5, 0.0]
    heights = bar_heights(shares, 3.0)
    assert sum(heights) == pytest.approx(100.0)
    assert heights[0] == heights[1] == 3.0
    assert heights[4] == 0.0  # an empty range stays empty
    assert heights[2] < 96.0
    assert heights[3] >= 3.0
    assert bar_heights([20.0, 20.0, 20.0, 20.0, 20.0], 3.0) == [20.0] * 5


@pytest.mark.parametrize(
    ("pct", "text"),
    [
        (5.0, "1 h 12 min"),
        (0.7, "10 min"),
        (0.0, "0 min"),
        (70.0, "16 h 48 min"),
        (100, "24 h 0 min"),
    ],
)
def test_time_per_day(pct: float, text: str) -> None:
    assert per_day(pct) == text


def test_daily_profiles_one_panel_per_day_and_empty_days_say_so() -> None:
    (page,) = draw(trace(7, skip=frozenset({2, 5})), 7)
    panels = daily_axes(page)
    assert [_day_label(ax) for ax in panels] == [
        f"{START + timedelta(days=d):%a %d %b}" for d in range(7)
    ]
    empty = [i for i, ax in enumerate(panels) if any(t.get_text() == "no data" for t in ax.texts)]
    assert empty == [2, 5]
    for i, ax in enumerate(panels):
        assert ax.get_xlim() == (0, 1440)  # midnight to midnight
        assert ax.get_ylim() == (0, 350)
        shaded = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert shaded, "the target band"
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
        assert bool(lines) == (i not in empty)
        for line in lines:
            assert max(line.get_ydata()) == 350  # 420 mg/dL plots at the top edge


def test_agp_axis_is_0_to_350_and_its_labels_do_not_collide() -> None:
    (page,) = draw(trace(14), 14)
    ax = modal_axes(page)
    assert ax.get_ylim() == (0, 350)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["0", "54", "70", "180", "250", "350"]
    assert overlapping(list(ax.get_yticklabels()), page) == []
    assert max(max(c.get_ydata()) for c in ax.get_lines()) <= 350


def test_ranges_print_goals_time_per_day_and_combined_totals() -> None:
    readings = trace(14)
    (page,) = draw(readings, 14)
    summary = summarize(readings, START, START + timedelta(days=14), interval=None)
    assert summary.ranges_pct is not None
    words = [t.get_text() for t in texts(page)]
    low, very_low = summary.ranges_pct[1], summary.ranges_pct[0]
    for goal in ("goal <5 %", "goal >70 %", "goal <1 %"):
        assert goal in words
    combined = f"Low + very low: {low + very_low:.1f} % ({per_day(low + very_low)}), goal <4 %"
    assert combined in words
    high = summary.ranges_pct[3] + summary.ranges_pct[4]
    assert f"High + very high: {high:.1f} % ({per_day(high)}), goal <25 %" in words
    in_range = summary.ranges_pct[2]
    assert f"{in_range:.1f} %  ({per_day(in_range)})" in words
    # Nothing on the page overlaps: titles, labels, values, goals.
    assert overlapping(list(texts(page)), page) == []


def test_a_tiny_range_stays_visible_and_its_percentage_exact() -> None:
    readings = [reading(START + timedelta(minutes=5 * i), 120.0) for i in range(2000)]
    readings[7] = reading(readings[7].time, None, "low")  # 1 in 2000: 0.05 %
    (page,) = draw(readings, 7)
    bar = next(ax for ax in page.axes if ax.get_title(loc="left") == "Time in ranges")
    heights = [p.get_height() for p in bar.patches]
    assert heights[0] == 3.0
    assert sum(heights) == pytest.approx(100.0)
    assert "0.1 %  (1 min)" in [t.get_text() for t in bar.texts]


def test_mmol_everywhere() -> None:
    (page,) = draw(trace(14), 14, unit="mmol/L")
    words = [t.get_text() for t in texts(page)]
    assert not [w for w in words if "mg/dL" in w]
    ax = modal_axes(page)
    assert ax.get_ylim()[1] == pytest.approx(19.43, abs=0.01)
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "0", "3.0", "3.9", "10.0", "13.9", "19.4"
    ]  # fmt: skip
    assert ax.yaxis.label.get_text() == "mmol/L"
    assert "In range  3.9-10.0 mmol/L" in words
    assert any(re.fullmatch(r"\d+\.\d mmol/L", w) for w in words)  # the mean
    assert overlapping(list(texts(page)), page) == []


def test_a_long_period_continues_on_more_pdf_pages() -> None:
    readings = trace(60)
    pages = draw(readings, 60)
    # The last 14 days on the first page, the 46 before them in order on pages of 35.
    assert [len(daily_axes(page)) for page in pages] == [14, 35, 11]
    assert _day_label(daily_axes(pages[0])[0]) == f"{START + timedelta(days=46):%a %d %b}"
    assert _day_label(daily_axes(pages[1])[0]) == f"{START:%a %d %b}"
    assert _day_label(daily_axes(pages[2])[-1]) == f"{START + timedelta(days=45):%a %d %b}"
    out = io.BytesIO()
    summary = summarize(readings, START, START + timedelta(days=60), interval=None)
    agp.render(readings, summary, out, title="t", tz=UTC_ZONE, fmt="pdf")
    assert len(re.findall(rb"/Type\s*/Page\b", out.getvalue())) == 3


def test_profiles_start_with_the_data_and_stop_at_14_weeks() -> None:
    # 30 days of readings in a period of 10 years: 30 profiles, not 3,650.
    readings = trace(30)
    summary = summarize(readings, START - timedelta(days=3650), START + timedelta(days=30))
    pages = agp.pages(readings, summary, title="t", tz=UTC_ZONE)
    shown = [_day_label(ax) for page in pages for ax in daily_axes(page)]
    assert len(shown) == 30
    assert f"{START:%a %d %b}" in shown
    # 120 days of readings: the last 98.
    pages = draw(trace(120), 120)
    assert sum(len(daily_axes(page)) for page in pages) == agp.MAX_DAYS == 98
    # No reading at all: the period's last two weeks, every one "no data".
    (page,) = agp.pages(
        [], summarize([], START, START + timedelta(days=60)), title="t", tz=UTC_ZONE
    )
    panels = daily_axes(page)
    assert len(panels) == 14
    assert all(any(t.get_text() == "no data" for t in ax.texts) for ax in panels)
