"""Server-rendered SVG charts for the dashboard: no chart library, no script, nothing fetched.

Each function returns one <svg> (markupsafe.Markup, every text escaped). Small multiples with their
own scales where sizes differ by orders of magnitude: a canary group of 4 devices gets a panel as
tall as the group of 10,000, and its counts are printed, so it is never a sliver at the bottom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone

from markupsafe import Markup, escape

COLORS = {
    "baseline": "#8a94a6",
    "production": "#2563eb",
    "canary": "#d97706",
    "control": "#64748b",
    "confirmed": "#16a34a",
    "pending": "#93c5fd",
    "failed": "#dc2626",
    "reverted": "#9333ea",
    "threshold": "#dc2626",
}
KIND_COLORS = {"classes": "#2563eb", "confidence": "#d97706", "latency": "#0891b2", "errors": "#dc2626"}


def _t(x: float, y: float, text: object, anchor: str = "start", size: int = 11, fill: str = "#334155") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}">{escape(text)}</text>'
    )


def _svg(width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above `value`."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= value * (1 - 1e-12))


def bars(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    title: str,
    *,
    as_share: bool = True,
    width: int = 560,
    height: int = 220,
) -> Markup:
    """Grouped bars: one group per label, one bar per series (e.g. baseline vs production), in % of
    each series' total when `as_share`."""
    left, right, top, bottom = 44, 10, 28, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    values = []
    for _name, vals, _c in series:
        total = sum(vals) if as_share else 1.0
        values.append([(100.0 * v / total if total else 0.0) if as_share else float(v) for v in vals])
    peak = max((v for vals in values for v in vals), default=0.0)
    ymax = _nice_max(peak) if peak > 0 else 1.0
    body = [_t(left, 16, title, size=13, fill="#0f172a")]
    for i in range(5):
        y = top + plot_h * (1 - i / 4)
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        body.append(_t(left - 4, y + 4, f"{ymax * i / 4:.3g}{'%' if as_share else ''}", anchor="end", size=10))
    n = max(len(labels), 1)
    slot = plot_w / n
    bar_w = max(slot * 0.8 / max(len(series), 1), 1.0)
    for i, label in enumerate(labels):
        for j, (name, _vals, color) in enumerate(series):
            v = values[j][i] if i < len(values[j]) else 0.0
            h = plot_h * v / ymax
            x = left + i * slot + slot * 0.1 + j * bar_w
            body.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{escape(name)} · {escape(label)}: {v:.3g}{'%' if as_share else ''}</title></rect>"
            )
        if n <= 12 or i % max(1, n // 10) == 0:
            body.append(
                f'<text x="{left + (i + 0.5) * slot:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="9" '
                f'fill="#475569">{escape(label)}</text>'
            )
    for j, (name, _vals, color) in enumerate(series):
        x = left + j * 130
        body.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{color}"/>')
        body.append(_t(x + 14, height - 7, name, size=11))
    return _svg(width, height, body, title)


def lines(
    series: Sequence[tuple[str, Sequence[tuple[datetime, float]], str]],
    title: str,
    *,
    thresholds: Sequence[tuple[str, float, str]] = (),
    width: int = 560,
    height: int = 220,
) -> Markup:
    """Values over time, one line per series, dashed horizontal limits."""
    left, right, top, bottom = 48, 10, 28, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for _n, pts, _c in series for p in pts]
    body = [_t(left, 16, title, size=13, fill="#0f172a")]
    if not points:
        body.append(_t(width / 2, height / 2, "no scores yet", anchor="middle", fill="#94a3b8"))
        return _svg(width, height, body, title)
    t0 = min(p[0] for p in points).timestamp()
    t1 = max(p[0] for p in points).timestamp()
    span = max(t1 - t0, 1.0)
    peak = max([p[1] for p in points] + [t[1] for t in thresholds])
    ymax = _nice_max(peak * 1.1) if peak > 0 else 1.0

    def xy(at: datetime, v: float) -> tuple[float, float]:
        return left + plot_w * (at.timestamp() - t0) / span, top + plot_h * (1 - max(v, 0.0) / ymax)

    for i in range(5):
        y = top + plot_h * (1 - i / 4)
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        body.append(_t(left - 4, y + 4, f"{ymax * i / 4:.3g}", anchor="end", size=10))
    for name, value, color in thresholds:
        y = top + plot_h * (1 - value / ymax)
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}" '
            f'stroke-dasharray="5 4"><title>{escape(name)}: {value:.3g}</title></line>'
        )
    for name, pts, color in series:
        if not pts:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(a, v) for a, v in pts))
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for a, v in pts[-1:]:
            x, y = xy(a, v)
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                f"<title>{escape(name)}: {v:.3g}</title></circle>"
            )
    body.append(_t(left, top + plot_h + 14, _when(datetime.fromtimestamp(t0, timezone.utc)), size=9))
    body.append(
        _t(width - right, top + plot_h + 14, _when(datetime.fromtimestamp(t1, timezone.utc)), anchor="end", size=9)
    )
    for j, (name, _pts, color) in enumerate(series):
        x = left + j * 120
        body.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{color}"/>')
        body.append(_t(x + 14, height - 7, name, size=11))
    return _svg(width, height, body, title)


def _when(at: datetime) -> str:
    return at.strftime("%d %b %H:%M")


STATES = ("confirmed", "pending", "reverted", "failed")


