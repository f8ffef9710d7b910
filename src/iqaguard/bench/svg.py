"""Tiny inline-SVG charts for the offline report: scatter with a highlighted front (Guardians of Image Quality
Figure 3a), bars with dots (Figure 2) and a heat map (Tables 10, 15-17 as pictures).

Every function returns one ``<svg>`` element as a string, without an ``xmlns`` attribute (inline
SVG in HTML5 needs none) and without any external reference. Text is HTML-escaped here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable, Dict, List, Optional, Sequence

BLUE, RED, GREY, INK = "#4c78a8", "#d62728", "#9aa3ad", "#222"
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def nice_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
    """About ``count`` round tick values (1, 2, 2.5, 5 x 10^k steps) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"nice_ticks: finite range expected, got [{lo}, {hi}]")
    if hi <= lo:
        lo, hi = lo - 0.5, lo + 0.5
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    n = int(math.ceil((hi - first) / step - 1e-9))
    return [round(first + i * step, 12) for i in range(n + 1)]


def _num(v: float) -> str:
    return f"{v:.1f}"


def _label(v: float) -> str:
    return f"{v:.4g}"


@dataclass
class _Frame:
    """Plot area inside an ``width`` x ``height`` SVG with margins; maps data to pixels."""

    width: int
    height: int
    left: int = 62
    right: int = 16
    top: int = 34
    bottom: int = 46
    x0: float = 0.0
    x1: float = 1.0
    y0: float = 0.0
    y1: float = 1.0

    def px(self, v: float) -> float:
        return self.left + (v - self.x0) / (self.x1 - self.x0) * (self.width - self.left - self.right)

    def py(self, v: float) -> float:
        return self.height - self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.height - self.top - self.bottom)

    def y_axis(self, ticks: Sequence[float], label: str) -> List[str]:
        out = []
        for t in ticks:
            y = _num(self.py(t))
            out.append(f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{y}" y2="{y}" stroke="#e5e8eb"/>')
            out.append(f'<text x="{self.left - 6}" y="{y}" text-anchor="end" dominant-baseline="middle">'
                       f'{escape(_label(t))}</text>')
        mid = _num((self.top + self.height - self.bottom) / 2)
        out.append(f'<text x="14" y="{mid}" text-anchor="middle" transform="rotate(-90 14 {mid})">'
                   f'{escape(label)}</text>')
        return out

    def x_axis(self, ticks: Sequence[float], label: str) -> List[str]:
        base = self.height - self.bottom
        out = [f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{base}" y2="{base}" stroke="{INK}"/>']
        for t in ticks:
            x = _num(self.px(t))
            out.append(f'<line x1="{x}" x2="{x}" y1="{self.top}" y2="{base}" stroke="#f0f2f4"/>')
            out.append(f'<text x="{x}" y="{base + 16}" text-anchor="middle">{escape(_label(t))}</text>')
        out.append(f'<text x="{_num((self.left + self.width - self.right) / 2)}" y="{self.height - 8}" '
                   f'text-anchor="middle">{escape(label)}</text>')
        return out


def _wrap(width: int, height: int, title: str, body: Sequence[str], css_class: str) -> str:
    head = (f'<svg class="{css_class}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{escape(title)}" {FONT} fill="{INK}">')
    caption = (f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-weight="600" font-size="13">'
               f'{escape(title)}</text>')
    return "\n".join([head, f"<title>{escape(title)}</title>", caption, *body, "</svg>"])


def _empty(width: int, height: int, title: str, css_class: str) -> str:
    """A chart frame that says there is nothing to plot."""
    note = f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text>'
    return _wrap(width, height, title, [note], css_class)


def _padded(values: Sequence[float], pad: float = 0.06, include_zero: bool = False) -> List[float]:
    """Ticks covering ``values`` plus a margin; with ``include_zero`` the axis starts (or ends) at 0."""
    lo, hi = min(values), max(values)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = (hi - lo) or max(abs(hi), 1.0)
    low = lo if include_zero and lo == 0.0 else lo - pad * span
    high = hi if include_zero and hi == 0.0 else hi + pad * span
    return nice_ticks(low, high)


def scatter(points: Sequence[Dict], x_label: str, y_label: str, title: str,
            width: int = 580, height: int = 400) -> str:
    """Scatter plot; points with ``highlight`` are red and joined by a red line (a Pareto front).

    Args:
        points: dicts with ``x``, ``y`` (floats), ``label`` (tooltip and front label), optional
            ``tip`` (tooltip instead of ``label``, e.g. with the sample size) and ``highlight``.
        x_label, y_label, title: axis labels and caption.

    Returns:
        An ``<svg>`` string (an empty-plot note inside when no point has both coordinates).
    """
    pts = [p for p in points if p.get("x") is not None and p.get("y") is not None]
    if not pts:
        return _empty(width, height, title, "chart scatter")
    xt, yt = _padded([p["x"] for p in pts]), _padded([p["y"] for p in pts])
    f = _Frame(width, height, x0=xt[0], x1=xt[-1], y0=yt[0], y1=yt[-1])
    body = f.y_axis(yt, y_label) + f.x_axis(xt, x_label)
    front = sorted((p for p in pts if p.get("highlight")), key=lambda p: (p["x"], -p["y"]))
    if len(front) > 1:
        coords = " ".join(f"{_num(f.px(p['x']))},{_num(f.py(p['y']))}" for p in front)
        body.append(f'<polyline class="front" points="{coords}" fill="none" stroke="{RED}" stroke-width="2"/>')
    for p in sorted(pts, key=lambda p: bool(p.get("highlight"))):
        color = RED if p.get("highlight") else BLUE
        tip = escape(str(p.get("tip", p.get("label", ""))))
        body.append(f'<circle cx="{_num(f.px(p["x"]))}" cy="{_num(f.py(p["y"]))}" r="4.5" fill="{color}" '
                    f'fill-opacity="0.8" stroke="white"><title>{tip}</title></circle>')
    placed: List[tuple] = []
    for p in front:
        text = str(p.get("label", ""))
        x, y = f.px(p["x"]) + 7, _free_y(f.py(p["y"]), f.px(p["x"]) + 7, 5.5 * len(text), placed)
        body.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="10" fill="{RED}">{escape(text)}</text>')
    return _wrap(width, height, title, body, "chart scatter")


def _free_y(y: float, x: float, w: float, placed: List[tuple], h: float = 11.0) -> float:
    """Baseline near ``y`` for a ``w``-wide label at ``x`` that overlaps no box in ``placed`` (greedy)."""
    for dy in (-7.0, 14.0, -19.0, 26.0, -31.0, 38.0):
        box = (x, y + dy - h, x + w, y + dy)
        if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
            placed.append(box)
            return y + dy
    placed.append((x, y - 7.0 - h, x + w, y - 7.0))
    return y - 7.0


def _note(notes: Sequence[str], i: int) -> str:
    """``notes[i]`` (escaped) after a space, or ``""`` when there is no such note."""
    return f" {escape(notes[i])}" if i < len(notes) and notes[i] else ""


def bars_with_dots(categories: Sequence[str], bars: Sequence[Optional[float]], dots: Sequence[Sequence[float]],
                   marked: Sequence[Optional[float]], y_label: str, title: str,
                   width: int = 560, height: int = 360, bar_notes: Sequence[str] = (),
                   dot_notes: Sequence[Sequence[str]] = (), marked_notes: Sequence[str] = ()) -> str:
    """One bar per category plus hollow dots (one per preset) and a red marked dot (Guardians of Image Quality Fig. 2).

    Args:
        categories: x-axis labels (defenses).
        bars: bar height per category (``None``: no bar, e.g. no adaptive run).
        dots: values drawn as hollow grey dots per category (non-adaptive presets).
        marked: one red dot per category (the selected preset), or ``None``.
        y_label, title: axis label and caption.
        bar_notes, dot_notes, marked_notes: optional text appended to each tooltip (e.g. the
            sample size), shaped like ``bars``, ``dots`` and ``marked``.
    """
    values = [v for v in bars if v is not None] + [v for ds in dots for v in ds] + [v for v in marked if v is not None]
    if not categories or not values:
        return _empty(width, height, title, "chart bars")
    yt = _padded(values, include_zero=True)
    f = _Frame(width, height, bottom=92, x0=0.0, x1=float(len(categories)), y0=yt[0], y1=yt[-1])
    body = f.y_axis(yt, y_label)
    base = f.height - f.bottom
    zero = f.py(0.0)
    body.append(f'<line x1="{f.left}" x2="{width - f.right}" y1="{_num(zero)}" y2="{_num(zero)}" stroke="{INK}"/>')
    slot = (f.px(1.0) - f.px(0.0))
    for i, name in enumerate(categories):
        cx = f.px(i + 0.5)
        bar = bars[i]
        if bar is not None:
            top, bottom = sorted((f.py(bar), zero))
            body.append(f'<rect class="bar" x="{_num(cx - slot * 0.35)}" y="{_num(top)}" width="{_num(slot * 0.7)}" '
                        f'height="{_num(bottom - top)}" fill="{BLUE}" fill-opacity="0.75">'
                        f'<title>{escape(name)}: {bar:.4g}{_note(bar_notes, i)}</title></rect>')
        for k, v in enumerate(dots[i] if i < len(dots) else ()):
            body.append(f'<circle class="dot" cx="{_num(cx)}" cy="{_num(f.py(v))}" r="3.5" fill="white" '
                        f'stroke="{INK}" stroke-width="1.2"><title>{escape(name)}: {v:.4g}'
                        f'{_note(dot_notes[i] if i < len(dot_notes) else (), k)}</title></circle>')
        if i < len(marked) and marked[i] is not None:
            body.append(f'<circle class="marked" cx="{_num(cx)}" cy="{_num(f.py(marked[i]))}" r="4" fill="{RED}">'
                        f'<title>{escape(name)} (selected preset): {marked[i]:.4g}{_note(marked_notes, i)}'
                        f'</title></circle>')
        body.append(f'<text x="{_num(cx)}" y="{base + 14}" text-anchor="end" '
                    f'transform="rotate(-35 {_num(cx)} {base + 14})">{escape(name)}</text>')
    return _wrap(width, height, title, body, "chart bars")


def _heat_colour(v: float) -> str:
    """White (0) to dark blue (1)."""
    t = min(max(v, 0.0), 1.0)
    r, g, b = (int(round(255 + (c - 255) * t)) for c in (31, 78, 145))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(row_labels: Sequence[str], col_labels: Sequence[str], values: Sequence[Sequence[Optional[float]]],
            title: str, fmt: Callable[[float], str] = lambda v: f"{100 * v:.0f}%", cell: int = 44) -> str:
    """Heat map of values in [0, 1] (``None`` cells grey with a dash), labels left and on top.

    Args:
        row_labels, col_labels: labels (rows: the defense that wins; columns: its opponent).
        values: ``[rows][cols]`` fractions.
        title: caption.
        fmt: cell text.
        cell: cell size in pixels.
    """
    left = 12 + 7 * max((len(s) for s in row_labels), default=4)
    top = 40 + 6 * max((len(s) for s in col_labels), default=4)
    width, height = left + cell * len(col_labels) + 16, top + cell * len(row_labels) + 12
    width = max(width, int(7.5 * len(title)) + 20)  # room for the caption of a small matrix
    body = []
    for j, name in enumerate(col_labels):
        x = left + cell * j + cell / 2
        body.append(f'<text x="{x:.1f}" y="{top - 6}" transform="rotate(-45 {x:.1f} {top - 6})">{escape(name)}</text>')
    for i, name in enumerate(row_labels):
        y = top + cell * i
        body.append(f'<text x="{left - 6}" y="{y + cell / 2:.1f}" text-anchor="end" dominant-baseline="middle">'
                    f'{escape(name)}</text>')
        for j, v in enumerate(values[i]):
            x = left + cell * j
            fill = "#eceff1" if v is None else _heat_colour(v)
            text = "—" if v is None else fmt(v)
            ink = "white" if v is not None and v > 0.55 else INK
            tip = f"{name} vs {col_labels[j]}: {text}"
            body.append(f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                        f'stroke="white"><title>{escape(tip)}</title></rect>')
            body.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2:.1f}" text-anchor="middle" '
                        f'dominant-baseline="middle" fill="{ink}">{escape(text)}</text>')
    return _wrap(width, height, title, body, "chart heatmap")


