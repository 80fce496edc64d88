"""``--plot DIR``: small SVG line charts written without any plotting library, and PNG
charts of sweeps drawn with Pillow (already a dependency, for media thumbnails).

Per scenario invocation: ``<scenario>-latency.svg`` (latency by percentile, every run of
every system, with the tail stretched out: the x axis is -log10(1 - q)) and, where the
scenario has receipt times, ``<scenario>-throughput.svg`` (deliveries/s per 100 ms).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_W, _H, _L, _R, _T, _B = 760, 420, 70, 170, 40, 50

Series = dict[str, list[tuple[float, float]]]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def line_chart(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Series,
    *,
    x_ticks: list[tuple[float, str]] | None = None,
) -> None:
    points = [p for pts in series.values() for p in pts]
    if not points:
        return
    x_lo = min(x for x, _ in points)
    x_hi = max(x for x, _ in points)
    y_ticks = _nice_ticks(0.0, max(y for _, y in points) or 1.0)
    y_hi = y_ticks[-1]
    if x_ticks is None:
        x_ticks = [(t, f"{t:g}") for t in _nice_ticks(x_lo, x_hi)]
        x_lo, x_hi = x_ticks[0][0], x_ticks[-1][0]
    x_span = (x_hi - x_lo) or 1.0
    pw, ph = _W - _L - _R, _H - _T - _B

    def sx(x: float) -> float:
        return _L + (x - x_lo) / x_span * pw

    def sy(y: float) -> float:
        return _T + ph - y / y_hi * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
    ]
    for t in y_ticks:
        y = sy(t)
        out.append(f'<line x1="{_L}" x2="{_L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t, label in x_ticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_T}" y2="{_T + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{_T + ph + 16}" text-anchor="middle">{escape(label)}</text>')
    out.append(f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{_L + pw / 2}" y="{_H - 10}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(
        f'<text x="16" y="{_T + ph / 2}" text-anchor="middle" transform="rotate(-90 16 {_T + ph / 2})">'
        f"{escape(ylabel)}</text>"
    )
    for k, (name, pts) in enumerate(series.items()):
        color = _COLORS[k % len(_COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        ly = _T + 10 + 18 * k
        out.append(
            f'<line x1="{_W - _R + 12}" x2="{_W - _R + 32}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/>'
        )
        out.append(f'<text x="{_W - _R + 38}" y="{ly + 4}">{escape(name)}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def latency_points(latencies: list[float], max_points: int = 400) -> list[tuple[float, float]]:
    """(-log10(1 - q), latency) for q from 0 to the last sample, thinned to ~max_points."""
    values = sorted(latencies)
    n = len(values)
    if not n:
        return []
    pts = []
    step = max(1, n // max_points)
    idx = list(range(0, n, step))
    tail = [n - 1 - k for k in (1000, 100, 10, 1, 0) if n - 1 - k >= 0]  # keep the tail exact
    for i in sorted(set(idx) | set(tail)):
        q = (i + 1) / n
        pts.append((min(-math.log10(max(1.0 - q, 1e-6)), 6.0), values[i]))
    return pts


_PCT_TICKS = [(0.0, "0%"), (math.log10(2), "50%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"), (4.0, "99.99%")]


def throughput_points(times: list[float], t0: float, bucket: float = 0.1) -> list[tuple[float, float]]:
    if not times:
        return []
    counts: dict[int, int] = {}
    for t in times:
        b = int((t - t0) / bucket)
        counts[b] = counts.get(b, 0) + 1
    last = max(counts)
    return [(b * bucket, counts.get(b, 0) / bucket) for b in range(0, last + 1)]


def write_plots(directory: Path, scenario: str, latency_of: str, rows: list[dict[str, Any]]) -> list[Path]:
    """Charts for every run row of one scenario invocation; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    lat: Series = {}
    thr: Series = {}
    for row in rows:
        series = row.get("_series") or {}
        label = f"{row['system']} run {row.get('run', '?')}"
        if series.get("latency_ms"):
            lat[label] = latency_points(series["latency_ms"])
        if series.get("recv_times"):
            thr[label] = throughput_points(series["recv_times"], series.get("t0", 0.0))
    written = []
    if lat:
        top = max(x for pts in lat.values() for x, _ in pts)
        ticks = [t for t in _PCT_TICKS if t[0] <= max(top, 2.0) + 1e-9]
        path = directory / f"{scenario}-latency.svg"
        line_chart(path, f"{scenario}: latency ({latency_of})", "percentile", "ms", lat, x_ticks=ticks)
        written.append(path)
    if thr:
        path = directory / f"{scenario}-throughput.svg"
        line_chart(path, f"{scenario}: deliveries per second (100 ms buckets)", "seconds", "deliveries/s", thr)
        written.append(path)
    return written