def group_progress(
    groups: Sequence[tuple[str, int, Sequence[tuple[datetime, dict[str, int]]]]],
    marks: Sequence[tuple[datetime, str, str]],
    title: str,
    *,
    width: int = 760,
    panel: int = 78,
) -> Markup:
    """Per group, its devices' states over time as stacked steps, each panel scaled to its own group
    size; the rollout's decisions (advance, pause, rollback…) marked as vertical lines on every panel.
    `groups`: (name, members, [(time, {state: count})]); `marks`: (time, label, color)."""
    left, right, top = 150, 16, 30
    times = [t for _n, _m, steps in groups for t, _ in steps] + [t for t, _l, _c in marks]
    height = top + panel * max(len(groups), 1) + 40
    body = [_t(8, 18, title, size=13, fill="#0f172a")]
    if not times:
        body.append(_t(width / 2, height / 2, "no group assigned yet", anchor="middle", fill="#94a3b8"))
        return _svg(width, height, body, title)
    t0, t1 = min(times).timestamp(), max(times).timestamp()
    span = max(t1 - t0, 1.0) * 1.05  # the latest state keeps a visible width at the right edge
    plot_w = width - left - right

    def x_of(at: datetime) -> float:
        return left + plot_w * (at.timestamp() - t0) / span

    for g, (name, members, steps) in enumerate(groups):
        y0 = top + g * panel
        h = panel - 18
        body.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{h}" fill="#f8fafc" stroke="#e2e8f0"/>')
        last = steps[-1][1] if steps else {}
        body.append(_t(8, y0 + 16, name, size=12, fill="#0f172a"))
        body.append(_t(8, y0 + 31, f"{members} device{'s' if members != 1 else ''}", size=10))
        summary = " · ".join(f"{last.get(s, 0)} {s}" for s in STATES if last.get(s, 0))
        body.append(_t(8, y0 + 45, summary or "–", size=10))
        if not members or not steps:
            continue
        # stacked areas, each state a polygon of step edges
        base = [0.0] * len(steps)
        for state in STATES:
            upper = [b + steps[i][1].get(state, 0) for i, b in enumerate(base)]
            if any(u > b for u, b in zip(upper, base, strict=True)):
                pts_top, pts_bottom = [], []
                for i, (at, _c) in enumerate(steps):
                    x = x_of(at)
                    nxt = x_of(steps[i + 1][0]) if i + 1 < len(steps) else left + plot_w
                    yu = y0 + h * (1 - upper[i] / members)
                    yb = y0 + h * (1 - base[i] / members)
                    pts_top += [(x, yu), (nxt, yu)]
                    pts_bottom += [(x, yb), (nxt, yb)]
                poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts_top + pts_bottom[::-1])
                body.append(
                    f'<polygon points="{poly}" fill="{COLORS[state]}" opacity="0.9">'
                    f"<title>{escape(name)}: {state} {upper[-1] - base[-1]:.0f} of {members}</title></polygon>"
                )
            base = upper
        body.append(_t(left + plot_w - 4, y0 + 12, f"{members}", anchor="end", size=9, fill="#64748b"))
    for at, label, color in marks:
        x = x_of(at)
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + panel * len(groups) - 18}" stroke="{color}" '
            f'stroke-width="1.5" stroke-dasharray="3 2"><title>{escape(label)} at {_when(at)}</title></line>'
        )
        body.append(_t(x + 2, top - 6, label, size=9, fill=color))
    ybot = top + panel * len(groups) + 2
    body.append(_t(left, ybot, _when(datetime.fromtimestamp(t0, timezone.utc)), size=9))
    body.append(
        _t(
            x_of(datetime.fromtimestamp(t1, timezone.utc)),
            ybot,
            _when(datetime.fromtimestamp(t1, timezone.utc)),
            anchor="end",
            size=9,
        )
    )
    for j, state in enumerate(STATES):
        x = left + j * 110
        body.append(f'<rect x="{x}" y="{height - 18}" width="10" height="10" fill="{COLORS[state]}"/>')
        body.append(_t(x + 14, height - 9, state, size=11))
    return _svg(width, height, body, title)


def versus(
    rows: Sequence[tuple[str, float | None, float | None, float, bool, int, int]],
    title: str,
    *,
    width: int = 760,
) -> Markup:
    """Canary against control, one row per gate: both values as bars on the row's own scale, the limit
    as a red tick, and how many devices stand behind each side.
    rows: (gate, canary, control, limit, passed, canary devices, control devices)."""
    row_h, left, top = 40, 170, 28
    height = top + row_h * max(len(rows), 1) + 10
    plot_w = width - left - 150
    body = [_t(8, 18, title, size=13, fill="#0f172a")]
    for i, (gate, canary, control, limit, passed, n_canary, n_control) in enumerate(rows):
        y = top + i * row_h
        peak = max([v for v in (canary, control, limit) if v is not None] + [1e-9]) * 1.15
        body.append(_t(8, y + 14, gate, size=12, fill="#0f172a"))
        body.append(_t(8, y + 28, "pass" if passed else "FAIL", size=10, fill="#16a34a" if passed else "#dc2626"))
        for j, (side, value, n) in enumerate((("canary", canary, n_canary), ("control", control, n_control))):
            yy = y + 4 + j * 14
            w = plot_w * (value or 0.0) / peak
            body.append(f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="11" fill="{COLORS[side]}"/>')
            shown = "–" if value is None else f"{value:.4g}"
            body.append(_t(left + w + 4, yy + 10, f"{side} {shown} ({n} dev)", size=10))
        lx = left + plot_w * limit / peak
        body.append(
            f'<line x1="{lx:.1f}" x2="{lx:.1f}" y1="{y + 1}" y2="{y + 32}" stroke="{COLORS["threshold"]}" '
            f'stroke-width="2"><title>limit {limit:.4g}</title></line>'
        )
        body.append(_t(width - 8, y + 14, f"limit {limit:.4g}", anchor="end", size=10, fill="#dc2626"))
    return _svg(width, height, body, title)
