#!/usr/bin/env python3
"""Formats the load benchmark's results (written by run.sh): a markdown report and an SVG chart.

usage: report.py RESULTS.csv MACHINE.txt OUT.md OUT.svg [PROBE.csv]

Prints the markdown report and writes it to OUT.md; writes a grouped bar chart of req/s per
workload (nginx proxy / bare Pingora / precond pass / precond guard / precond guard with the fence
off) to OUT.svg. PROBE.csv (rows appended by probe.py --csv) adds the section "Lost-update probe".
Python standard library only.
"""

import csv
import math
import sys
from xml.sax.saxutils import escape

ALL_TARGETS = ["nginx", "bare", "pass", "guard", "nofence"]
WORKLOADS = ["get", "put-match", "put-stale", "put-many"]
COLOURS = {
    "nginx": "#8c8c8c",
    "bare": "#59a14f",
    "pass": "#4e79a7",
    "guard": "#e15759",
    "nofence": "#f28e2b",
}
# The targets that are precond guard: their put-stale 412s are answered at the edge.
GUARDS = ("guard", "nofence")
WORKLOAD_TEXT = {
    "get": "GET /items/1",
    "put-match": 'PUT, If-Match: "v1" (current)',
    "put-stale": 'PUT, If-Match: "v0" (stale)',
    "put-many": 'PUT /items/1..1000, If-Match: "v1"',
}


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["rps"] = float(r["rps"])
    return {(r["target"], r["workload"]): r for r in rows}


