"""The AGP report (Ambulatory Glucose Profile, after the AGP Report v5 of the International
Diabetes Center), drawn with matplotlib (Agg: no display needed).

Its four parts on one landscape page: the glucose statistics, the time in ranges (a stacked bar
with each range's percentage, the time per day it means and the consensus goals), the AGP (the
modal day: 5-95 and 25-75 percentile bands and the median, the 70-180 mg/dL target range) and
the daily glucose profiles (one small panel per local day, midnight to midnight). The glucose
axes run from 0 to 350 mg/dL (19.4 mmol/L); higher values plot at the top edge. The first
page shows the last 14 days' profiles; a longer period has the earlier days on further PDF
pages (the PNG is the first page), from the first day with a reading and 14 weeks at most.
Every label is in the chosen unit, mg/dL or mmol/L. PNG at 1600x1000 px; PDF on A4 or letter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta, tzinfo
from typing import BinaryIO

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gatewayd import __version__
from gatewayd.integrations.summaries.metrics import RANGE_LABELS, Summary
from gatewayd.models import MGDL_PER_MMOLL, Reading

from .profile import (
    HIGH_AS_MGDL,
    LOW_AS_MGDL,
    Day,
    ProfilePoint,
    bar_heights,
    daily_profiles,
    modal_day,
    per_day,
)

#: PNG size in pixels (at `PNG_DPI`).
PNG_SIZE = (1600, 1000)
PNG_DPI = 100
#: Landscape page sizes in inches.
PAPER = {"a4": (297 / 25.4, 210 / 25.4), "letter": (11.0, 8.5)}
#: The top of every glucose axis (AGP v5): higher values plot at the edge.
TOP_MGDL = 350.0
#: Daily profiles: panels per row, rows on the first page and on each further page.
WEEK = 7
FIRST_PAGE_ROWS = 2
MORE_PAGE_ROWS = 5
#: At most this many daily profiles, the last ones: 14 weeks (3 more pages).
MAX_DAYS = 98
#: The smallest height (of 100) a range that holds any reading gets in the bar.
MIN_SEGMENT = 3.0
#: Readings further apart than this break a daily profile's line.
GAP = timedelta(minutes=20)

_COLOURS = ("#8b0000", "#e53935", "#43a047", "#fbc02d", "#ef6c00")  # very low .. very high
_NAMES = ("Very low", "Low", "In range", "High", "Very high")
_BAND_OUTER = "#90caf9"
_BAND_INNER = "#1e88e5"
_MEDIAN = "#0d47a1"
_TARGET = "#2e7d32"
_MUTED = "#777777"


@dataclass(frozen=True, slots=True)
class Scale:
    """How glucose is shown: the unit, its range labels and its axis ticks."""

    unit: str
    ranges: tuple[str, ...]
    ticks: tuple[str, ...]

    def __call__(self, mgdl: float) -> float:
        """A value in mg/dL in this unit."""
        return mgdl if self.unit == "mg/dL" else mgdl / MGDL_PER_MMOLL

    def text(self, mgdl: float | None) -> str:
        """A value for a person: whole mg/dL or mmol/L to one decimal."""
        if mgdl is None:
            return "—"
        return f"{self(mgdl):.{0 if self.unit == 'mg/dL' else 1}f} {self.unit}"


#: The axes' tick values (mg/dL): 0, the range limits, the top.
TICKS_MGDL = (0.0, 54.0, 70.0, 180.0, 250.0, TOP_MGDL)
SCALES = {
    "mg/dL": Scale("mg/dL", RANGE_LABELS["mg/dL"], ("0", "54", "70", "180", "250", "350")),
    "mmol/L": Scale("mmol/L", RANGE_LABELS["mmol/L"], ("0", "3.0", "3.9", "10.0", "13.9", "19.4")),
}
#: Consensus goals (2019): (label, ranges it adds up, "<" or ">", percent).
GOALS = (
    ("Very high", (4,), "<", 5.0),
    ("High + very high", (3, 4), "<", 25.0),
    ("In range", (2,), ">", 70.0),
    ("Low + very low", (0, 1), "<", 4.0),
    ("Very low", (0,), "<", 1.0),
)


def pages(
    readings: Sequence[Reading],
    summary: Summary,
    *,
    title: str,
    tz: tzinfo,
    unit: str = "mg/dL",
    size: tuple[float, float] = (PNG_SIZE[0] / PNG_DPI, PNG_SIZE[1] / PNG_DPI),
) -> list[Figure]:
    """The report's pages: the AGP page with the last 14 days' profiles, then pages of 35 days
    with the earlier ones (in order; at most `MAX_DAYS` days from the first with a reading)."""
    scale = SCALES[unit]
    days = _shown(daily_profiles(readings, tz, summary.start, summary.end, GAP))
    # The first page has the most recent two weeks; earlier days follow on further pages.
    recent = max(0, len(days) - FIRST_PAGE_ROWS * WEEK)
    page = _figure(size, title, summary, tz, scale)
    _statistics(page.add_axes((0.03, 0.6, 0.36, 0.26)), summary, scale)
    _ranges(page.add_axes((0.45, 0.6, 0.05, 0.26)), summary, scale)
    _profile(page.add_axes((0.06, 0.325, 0.91, 0.22)), modal_day(readings, tz), tz, scale)
    more = (
        f" (the last {len(days) - recent} of {len(days)} days; the others follow)" if recent else ""
    )
    _daily(
        page, days[recent:], (0.06, 0.04, 0.91, 0.21), rows=FIRST_PAGE_ROWS, scale=scale, more=more
    )
    figures = [page]
    for offset in range(0, recent, MORE_PAGE_ROWS * WEEK):
        chunk = days[offset : min(recent, offset + MORE_PAGE_ROWS * WEEK)]
        page = _figure(size, title, summary, tz, scale)
        _daily(page, chunk, (0.06, 0.05, 0.91, 0.8), rows=MORE_PAGE_ROWS, scale=scale, more="")
        figures.append(page)
    return figures


def _shown(days: list[Day]) -> list[Day]:
    """The days that get a profile: from the first with a reading (before it, the sensor was
    not there; a period of years must not make thousands of pages), the last `MAX_DAYS`; the
    last two weeks of the period when it has no reading at all."""
    first = next((i for i, day in enumerate(days) if day.points), None)
    if first is None:
        return days[-FIRST_PAGE_ROWS * WEEK :]
    return days[max(first, len(days) - MAX_DAYS) :]


def render(
    readings: Sequence[Reading],
    summary: Summary,
    out: BinaryIO,
    *,
    title: str,
    tz: tzinfo,
    fmt: str,
    paper: str = "a4",
    unit: str = "mg/dL",
) -> None:
    """Draw the report into `out` as `fmt`: png (the first page) or pdf (every page)."""
    size = (PNG_SIZE[0] / PNG_DPI, PNG_SIZE[1] / PNG_DPI) if fmt == "png" else PAPER[paper]
    figures = pages(readings, summary, title=title, tz=tz, unit=unit, size=size)
    if fmt == "png":
        figures[0].savefig(out, format="png", dpi=PNG_DPI, metadata={"Software": "gatewayd"})
        return
    metadata = {"Creator": "gatewayd", "Title": f"AGP {title}", "CreationDate": None}
    with PdfPages(out, metadata=metadata) as pdf:
        for figure in figures:
            pdf.savefig(figure)


def _figure(
    size: tuple[float, float], title: str, summary: Summary, tz: tzinfo, scale: Scale
) -> Figure:
    fig = Figure(figsize=size, dpi=PNG_DPI, layout=None)
    FigureCanvasAgg(fig)
    fig.suptitle(f"Ambulatory Glucose Profile (AGP) — {title}", x=0.03, ha="left", fontsize=15)
    start, end = summary.start.astimezone(tz), summary.end.astimezone(tz)
    period = f"{start:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M} ({_zone_name(tz)})"
    fig.text(0.03, 0.915, period, fontsize=10, color="#444444")
    fig.text(
        0.03,
        0.008,
        f"gatewayd {__version__}. Ranges and goals: 2019 international consensus on Time in "
        f"Range. LO / HI readings plot at {scale.text(LOW_AS_MGDL)} / {scale.text(HIGH_AS_MGDL)}"
        f"; values above {scale.text(TOP_MGDL)} at the top edge.",
        fontsize=7.5,
        color=_MUTED,
    )
    return fig


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"


def _statistics(ax: Axes, s: Summary, scale: Scale) -> None:
    ax.set_axis_off()
    span = math.ceil((s.end - s.start).total_seconds() / 86400)
    rows = [
        ("Days with data", f"{s.days} of {span}"),
        ("Time CGM active", _percent(s.coverage_pct)),
        ("Readings", str(s.n)),
        ("Mean glucose", scale.text(s.mean_mgdl)),
        ("Glucose management indicator (GMI)", _percent(s.gmi_pct)),
        ("Glucose variability (CV)", f"{_percent(s.cv_pct)}   goal ≤ 36 %"),
        ("Standard deviation", scale.text(s.sd_mgdl)),
    ]
    ax.set_title("Glucose statistics and targets", loc="left", fontsize=12, fontweight="bold")
    for i, (label, value) in enumerate(rows):
        y = 0.9 - i * 0.14
        ax.text(0.0, y, label, fontsize=10.5, transform=ax.transAxes)
        ax.text(0.66, y, value, fontsize=10.5, fontweight="bold", transform=ax.transAxes)


def _ranges(ax: Axes, s: Summary, scale: Scale) -> None:
    """The stacked bar, each range's share with its time per day, and the goals beside it."""
    ax.set_title("Time in ranges", loc="left", fontsize=12, fontweight="bold")
    ax.set_axis_off()
    shares = s.ranges_pct or (0.0,) * len(_NAMES)
    bottom = 0.0
    # Labels sit at fixed heights (very low at the bottom), joined to their segment by a line:
    # they never collide, however small a segment is.
    label_y = (4.0, 27.0, 50.0, 73.0, 96.0)
    for i, height in enumerate(bar_heights(shares, MIN_SEGMENT)):
        ax.bar(0, height, bottom=bottom, width=0.6, color=_COLOURS[i], edgecolor="white")
        text = f"{_NAMES[i]}  {scale.ranges[i]} {scale.unit}"
        value = f"{shares[i]:.1f} %  ({per_day(shares[i])})"
        ax.annotate(
            text,
            xy=(0.3, bottom + height / 2),
            xytext=(0.55, label_y[i]),
            textcoords=("data", "data"),
            fontsize=9.5,
            va="center",
            arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.6},
        )
        ax.text(3.7, label_y[i], value, fontsize=9.5, fontweight="bold", va="center")
        bottom += height
    goal_y = {"Very high": 96.0, "High + very high": 84.5, "In range": 50.0}
    goal_y |= {"Low + very low": 15.5, "Very low": 4.0}
    for label, members, sign, goal in GOALS:
        total = sum(shares[m] for m in members)
        met = total < goal if sign == "<" else total > goal
        text = f"goal {sign}{goal:g} %" if len(members) == 1 else (
            f"{label}: {total:.1f} % ({per_day(total)}), goal {sign}{goal:g} %"
        )  # fmt: skip
        x = 6.1 if len(members) == 1 else 0.55
        colour = _TARGET if met else "#b71c1c"
        ax.text(x, goal_y[label], text, fontsize=9, color=colour, va="center")
    ax.set_xlim(-0.35, 0.35)
    ax.set_ylim(0, 100)