def intervals(items: Sequence[Dict], y_label: str, title: str, width: int = 580, height: int = 320) -> str:
    """Certified intervals against attacked scores: one column per image, sorted by its certified score.

    Args:
        items: dicts with ``label`` (tooltip), ``score`` (the certified clean score), ``lower`` /
            ``upper`` (the interval; ``None`` = unbounded, drawn to the plot's edge) and ``attacked``
            (a list of the smoothed scores of its attacked versions: red dots, hollow when outside).
        y_label, title: axis label and caption.

    Returns:
        An ``<svg>`` string (an empty-plot note when no item has a score).
    """
    its = sorted((i for i in items if i.get("score") is not None), key=lambda i: i["score"])
    if not its:
        return _empty(width, height, title, "chart intervals")
    vals = [v for i in its for v in [i["score"], *i.get("attacked", []),
                                      *(b for b in (i.get("lower"), i.get("upper")) if b is not None)]]
    yt = _padded(vals)
    f = _Frame(width, height, x0=-0.5, x1=len(its) - 0.5, y0=yt[0], y1=yt[-1])
    body = f.y_axis(yt, y_label)
    base = height - f.bottom
    body.append(f'<line x1="{f.left}" x2="{width - f.right}" y1="{base}" y2="{base}" stroke="{INK}"/>')
    body.append(f'<text x="{_num((f.left + width - f.right) / 2)}" y="{height - 8}" text-anchor="middle">'
                f'images, by certified score</text>')
    for k, i in enumerate(its):
        x = _num(f.px(k))
        lo = i["lower"] if i.get("lower") is not None else yt[0]
        hi = i["upper"] if i.get("upper") is not None else yt[-1]
        tip = escape(f"{i.get('label', '')}: certified [{_label(lo)}, {_label(hi)}], score {_label(i['score'])}")
        body.append(f'<line x1="{x}" x2="{x}" y1="{_num(f.py(lo))}" y2="{_num(f.py(hi))}" stroke="{BLUE}" '
                    f'stroke-width="3" stroke-opacity="0.5"><title>{tip}</title></line>')
        body.append(f'<circle cx="{x}" cy="{_num(f.py(i["score"]))}" r="3" fill="{BLUE}"><title>{tip}</title></circle>')
        for a in i.get("attacked", []):
            inside = lo <= a <= hi
            body.append(f'<circle class="{"inside" if inside else "outside"}" cx="{x}" cy="{_num(f.py(a))}" r="3.5" '
                        f'fill="{RED if inside else "white"}" stroke="{RED}"><title>attacked: {escape(_label(a))}'
                        f'</title></circle>')
    return _wrap(width, height, title, body, "chart intervals")


