"""``--plot DIR``: small SVG line charts written without any plotting library.

Per scenario invocation: ``<scenario>-latency.svg`` (latency by percentile, every run of
every system, with the tail stretched out: the x axis is -log10(1 - q)) and, where the
scenario has receipt times, ``<scenario>-throughput.svg`` (deliveries/s per 100 ms).
"""

from __future__ import annotations

import math
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