def _glucose_axis(ax: Axes, scale: Scale, *, labels: bool = True) -> None:
    """0 to 350 mg/dL with the range limits as ticks; the 54 and 70 labels kept apart."""
    ax.set_ylim(0, scale(TOP_MGDL))
    ax.set_yticks([scale(t) for t in TICKS_MGDL], scale.ticks if labels else [])
    if labels:
        tick_labels = ax.get_yticklabels()
        tick_labels[1].set_verticalalignment("top")  # 54: below its tick
        tick_labels[2].set_verticalalignment("bottom")  # 70: above its tick
    ax.axhspan(scale(70), scale(180), color=_TARGET, alpha=0.08, lw=0)
    for level in (70, 180):
        ax.axhline(scale(level), color=_TARGET, lw=1.0)


def _profile(ax: Axes, profile: Sequence[ProfilePoint], tz: tzinfo, scale: Scale) -> None:
    hours = [p.minute / 60 for p in profile]

    def curve(i: int) -> list[float]:
        return [scale(min(p.values[i], TOP_MGDL)) if p.values else math.nan for p in profile]

    _glucose_axis(ax, scale)
    ax.fill_between(hours, curve(0), curve(4), color=_BAND_OUTER, alpha=0.55, lw=0, label="5-95 %")
    ax.fill_between(hours, curve(1), curve(3), color=_BAND_INNER, alpha=0.6, lw=0, label="25-75 %")
    ax.plot(hours, curve(2), color=_MEDIAN, lw=2.2, label="median")
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3), [f"{h % 24:02d}:00" for h in range(0, 25, 3)])
    ax.set_ylabel(scale.unit)
    ax.set_title(
        f"Ambulatory glucose profile (AGP, modal day, {_zone_name(tz)})",
        loc="left",
        fontsize=12,
        fontweight="bold",
    )
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.legend(loc="upper right", fontsize=9, frameon=False, ncols=3)