#: colours of successive series of :func:`lines`
SERIES = (BLUE, RED, "#2a9d8f", "#8e6c8a", "#e9a03b", "#5c6b73")


def lines(series: Sequence[Dict], x_label: str, y_label: str, title: str,
          width: int = 580, height: int = 360) -> str:
    """Line chart of one or more series, with a legend.

    Args:
        series: dicts with ``label`` and ``points`` (a list of ``(x, y)``; ``None`` values dropped).
        x_label, y_label, title: axis labels and caption.

    Returns:
        An ``<svg>`` string (an empty-plot note when no series has a point).
    """
    ser = [{"label": s["label"], "points": [(x, y) for x, y in s["points"] if x is not None and y is not None]}
           for s in series]
    ser = [s for s in ser if s["points"]]
    if not ser:
        return _empty(width, height, title, "chart lines")
    xt = _padded([x for s in ser for x, _ in s["points"]])
    yt = _padded([y for s in ser for _, y in s["points"]])
    f = _Frame(width, height, x0=xt[0], x1=xt[-1], y0=yt[0], y1=yt[-1])
    body = f.y_axis(yt, y_label) + f.x_axis(xt, x_label)
    for k, s in enumerate(ser):
        colour = SERIES[k % len(SERIES)]
        pts = sorted(s["points"])
        coords = " ".join(f"{_num(f.px(x))},{_num(f.py(y))}" for x, y in pts)
        body.append(f'<polyline class="series" points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            body.append(f'<circle cx="{_num(f.px(x))}" cy="{_num(f.py(y))}" r="3" fill="{colour}">'
                        f'<title>{escape(s["label"])}: ({escape(_label(x))}, {escape(_label(y))})</title></circle>')
        ly = f.top + 4 + 14 * k
        body.append(f'<rect x="{f.left + 10}" y="{ly}" width="12" height="3" fill="{colour}"/>')
        body.append(f'<text x="{f.left + 27}" y="{ly + 4}" font-size="11">{escape(s["label"])}</text>')
    return _wrap(width, height, title, body, "chart lines")