def load_probe(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def machine(path):
    info = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            info[k] = v
    return info


def ratio(a, b):
    return a["rps"] / b["rps"] if a and b and b["rps"] > 0 else float("nan")


def fmt_ratio(x):
    return "–" if math.isnan(x) else f"{x:.2f}×"


def targets(res):
    return [t for t in ALL_TARGETS if any(tt == t for (tt, _) in res)]


def labels(res):
    return {t: next(r["label"] for (tt, _), r in res.items() if tt == t) for t in targets(res)}


def markdown(res, info, probe=None):
    TARGETS = targets(res)
    label = labels(res)
    out = []
    out.append("# precond end-to-end load benchmark")
    out.append("")
    out.append(f"- date: {info.get('date', '?')} (machine {info.get('busy_before', '?')}% busy just before the load)")
    out.append(f"- machine: {info.get('machine', '?')}")
    out.append(f"- nginx: {info.get('nginx', '?')}; wrk: {info.get('wrk', '?')}")
    out.append(f"- precond: {info.get('precond', '?')}")
    out.append(f"- load: {info.get('load', '?')}")
    out.append(f"- setup: {info.get('setup', '?')}")
    if info.get("burst"):
        out.append(
            "- convergence after a write burst (precond guard, `policy = \"mismatch\"`): "
            + info["burst"]
        )
    out.append(
        "- caveat: wrk, the proxy under test and the origin share the same cores (loopback); "
        "the load generator competes for CPU with what it measures, so compare the ratios of "
        "one run, not absolute numbers across machines."
    )
    out.append("")
    out.append(
        "| target | workload | req/s | p50 ms | p99 ms | vs nginx | vs precond pass "
        "| origin requests | responses | proxy CPU µs/req | other CPU |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for w in WORKLOADS:
        for t in TARGETS:
            r = res.get((t, w))
            if not r:
                continue
            out.append(
                f"| {label[t]} | {w} | {r['rps']:,.0f} | {float(r['p50_ms']):.2f} "
                f"| {float(r['p99_ms']):.2f} | {fmt_ratio(ratio(r, res.get(('nginx', w))))} "
                f"| {fmt_ratio(ratio(r, res.get(('pass', w))))} "
                f"| {int(r['origin_requests']):,} | {r['status']} "
                f"| {float(r['proxy_cpu_us_per_req']):.1f} | {r['other_cpu_pct']}% |"
            )
    out.append("")
    out.append(
        "Workloads: `get` = GET /items/1; `put-match` = PUT with `If-Match: \"v1\"` (the current "
        "tag; forwarded by all; under guard every write names one tag of one resource, so the "
        "in-flight write fence is on their path); `put-stale` = PUT with `If-Match: \"v0\"` (a "
        "replaced tag; every proxy but precond guard forwards it and the origin, which never "
        "checks `If-Match`, accepts the lost update; precond guard answers 412 itself); "
        "`put-many` = PUT with `If-Match: \"v1\"` to /items/1 … /items/1000 in turn (distinct "
        "resources: forwarded by all; what the fence costs writes that never share a resource). "
        "*fence off*: precond guard with the same policy and `fence_wait = \"0s\"`, measured in "
        "the same run to isolate the fence's cost. "
        "*bare Pingora*: `examples/bare_pingora.rs`, the smallest Pingora proxy (same Pingora, "
        "2 threads), to tell what Pingora costs from what precond adds. *origin requests*: lines "
        "in the origin's access log during the measured run (wrk's count can be a little lower: "
        "requests in flight when wrk stops). *proxy CPU µs/req*: user+system CPU time of the "
        "proxy under test during the run, per request wrk completed (less sensitive than req/s to "
        "how busy the machine was). *other CPU*: share of the machine's CPU time used by "
        "processes other than wrk, the origin and the proxies during the run (kernel time not "
        "charged to a process, e.g. some loopback softirq work, lands here too): when it is "
        "high, that row is skewed."
    )
    out.append("")
    out.append("Performance targets:")
    out.append("")
    checks = [
        (
            "edge 412 throughput (guard put-stale) ≥ 2× precond pass put-match",
            ratio(res.get(("guard", "put-stale")), res.get(("pass", "put-match"))),
            2.0,
        ),
        (
            "guard get ≥ 0.9× precond pass get",
            ratio(res.get(("guard", "get")), res.get(("pass", "get"))),
            0.9,
        ),
        (
            "guard put-many ≥ 0.9× guard (fence off) put-many (fence cost on writes to distinct "
            "resources)",
            ratio(res.get(("guard", "put-many")), res.get(("nofence", "put-many"))),
            0.9,
        ),
        (
            "guard put-stale ≥ 0.9× guard (fence off) put-stale (edge 412s)",
            ratio(res.get(("guard", "put-stale")), res.get(("nofence", "put-stale"))),
            0.9,
        ),
    ]
    for text, x, goal in checks:
        verdict = "?" if math.isnan(x) else ("met" if x >= goal else "NOT met")
        shown = "–" if math.isnan(x) else f"{x:.3f}×"
        out.append(f"- {text}: {shown}: **{verdict}**")
    for w in ["get", "put-match"]:
        x = ratio(res.get(("pass", w)), res.get(("nginx", w)))
        out.append(f"- precond pass vs nginx, {w}: {fmt_ratio(x)} (reported)")
    if "bare" in TARGETS:
        for w in ["get", "put-match"]:
            x = ratio(res.get(("pass", w)), res.get(("bare", w)))
            out.append(
                f"- precond pass vs bare Pingora, {w}: {fmt_ratio(x)} (reported: what precond's "
                "pass path adds to Pingora)"
            )
        x = ratio(res.get(("bare", "get")), res.get(("nginx", "get")))
        out.append(f"- bare Pingora vs nginx, get: {fmt_ratio(x)} (reported)")
    x = ratio(res.get(("guard", "put-match")), res.get(("pass", "put-match")))
    out.append(f"- guard put-match vs pass put-match: {fmt_ratio(x)} (reported)")
    x = ratio(res.get(("guard", "put-match")), res.get(("nofence", "put-match")))
    out.append(
        f"- guard put-match vs guard (fence off) put-match: {fmt_ratio(x)} (reported: every write "
        "names one tag of one resource; the fence lets them through after the first answer)"
    )
    warnings = int(info.get("precond_log_warnings") or 0)
    closed = int(info.get("precond_log_closed") or 0)
    if warnings:
        out.append("")
        out.append(
            f"precond logged {warnings} WARN/ERROR lines, {closed} of them wrk closing connections "
            "with requests in flight at the end of a run (`Downstream ConnectionClosed`)."
        )
    out.append("")
    out.append("![req/s per workload](results.svg)")
    if probe:
        out.append("")
        out.extend(probe_markdown(probe, info))
    return "\n".join(out) + "\n"


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _reasons(text):
    """ "superseded:12 weak_only:8" -> {"superseded": 12, "weak_only": 8} """
    out = {}
    for part in (text or "").split():
        k, _, v = part.rpartition(":")
        if k:
            out[k] = _int(v) or 0
    return out


def probe_outcome(r):
    """The 'lost' cell of a probe row."""
    total = (_int(r.get("clients")) or 0) * (_int(r.get("updates")) or 0)
    applied, stopped = _int(r.get("applied")), _int(r.get("stopped")) or 0
    reasons = _reasons(r.get("reasons"))
    if stopped:
        if applied == 0 and set(reasons) == {"weak_only"}:
            return "0 applied, every write refused `weak_only`"
        return f"{applied} applied; {stopped} clients stopped ({r.get('reasons')})"
    lost = _int(r.get("lost"))
    if lost is None:
        return "–"
    shown = f"**{lost}** / {total}"
    if applied is not None and applied != total:
        shown += f" (of {applied} applied)"
    return shown


def probe_markdown(rows, info):
    out = []
    out.append("## Lost-update probe (8 × 30 read-modify-write, one resource)")
    out.append("")
    out.append(
        "| setup | origin tags | lost | 412s seen by clients | writes that reached the origin "
        "| fence: waited / refused after waiting / bypassed | wall time |"
    )
    out.append("|---|---|---|---:|---:|---|---:|")
    for r in rows:
        fence = "–"
        if r.get("mode") == "guard" and r.get("fence_waits") not in (None, ""):
            fence = f"{r['fence_waits']} / {r['fence_refused']} / {r['fence_bypassed']}"
        refused = _int(r.get("refused_412"))
        reasons = _reasons(r.get("reasons"))
        refused_cell = "–" if refused is None else f"{refused:,}"
        if refused and reasons:
            by_reason = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items()))
            refused_cell += f" ({by_reason})"
        wall = r.get("wall_s")
        wall_cell = f"{float(wall):.2f} s" if wall not in (None, "") else "–"
        label = r.get("label", r.get("row", "?"))
        errors = r.get("errors")
        if errors:
            label += f" (**run broke**: {errors})"
        out.append(
            f"| {label} | {r.get('tags', '?')} | {probe_outcome(r)} | {refused_cell} "
            f"| {r.get('origin_writes') or '–'} | {fence} | {wall_cell} |"
        )
    out.append("")
    checks = []
    by_row = {r.get("row"): r for r in rows}
    for row, text, limit in [
        ("guard-superseded-strong", "guard superseded (fence on), strong tags: at most 2 lost", 2),
        ("guard-superseded-weak", "guard superseded (fence on), weak tags: at most 2 lost", 2),
        ("enforce-none", "enforce, no tags: none lost", 0),
    ]:
        r = by_row.get(row)
        lost = _int(r.get("lost")) if r else None
        ok = lost is not None and lost <= limit and not r.get("errors")
        verdict = "?" if lost is None else ("met" if ok else "NOT met")
        checks.append(f"- {text}: {'–' if lost is None else lost}: **{verdict}**")
    out.append("Checks (run.sh fails when one is not met):")
    out.append("")
    out.extend(checks)
    out.append("")
    out.append(
        "Each client loops: GET the resource (`{\"n\": k}` and its ETag), PUT `{\"n\": k+1}` with "
        "`If-Match` set to that ETag; a 2xx is one of its 30 updates, a 412 is retried from a fresh "
        "GET. *lost* = 240 − the final n: updates the clients were told succeeded that the "
        "resource does not reflect. Each precond row runs a fresh precond (2 threads, defaults) in "
        "front of the bundled demo origin (`precond origin --tags strong|weak|none`, an API that "
        "never checks `If-Match`); *fence off* is `fence_wait = \"0s\"` (the figures before the "
        "fence). Guard `mismatch` in front of weak tags refuses every weak `If-Match` "
        "(`weak_only`) and no write can succeed: each client stops at its first such 412 instead "
        "of retrying forever. *writes that reached the origin*: update PUTs answered by the "
        "origin (answers without `Precond-Decision`, counted by the clients; the creating PUT is "
        "not counted; run.sh notes it when a guard row's "
        "`precond_forwarded_conditional_writes_total` or edge 412 count disagrees with the "
        "clients'). *fence* (guard rows): precond's `precond_fence_waits_total`, "
        "`precond_fence_refused_total` and `precond_fence_bypassed_total`. The 412 reasons are "
        "the problem bodies' `reason`. Independent of the load runs' duration"
        + (f"; the probe took {info['probe_wall']} s in all." if info.get("probe_wall") else ".")
    )
    return out