def _daily(
    fig: Figure,
    days: Sequence[Day],
    box: tuple[float, float, float, float],
    *,
    rows: int,
    scale: Scale,
    more: str,
) -> None:
    """Daily glucose profiles: `rows` rows of 7 panels in `box` (left, bottom, width, height)."""
    left, bottom, width, height = box
    fig.text(
        left - 0.03,
        bottom + height + 0.012,
        f"Daily glucose profiles{more}",
        fontsize=12,
        fontweight="bold",
    )
    w, h = width / WEEK, height / rows
    for i, day in enumerate(days):
        row, column = divmod(i, WEEK)
        ax = fig.add_axes((left + column * w, bottom + (rows - 1 - row) * h, w, h * 0.86))
        _day(ax, day, scale, first_column=column == 0)


def _day(ax: Axes, day: Day, scale: Scale, *, first_column: bool) -> None:
    _glucose_axis(ax, scale, labels=False)
    ax.set_yticks([scale(70), scale(180)], [scale.ticks[2], scale.ticks[3]] if first_column else [])
    ax.tick_params(labelsize=7, length=2)
    ax.set_xlim(0, 1440)
    ax.set_xticks([0, 720, 1440], [])
    ax.text(
        0.03,
        0.96,
        f"{day.day:%a %d %b}",
        transform=ax.transAxes,
        fontsize=7.5,
        va="top",
        bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1},
    )
    if not any(not math.isnan(v) for _, v in day.points):
        ax.set_facecolor("#eeeeee")
        ax.text(0.5, 0.45, "no data", transform=ax.transAxes, ha="center", color=_MUTED)
        return
    minutes = [m for m, _ in day.points]
    values = [scale(min(v, TOP_MGDL)) for _, v in day.points]
    high, low = scale(180), scale(70)
    above = [v > high for v in values]
    below = [v < low for v in values]
    ax.fill_between(minutes, values, high, where=above, color=_COLOURS[4], alpha=0.7, lw=0)
    ax.fill_between(minutes, values, low, where=below, color=_COLOURS[1], alpha=0.7, lw=0)
    ax.plot(minutes, values, color="#222222", lw=0.7)


def _zone_name(tz: tzinfo) -> str:
    return str(getattr(tz, "key", None) or tz)
