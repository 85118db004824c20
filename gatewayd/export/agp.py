"""The AGP report (Ambulatory Glucose Profile), drawn with matplotlib (Agg: no display needed).

One landscape page: the metrics, the time-in-ranges bar, and the modal day — the 5-95 and
25-75 percentile bands, the median, and the 70-180 mg/dL target range. PNG at 1600x1000 px;
PDF on A4 or US letter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import tzinfo
from typing import BinaryIO

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gatewayd import __version__
from gatewayd.models import Reading
from gatewayd.summaries.metrics import Summary

from .profile import HIGH_AS_MGDL, ProfilePoint, modal_day

#: PNG size in pixels (at `PNG_DPI`).
PNG_SIZE = (1600, 1000)
PNG_DPI = 100
#: Landscape page sizes in inches.
PAPER = {"a4": (297 / 25.4, 210 / 25.4), "letter": (11.0, 8.5)}

_RANGES = (  # label, colour (the customary AGP palette), very low first
    ("Very low  <54", "#8b0000"),
    ("Low  54-69", "#e53935"),
    ("In range  70-180", "#43a047"),
    ("High  181-250", "#fbc02d"),
    ("Very high  >250", "#ef6c00"),
)
_BAND_OUTER = "#90caf9"
_BAND_INNER = "#1e88e5"
_MEDIAN = "#0d47a1"
_TARGET = "#2e7d32"


def render(
    readings: Sequence[Reading],
    summary: Summary,
    out: BinaryIO,
    *,
    title: str,
    tz: tzinfo,
    fmt: str,
    paper: str = "a4",
) -> None:
    """Draw the report of `readings` (and their `summary`) into `out` as `fmt` (png or pdf)."""
    size = (PNG_SIZE[0] / PNG_DPI, PNG_SIZE[1] / PNG_DPI) if fmt == "png" else PAPER[paper]
    fig = Figure(figsize=size, dpi=PNG_DPI, layout=None)
    FigureCanvasAgg(fig)
    fig.suptitle(f"Ambulatory Glucose Profile (AGP) — {title}", x=0.04, ha="left", fontsize=15)
    fig.text(0.04, 0.905, _period_text(summary, tz), fontsize=10, color="#444444")
    _metrics(fig.add_axes((0.04, 0.50, 0.42, 0.36)), summary)
    _ranges_bar(fig.add_axes((0.60, 0.52, 0.10, 0.34)), summary)
    _profile(fig.add_axes((0.07, 0.08, 0.90, 0.35)), modal_day(readings, tz), tz)
    fig.text(
        0.04,
        0.012,
        f"gatewayd {__version__}. Ranges: 2019 international consensus on Time in Range; "
        "out-of-range readings plot at 40 / 400 mg/dL.",
        fontsize=8,
        color="#777777",
    )
    metadata = {"Creator": "gatewayd", "Title": f"AGP {title}"}
    if fmt == "pdf":
        fig.savefig(out, format="pdf", metadata={**metadata, "CreationDate": None})
    else:
        fig.savefig(out, format="png", dpi=PNG_DPI, metadata={"Software": "gatewayd"})


def _period_text(summary: Summary, tz: tzinfo) -> str:
    start = summary.start.astimezone(tz)
    end = summary.end.astimezone(tz)
    return f"{start:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M} ({start:%Z})"


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def _metrics(ax: Axes, s: Summary) -> None:
    ax.set_axis_off()
    rows = [
        ("Days with data", f"{s.days} of {math.ceil((s.end - s.start).total_seconds() / 86400)}"),
        ("Time CGM active", _fmt(s.coverage_pct, " %")),
        ("Readings", str(s.n)),
        ("Mean glucose", _fmt(s.mean_mgdl, " mg/dL")),
        ("Glucose management indicator (GMI)", _fmt(s.gmi_pct, " %")),
        ("Glucose variability (CV)", _fmt(s.cv_pct, " %") + "   target ≤ 36 %"),
        ("Standard deviation", _fmt(s.sd_mgdl, " mg/dL")),
    ]
    ax.set_title("Glucose statistics and targets", loc="left", fontsize=12, fontweight="bold")
    for i, (label, value) in enumerate(rows):
        y = 0.9 - i * 0.13
        ax.text(0.0, y, label, fontsize=11, transform=ax.transAxes)
        ax.text(0.72, y, value, fontsize=11, fontweight="bold", transform=ax.transAxes)


def _ranges_bar(ax: Axes, s: Summary) -> None:
    ax.set_title("Time in ranges", loc="left", fontsize=12, fontweight="bold")
    ax.set_axis_off()
    shares = s.ranges_pct or (0.0,) * len(_RANGES)
    bottom = 0.0
    for i, ((label, colour), share) in enumerate(zip(_RANGES, shares, strict=True)):
        ax.bar(0, share, bottom=bottom, width=0.6, color=colour, edgecolor="white")
        ax.annotate(
            f"{label} mg/dL   {share:.1f} %",
            xy=(0.3, bottom + share / 2),
            xytext=(0.45, 8 + 21 * i),  # evenly spread, very low at the bottom
            textcoords=("data", "data"),
            fontsize=10,
            va="center",
            arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.6},
        )
        bottom += share
    ax.set_xlim(-0.35, 0.35)
    ax.set_ylim(0, 100)


def _profile(ax: Axes, profile: Sequence[ProfilePoint], tz: tzinfo) -> None:
    hours = [p.minute / 60 for p in profile]

    def curve(i: int) -> list[float]:
        return [p.values[i] if p.values else math.nan for p in profile]

    ax.axhspan(70, 180, color=_TARGET, alpha=0.06)
    for level in (70, 180):
        ax.axhline(level, color=_TARGET, lw=1.2)
    ax.fill_between(hours, curve(0), curve(4), color=_BAND_OUTER, alpha=0.55, lw=0, label="5-95 %")
    ax.fill_between(hours, curve(1), curve(3), color=_BAND_INNER, alpha=0.6, lw=0, label="25-75 %")
    ax.plot(hours, curve(2), color=_MEDIAN, lw=2.2, label="median")
    ax.set_xlim(0, 24)
    ax.set_ylim(0, HIGH_AS_MGDL)
    ax.set_xticks(range(0, 25, 3), [f"{h % 24:02d}:00" for h in range(0, 25, 3)])
    ax.set_yticks([0, 54, 70, 180, 250, HIGH_AS_MGDL])
    ax.set_ylabel("mg/dL")
    ax.set_title(
        f"Ambulatory glucose profile (modal day, {_zone_name(tz)})",
        loc="left",
        fontsize=12,
        fontweight="bold",
    )
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.legend(loc="upper right", fontsize=9, frameon=False, ncols=3)


def _zone_name(tz: tzinfo) -> str:
    return str(getattr(tz, "key", None) or tz)
