"""Line charts as inline SVG for the HTML report: no plotting library, no script, nothing fetched.

Every text that reaches the SVG is escaped here; callers pass plain strings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Colour-blind-safe (Okabe-Ito) line colours, in the order the series are given; grey for a floor.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
FLOOR = "#999999"


@dataclass(frozen=True)
class Series:
    """One line: ``ys[i]`` at ``xs[i]`` (NaN values are left out)."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: str


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str, width: int = 440,
               height: int = 250, mark_x: float | None = None, mark_label: str = "") -> str:
    """An SVG ``<svg>`` element: the series on shared axes, y from 0 (or the minimum if negative).

    Args:
        mark_x: draw a dashed vertical line here (the best step), labelled ``mark_label``.
    """
    left, right, top, bottom = 62, 14, 28 + 15 * len(series), 40
    points = [(x, y) for s in series for x, y in zip(s.xs, s.ys) if math.isfinite(y)]
    if not points:
        return ""
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(0.0, min(p[1] for p in points)), max(p[1] for p in points)
    x_hi, y_hi = (x_hi if x_hi > x_lo else x_lo + 1), (y_hi if y_hi > y_lo else y_lo + 1)
    y_hi += 0.05 * (y_hi - y_lo)

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom)

    parts = [(f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'),
             f'<text x="{left}" y="14" class="t">{escape(title)}</text>']
    for k in range(5):  # horizontal grid with the value scale
        v = y_lo + (y_hi - y_lo) * k / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(v):.1f}" y2="{py(v):.1f}" class="g"/>'
                     f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    xs = sorted({p[0] for p in points})
    for x in xs[:: max(1, math.ceil(len(xs) / 10))]:
        parts.append(f'<text x="{px(x):.1f}" y="{height - bottom + 15}" text-anchor="middle">{_fmt(x)}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" text-anchor="middle">'
                 f'{escape(x_label)}</text>'
                 f'<text x="12" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(top + height - bottom) / 2:.0f})">{escape(y_label)}</text>')
    if mark_x is not None:  # the label on the side of the line with room for it
        mx = px(mark_x)
        side = f'x="{mx - 4:.1f}" text-anchor="end"' if mx > width / 2 else f'x="{mx + 4:.1f}"'
        parts.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{height - bottom}" class="m"/>'
                     f'<text {side} y="{top + 12}">{escape(mark_label)}</text>')
    for row, s in enumerate(series):
        pts = [(px(x), py(y)) for x, y in zip(s.xs, s.ys) if math.isfinite(y)]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
        if len(pts) <= 40:
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s.colour}"/>' for x, y in pts]
        parts.append(f'<text x="{left + 6}" y="{30 + 15 * row}" fill="{s.colour}">{escape(s.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