# --- PNG charts over a log x axis (sweeps), drawn with Pillow -------------------------------------


@dataclass
class Panel:
    """One chart of a stacked figure: a y axis and its named series of (x, y) points."""

    ylabel: str
    series: Series
    log_y: bool = True
    note: str = ""  # shown at the panel's top right
    #: per series, the x values whose points are drawn hollow (measured under interference)
    hollow: dict[str, set[float]] = field(default_factory=dict)
    #: set: the panel has an x axis of its own (log scale, this label, no marked x)
    xlabel: str = ""


_PNG_COLORS = {"write fan-out": (31, 119, 180), "read fan-out": (214, 39, 40)}
_SS = 2  # drawn at twice the size and scaled down: Pillow's lines are not antialiased


def _si(v: float) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def _log_ticks(lo: float, hi: float) -> tuple[float, float, list[float], list[float]]:
    """Axis range (in log10) covering [lo, hi], labelled ticks, and unlabelled grid lines."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if a == b:
        b += 1
    steps = (1, 2, 5) if b - a <= 3 else (1,)
    major = [m * 10**e for e in range(a, b + 1) for m in steps if m * 10**e <= 10**b]
    minor = [m * 10**e for e in range(a, b) for m in range(2, 10) if m not in steps]
    return float(a), float(b), major, minor


def _log_y(y0: int, height: int, lo: float, hi: float) -> Callable[[float], float]:
    """Pixel row of a value on a log axis from 10**lo (bottom) to 10**hi (top) of a panel."""
    return lambda y: y0 + height - (math.log10(max(y, 10**lo)) - lo) / (hi - lo) * height


def _linear_y(y0: int, height: int, hi: float) -> Callable[[float], float]:
    """Pixel row of a value on a linear axis from 0 (bottom) to ``hi`` (top) of a panel."""
    return lambda y: y0 + height - y / hi * height


def log_x_png(
    path: Path,
    title: str,
    xlabel: str,
    panels: list[Panel],
    *,
    mark_x: float | None = None,
    mark_label: str = "",
    footnote: str = "",
) -> None:
    """Stacked line charts sharing one log-scale x axis, with an optional marked x value.
    A panel with an ``xlabel`` of its own gets its own log x axis instead, unmarked."""
    from PIL import Image, ImageDraw, ImageFont

    shared = [p for p in panels if not p.xlabel]
    xs = [x for p in shared for pts in p.series.values() for x, _ in pts]
    if not xs and not any(p.series for p in panels):
        return
    s = _SS
    width, panel_h, left, right, top, gap = 1000 * s, 300 * s, 90 * s, 30 * s, 84 * s, 70 * s
    # an x label under every panel that does not share the next one's axis
    labels = [p.xlabel or xlabel for p in panels]
    labelled = [k for k in range(len(panels)) if k == len(panels) - 1 or labels[k] != labels[k + 1]]
    n = len(panels)
    height = top + n * panel_h + (n - 1) * gap + 20 * s * (len(labelled) - 1) + 50 * s + (18 * s if footnote else 0)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13 * s)
    big = ImageFont.load_default(size=17 * s)
    draw.text((width // 2, 24 * s), title, fill="black", font=big, anchor="mm")
    pw = width - left - right

    def x_axis(xs: list[float], mark: float | None) -> tuple[Callable[[float], float], list[float], list[float]]:
        lo, hi, major, minor = _log_ticks(min(min(xs), mark or min(xs)), max(max(xs), mark or 0))

        def sx(x: float) -> float:
            return left + (math.log10(x) - lo) / (hi - lo) * pw

        return sx, major, minor

    shared_axis = x_axis(xs, mark_x) if xs else None
    y0 = top - panel_h - gap
    for k, panel in enumerate(panels):
        y0 += panel_h + gap
        own = [x for pts in panel.series.values() for x, _ in pts]
        if panel.xlabel:
            if not own:
                continue
            sx, x_major, x_minor = x_axis(own, None)
        elif shared_axis is None:
            continue
        else:
            sx, x_major, x_minor = shared_axis
        panel_mark = None if panel.xlabel else mark_x
        ys = [y for pts in panel.series.values() for _, y in pts]
        if panel.log_y:
            ys = [y for y in ys if y > 0] or [1.0]
            y_lo, y_hi, y_major, y_minor = _log_ticks(min(ys), max(ys))
            sy = _log_y(y0, panel_h, y_lo, y_hi)
        else:
            top_y = 1.1 * max(ys or [1.0])  # headroom: a flat line at the top stays visible
            y_major, y_minor = _nice_ticks(0.0, top_y), []
            if y_major[-1] < top_y:  # _nice_ticks stops at the last step within the range
                y_major.append(y_major[-1] + (y_major[1] - y_major[0]))
            sy = _linear_y(y0, panel_h, y_major[-1])
        if panel_mark is not None:  # the default threshold: write fan-out left of it, read right
            mx = sx(panel_mark)
            draw.rectangle((left, y0, mx, y0 + panel_h), fill=(238, 244, 251))
            draw.rectangle((mx, y0, left + pw, y0 + panel_h), fill=(252, 240, 240))
        for t in y_minor:
            draw.line((left, sy(t), left + pw, sy(t)), fill=(232, 232, 232), width=s)
        for t in y_major:
            draw.line((left, sy(t), left + pw, sy(t)), fill=(205, 205, 205), width=s)
            draw.text((left - 8 * s, sy(t)), _si(t), fill="black", font=font, anchor="rm")
        for t in x_minor:
            draw.line((sx(t), y0, sx(t), y0 + panel_h), fill=(232, 232, 232), width=s)
        for t in x_major:
            draw.line((sx(t), y0, sx(t), y0 + panel_h), fill=(205, 205, 205), width=s)
            draw.text((sx(t), y0 + panel_h + 6 * s), _si(t), fill="black", font=font, anchor="mt")
        draw.rectangle((left, y0, left + pw, y0 + panel_h), outline=(60, 60, 60), width=s)
        draw.text((left, y0 - 8 * s), panel.ylabel, fill="black", font=font, anchor="ls")
        if panel.note:
            draw.text((left + pw, y0 - 8 * s), panel.note, fill=(60, 60, 60), font=font, anchor="rs")
        if panel_mark is not None:
            mx = sx(panel_mark)
            for yy in range(y0, y0 + panel_h, 12 * s):  # dashed
                draw.line((mx, yy, mx, min(yy + 7 * s, y0 + panel_h)), fill=(90, 90, 90), width=2 * s)
            if k == 0:  # on whichever side of the line has room
                room_right = left + pw - mx > draw.textlength(mark_label, font=font) + 12 * s
                lx, anchor = (mx + 6 * s, "la") if room_right else (mx - 6 * s, "ra")
                draw.text((lx, y0 + panel_h - 22 * s), mark_label, fill=(60, 60, 60), font=font, anchor=anchor)
        for j, (name, pts) in enumerate(panel.series.items()):
            color = _PNG_COLORS.get(name, _COLORS[j % len(_COLORS)])
            coords = [(sx(x), sy(y)) for x, y in pts]
            if len(coords) > 1:
                draw.line(coords, fill=color, width=3 * s, joint="curve")
            hollow = panel.hollow.get(name, set())
            for (x, _), (cx, cy) in zip(pts, coords, strict=True):
                r = 5 * s
                fill = "white" if x in hollow else color
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=color, width=2 * s)
            if k == 0:  # one legend for all panels, under the title, clear of the data
                lx = left + 180 * s * j
                draw.line((lx, 50 * s, lx + 28 * s, 50 * s), fill=color, width=4 * s)
                draw.text((lx + 36 * s, 50 * s), name, fill="black", font=font, anchor="lm")
        if k in labelled:
            draw.text((left + pw // 2, y0 + panel_h + 36 * s), labels[k], fill="black", font=font, anchor="mm")
            y0 += 20 * s
    if footnote:
        draw.text((left, height - 10 * s), footnote, fill=(90, 90, 90), font=font, anchor="ls")
    img.resize((width // s, height // s), Image.Resampling.LANCZOS).save(path, optimize=True)
