"""Time-series charts as SVG, shared by benches/flood/report.py and benches/soak/report.py.

One chart: stacked panels over a shared time axis; each panel has its own y axis, its series
(lines), optional horizontal reference lines (a bound, a baseline) and shaded phases (what the
benchmark was doing). Python standard library only.
"""

import math
from xml.sax.saxutils import escape

PALETTE = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#9c755f", "#edc948"]
PHASE_FILL = ["#f3f6fa", "#fbf3ec", "#f1f8ef", "#f8f0f6"]


def nice_step(span, ticks=4):
    if span <= 0:
        return 1.0
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def fmt_tick(v):
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:g}k"
    if float(v).is_integer():
        return f"{int(v)}"
    return f"{v:g}"


def phases_of(t, labels):
    """[(start, end, label)] for runs of equal labels (consecutive samples)."""
    out = []
    for i, (x, lab) in enumerate(zip(t, labels)):
        if out and out[-1][2] == lab:
            out[-1][1] = x
        else:
            if out:
                out[-1][1] = x  # a phase lasts until the next one starts
            out.append([x, x, lab])
    return [tuple(p) for p in out]


def chart(title, subtitle, t, panels, phases=(), width=960, panel_h=170, legend_phases=None):
    """title: str; subtitle: [str]; t: [seconds]; panels: [{"title", "unit", "series":
    [{"label", "values" (None for a gap), "colour"?}], "hlines": [{"value", "label", "colour"?}],
    "ymin"?: number}]; phases: [(start, end, label)], shaded in every panel (labels named in
    legend_phases, or all, are written above the first panel)."""
    left, right, top = 78, 24, 40 + 15 * len(subtitle) + 26
    gap = 46
    height = top + len(panels) * (panel_h + gap) + 10
    plot_w = width - left - right
    t_max = max(t) if t else 1.0
    t_max = t_max if t_max > 0 else 1.0
    x = lambda v: left + v / t_max * plot_w  # noqa: E731

    e = []
    add = e.append
    add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">'
    )
    add(f'<rect width="{width}" height="{height}" fill="white"/>')
    add(f'<text x="{left}" y="26" font-size="17" font-weight="bold">{escape(title)}</text>')
    for i, line in enumerate(subtitle):
        line = line if len(line) <= 140 else line[:137] + "..."
        add(f'<text x="{left}" y="{46 + 15 * i}" font-size="11" fill="#444">{escape(line)}</text>')

    step_t = nice_step(t_max, 8)
    for pi, p in enumerate(panels):
        y0 = top + pi * (panel_h + gap)
        # phases (a label is written above the first panel when the phase is wide enough and the
        # label does not run into the previous one; at the right edge it is aligned to the edge)
        label_end = -1.0
        for k, (a, b, lab) in enumerate(phases):
            if b <= a:
                continue
            fill = PHASE_FILL[k % len(PHASE_FILL)]
            add(
                f'<rect x="{x(a):.1f}" y="{y0}" width="{x(b) - x(a):.1f}" height="{panel_h}" '
                f'fill="{fill}"/>'
            )
            last = all(not later[2] for later in phases[k + 1:])
            if pi == 0 and lab and (legend_phases is None or lab in legend_phases):
                w = 5.6 * len(lab)
                if x(b) - x(a) < w and not last:
                    continue  # too narrow for its label (the chart's first seconds, say)
                lx, anchor = x(a) + 3, "start"
                if lx + w > width - right:
                    lx, anchor = width - right, "end"
                    start = lx - w
                else:
                    start = lx
                if start > label_end + 6:
                    add(
                        f'<text x="{lx:.1f}" y="{y0 - 5}" font-size="10" fill="#666" '
                        f'text-anchor="{anchor}">{escape(lab)}</text>'
                    )
                    label_end = start + w
        values = [v for s in p["series"] for v in s["values"] if v is not None]
        values += [h["value"] for h in p.get("hlines", [])]
        vmax = max(values + [0.0])
        vmin = min(values + [p.get("ymin", 0.0)])
        vmin = min(vmin, p.get("ymin", 0.0))
        step = nice_step((vmax - vmin) or 1.0)
        lo = step * math.floor(vmin / step)
        hi = step * math.ceil(vmax * 1.05 / step) if vmax > 0 else step
        if hi <= lo:
            hi = lo + step
        y = lambda v, y0=y0, lo=lo, hi=hi: y0 + panel_h - (v - lo) / (hi - lo) * panel_h  # noqa: E731
        v = lo
        while v <= hi + 1e-9:
            add(
                f'<line x1="{left}" y1="{y(v):.1f}" x2="{width - right}" y2="{y(v):.1f}" '
                f'stroke="{"#333" if v == lo else "#e3e3e3"}" stroke-width="1"/>'
            )
            add(
                f'<text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">'
                f"{fmt_tick(round(v, 6))}</text>"
            )
            v += step
        # x ticks
        tv = 0.0
        while tv <= t_max + 1e-9:
            add(
                f'<line x1="{x(tv):.1f}" y1="{y0 + panel_h}" x2="{x(tv):.1f}" '
                f'y2="{y0 + panel_h + 4}" stroke="#333"/>'
            )
            add(
                f'<text x="{x(tv):.1f}" y="{y0 + panel_h + 15}" font-size="10" '
                f'text-anchor="middle">{fmt_tick(tv)}</text>'
            )
            tv += step_t
        add(
            f'<text x="{width - right}" y="{y0 + panel_h + 28}" font-size="10" fill="#444" '
            f'text-anchor="end">seconds</text>'
        )
        add(
            f'<text x="{left}" y="{y0 - 18 if pi == 0 else y0 - 8}" font-size="12" '
            f'font-weight="bold">{escape(p["title"])}'
            + (f' <tspan font-weight="normal" fill="#444">({escape(p["unit"])})</tspan>' if p.get("unit") else "")
            + "</text>"
        )
        # reference lines; a label that would overlap an earlier one goes below its line
        taken = []
        for h in p.get("hlines", []):
            colour = h.get("colour", "#333")
            hy = y(h["value"])
            add(
                f'<line x1="{left}" y1="{hy:.1f}" x2="{width - right}" '
                f'y2="{hy:.1f}" stroke="{colour}" stroke-width="1.2" '
                f'stroke-dasharray="6 4"/>'
            )
            ty = hy - 4
            if any(abs(ty - t0) < 11 for t0 in taken):
                ty = hy + 12
            taken.append(ty)
            add(
                f'<text x="{width - right - 4}" y="{ty:.1f}" font-size="10" '
                f'text-anchor="end" fill="{colour}">{escape(h["label"])}</text>'
            )
        # series
        lx = left + 8
        for si, s in enumerate(p["series"]):
            colour = s.get("colour", PALETTE[si % len(PALETTE)])
            path, pen = [], False
            for tv, vv in zip(t, s["values"]):
                if vv is None:
                    pen = False
                    continue
                path.append(f'{"L" if pen else "M"}{x(tv):.1f},{y(vv):.1f}')
                pen = True
            if path:
                add(
                    f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" '
                    f'stroke-width="1.6" stroke-linejoin="round"/>'
                )
            if len(p["series"]) > 1 or s.get("label"):
                add(f'<rect x="{lx}" y="{y0 + 6}" width="12" height="3" fill="{colour}"/>')
                add(
                    f'<text x="{lx + 16}" y="{y0 + 11}" font-size="10">{escape(s["label"])}</text>'
                )
                lx += 16 + 6.2 * len(s["label"]) + 16
    add("</svg>")
    return "\n".join(e) + "\n"
