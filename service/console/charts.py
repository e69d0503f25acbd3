"""Small server-rendered SVG charts for the overview: stacked bars and lines per minute.

Each chart is a self-contained ``<svg role="img">`` with a text summary in its
``aria-label`` and ``<title>`` (what a screen reader says), colours from CSS classes
(``s0``..``s5``, light and dark in ``static/console.css``), and no script.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 360
HEIGHT = 80


@dataclass(frozen=True)
class Line:
    label: str
    values: Sequence[float | None]


def _label(title: str, parts: list[str]) -> str:
    return escape(f"{title}: {', '.join(parts)}" if parts else f"{title}: no data")


def _frame(summary: str, body: str) -> Markup:
    return Markup(  # noqa: S704 - every value inserted is escaped above
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{summary}" preserveAspectRatio="none">'
        f"<title>{summary}</title>"
        f'<line class="axis" x1="0" y1="{HEIGHT - 0.5}" x2="{WIDTH}" y2="{HEIGHT - 0.5}"/>'
        f"{body}</svg>"
    )


def stacked_bars(title: str, series: Sequence[tuple[str, Sequence[int]]]) -> Markup:
    """One bar per minute, each series stacked in order (class ``s<i>``)."""
    minutes = max((len(values) for _, values in series), default=0)
    totals = [sum(values[i] for _, values in series) for i in range(minutes)]
    peak = max(totals, default=0) or 1
    step = WIDTH / max(minutes, 1)
    shapes: list[str] = []
    for i in range(minutes):
        y = float(HEIGHT)
        for colour, (_, values) in enumerate(series):
            if not values[i]:
                continue
            height = values[i] / peak * (HEIGHT - 4)
            y -= height
            shapes.append(
                f'<rect class="s{colour % 6}" x="{i * step:.2f}" y="{y:.2f}" '
                f'width="{max(step - 0.5, 0.5):.2f}" height="{height:.2f}"/>'
            )
    parts = [f"{name} {sum(values)}" for name, values in series if sum(values)]
    return _frame(_label(title, parts), "".join(shapes))


def lines(title: str, series: Sequence[Line], unit: str = "ms") -> Markup:
    """One polyline per series; gaps where a minute has no value."""
    finite = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    peak = max(finite, default=0) or 1
    shapes: list[str] = []
    parts: list[str] = []
    for colour, line in enumerate(series):
        count = len(line.values)
        step = WIDTH / max(count - 1, 1)
        points: list[str] = []
        segments: list[list[str]] = []
        for i, value in enumerate(line.values):
            if value is None:
                if points:
                    segments.append(points)
                points = []
                continue
            shown = min(value, peak)
            points.append(f"{i * step:.2f},{HEIGHT - 2 - shown / peak * (HEIGHT - 6):.2f}")
        if points:
            segments.append(points)
        for segment in segments:
            if len(segment) == 1:
                x, y = segment[0].split(",")
                shapes.append(f'<circle class="l{colour % 6}" cx="{x}" cy="{y}" r="1.5"/>')
            else:
                shapes.append(f'<polyline class="l{colour % 6}" points="{" ".join(segment)}"/>')
        latest = next((v for v in reversed(line.values) if v is not None), None)
        if latest is not None:
            shown_latest = "over 60000" if math.isinf(latest) else f"{latest:g}"
            parts.append(f"{line.label} latest {shown_latest} {unit}".rstrip())
    return _frame(_label(title, parts), "".join(shapes))