def nice_step(top, ticks=5):
    raw = top / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def short(v):
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def svg(res, info):
    TARGETS = targets(res)
    label = labels(res)
    left, right, top, bottom = 80, 20, 104, 92
    # wide enough for a readable bar per target and workload (at least 36 px each)
    width = max(820, math.ceil(left + right + len(WORKLOADS) * len(TARGETS) * 36 / 0.82))
    legend_w = sum(20 + 7.2 * len(label[t]) + 28 for t in TARGETS)
    legend_rows = 1 if legend_w <= width - left - right else 2
    height = 510 + 20 * (legend_rows - 1)
    bottom += 20 * (legend_rows - 1)
    plot_w, plot_h = width - left - right, height - top - bottom
    vmax = max([r["rps"] for r in res.values()] + [1])
    step = nice_step(vmax)
    ymax = step * math.ceil(vmax * 1.08 / step)
    y = lambda v: top + plot_h - v / ymax * plot_h  # noqa: E731
    group_w = plot_w / len(WORKLOADS)
    bar_w = group_w * 0.82 / len(TARGETS)

    e = []
    add = e.append
    add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">'
    )
    add(f'<rect width="{width}" height="{height}" fill="white"/>')
    add(
        f'<text x="{left}" y="28" font-size="18" font-weight="bold">precond end-to-end load: '
        "requests/s (higher is better)</text>"
    )
    subtitle = [
        f"{info.get('date', '')}: {info.get('machine', '')}",
        f"{info.get('load', '')}; {info.get('nginx', '')}",
        f"precond {info.get('precond', '')}",
    ]
    for i, line in enumerate(subtitle):
        line = line if len(line) <= 125 else line[:122] + "..."
        add(f'<text x="{left}" y="{50 + 15 * i}" font-size="11" fill="#444">{escape(line)}</text>')

    # grid and y axis
    v = 0.0
    while v <= ymax + 1e-9:
        yy = y(v)
        add(
            f'<line x1="{left}" y1="{yy:.1f}" x2="{width - right}" y2="{yy:.1f}" '
            f'stroke="{"#333" if v == 0 else "#e3e3e3"}" stroke-width="1"/>'
        )
        add(
            f'<text x="{left - 8}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">'
            f"{short(v)}</text>"
        )
        v += step
    add(
        f'<text x="18" y="{top + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 18 {top + plot_h / 2:.1f})">requests/s</text>'
    )

    # bars
    for gi, w in enumerate(WORKLOADS):
        gx = left + gi * group_w + (group_w - bar_w * len(TARGETS)) / 2
        for ti, t in enumerate(TARGETS):
            r = res.get((t, w))
            if not r:
                continue
            x = gx + ti * bar_w
            yy = y(r["rps"])
            add(
                f'<rect x="{x + 2:.1f}" y="{yy:.1f}" width="{bar_w - 4:.1f}" '
                f'height="{top + plot_h - yy:.1f}" fill="{COLOURS[t]}"><title>'
                f'{escape(label[t])}, {w}: {r["rps"]:,.0f} req/s, p99 {float(r["p99_ms"]):.2f} ms, '
                f'{escape(r["status"])}</title></rect>'
            )
            add(
                f'<text x="{x + bar_w / 2:.1f}" y="{yy - 5:.1f}" font-size="11" '
                f'text-anchor="middle">{short(r["rps"])}</text>'
            )
            code = r.get("expected", "")
            if code and not code.startswith("2"):
                note = f"{code} at edge" if t in GUARDS else code
                add(
                    f'<text x="{x + bar_w / 2:.1f}" y="{yy - 19:.1f}" font-size="10" '
                    f'font-weight="bold" text-anchor="middle" fill="{COLOURS[t]}">'
                    f"{escape(note)}</text>"
                )
        cx = left + gi * group_w + group_w / 2
        add(
            f'<text x="{cx:.1f}" y="{top + plot_h + 20:.1f}" font-size="13" font-weight="bold" '
            f'text-anchor="middle">{w}</text>'
        )
        add(
            f'<text x="{cx:.1f}" y="{top + plot_h + 36:.1f}" font-size="11" fill="#444" '
            f'text-anchor="middle">{escape(WORKLOAD_TEXT[w])}</text>'
        )

    # legend (on two rows when one is too narrow)
    lx, ly = left, height - 26 - 20 * (legend_rows - 1)
    for t in TARGETS:
        step = 20 + 7.2 * len(label[t]) + 28
        if lx > left and lx + step - 28 > width - right:
            lx, ly = left, ly + 20
        add(f'<rect x="{lx}" y="{ly - 11}" width="14" height="14" fill="{COLOURS[t]}"/>')
        add(f'<text x="{lx + 20}" y="{ly}" font-size="12">{escape(label[t])}</text>')
        lx += step
    add("</svg>")
    return "\n".join(e) + "\n"


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    res = load(sys.argv[1])
    info = machine(sys.argv[2])
    probe = load_probe(sys.argv[5]) if len(sys.argv) == 6 else None
    md = markdown(res, info, probe)
    sys.stdout.write(md)
    with open(sys.argv[3], "w") as f:
        f.write(md)
    with open(sys.argv[4], "w") as f:
        f.write(svg(res, info))


if __name__ == "__main__":
    main()
