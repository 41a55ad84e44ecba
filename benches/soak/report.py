#!/usr/bin/env python3
"""Formats the soak's results (written by benches/soak/run.sh) and checks them.

usage: report.py SAMPLES.csv COUNTS.csv SUMMARY.txt LOG-SUMMARY.txt UNEXPECTED.txt OUT.md OUT.svg
                 FAILURES.txt

SAMPLES.csv: one row a second from benches/flood/sample.py (phase "load", then "after").
COUNTS.csv: the clients' final counts (kind,status,class,count). SUMMARY.txt: key=value lines
from run.sh. LOG-SUMMARY.txt: precond's WARN/ERROR lines grouped (uniq -c). UNEXPECTED.txt: the
first unexpected answers wrk saw (may be empty). Writes the markdown
report to OUT.md (and prints it), the chart to OUT.svg, and one line per failed check to
FAILURES.txt. Python standard library only.
"""

import csv
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "flood"))
import chart  # noqa: E402

CLASSES = ["ok", "expected_refusals", "busy", "closed", "unexpected"]
CLASS_TEXT = {
    "ok": "ok (2xx)",
    "expected_refusals": "expected refusals (412, 428, 408)",
    "busy": "503 write-busy",
    "closed": "closed / hung up",
    "unexpected": "unexpected",
}
CLASS_COLOUR = {
    "ok": "#59a14f",
    "expected_refusals": "#4e79a7",
    "busy": "#f28e2b",
    "closed": "#9c755f",
    "unexpected": "#e15759",
}
MiB = 1 << 20


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in list(r.items()):
            if k == "phase":
                continue
            try:
                r[k] = float(v) if v not in ("", None) else None
            except ValueError:
                r[k] = None
    return rows


def summary(path):
    info = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            if k:
                info[k] = v
    return info


def num(info, key, default=0.0):
    try:
        return float(info.get(key, ""))
    except ValueError:
        return default


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def windows(load_rows, smoke):
    """(label A, rows A, label B, rows B): the baseline and the end of the run."""
    if not load_rows:
        return "", [], "", []
    t0 = load_rows[0]["t_s"]
    end = load_rows[-1]["t_s"] - t0
    rel = [(r["t_s"] - t0, r) for r in load_rows]
    if smoke:
        half = end / 2
        a = [r for t, r in rel if t < half]
        b = [r for t, r in rel if t >= half]
        return "first half", a, "second half", b
    a = [r for t, r in rel if 60 <= t < 120]
    b = [r for t, r in rel if t >= end - 60]
    return "second minute", a, "last minute", b


def pct(a, b):
    return (b - a) / a * 100 if a else float("nan")


def analyse(rows, counts, info):
    smoke = info.get("smoke") == "1"
    load_rows = [r for r in rows if r["phase"] == "load"]
    la, a, lb, b = windows(load_rows, smoke)
    tol = num(info, "smoke_flat_pct" if smoke else "flat_pct", 5)
    res = {"smoke": smoke, "label_a": la, "label_b": lb, "tol": tol, "flat": {}}
    for name in ("rss_kib", "fds"):
        ma, mb = mean(r[name] for r in a), mean(r[name] for r in b)
        res["flat"][name] = (ma, mb, pct(ma, mb))
    res["window_a"] = (a[0]["t_s"], a[-1]["t_s"]) if a else None
    res["window_b"] = (b[0]["t_s"], b[-1]["t_s"]) if b else None
    totals = dict.fromkeys(CLASSES, 0)
    for c in counts:
        totals[c["class"]] = totals.get(c["class"], 0) + int(c["count"])
    res["totals"] = totals
    res["unexpected"] = [c for c in counts if c["class"] == "unexpected"]
    res["busy"] = [c for c in counts if c["class"] == "busy"]
    res["peak_store"] = max([r.get("precond_store_bytes") or 0 for r in rows] + [0])
    res["peak_entries"] = max([r.get("precond_store_entries") or 0 for r in rows] + [0])
    last = rows[-1]
    res["evicted_size"] = last.get("precond_store_evictions_total:size") or 0
    res["evicted_expired"] = last.get("precond_store_evictions_total:expired") or 0
    res["upstream_failures"] = last.get("precond_upstream_failures_total") or 0
    res["rejected"] = last.get("precond_rejected_total") or 0
    res["required"] = last.get("precond_required_total") or 0
    res["forwarded"] = last.get("precond_forwarded_total") or 0
    res["rss_peak"] = max([r["rss_kib"] or 0 for r in load_rows] + [0])
    res["fds_peak"] = max([r["fds"] or 0 for r in load_rows] + [0])
    res["rss_first"] = load_rows[0]["rss_kib"] if load_rows else None
    res["rss_last"] = load_rows[-1]["rss_kib"] if load_rows else None
    res["load_s"] = (load_rows[-1]["t_s"] - load_rows[0]["t_s"]) if load_rows else 0
    # when the store first reached 95 % of max_bytes
    mb = num(info, "max_bytes")
    full = next((r for r in load_rows if (r.get("precond_store_bytes") or 0) >= 0.95 * mb), None)
    res["full_at"] = (full["t_s"] - load_rows[0]["t_s"]) if full else None
    return res


def checks(res, info):
    out = []
    for name, text in (("rss_kib", "RSS"), ("fds", "open fds")):
        ma, mb, d = res["flat"][name]
        unit = (lambda v: f"{v / 1024:.1f} MiB") if name == "rss_kib" else (lambda v: f"{v:.1f}")
        ok = d == d and abs(d) <= res["tol"]
        out.append(
            (
                f"{text} flat: mean of the {res['label_b']} {unit(mb)} vs the {res['label_a']} "
                f"{unit(ma)}: {d:+.1f} % (within ±{res['tol']:g} %"
                + (", loose: smoke run" if res["smoke"] else "")
                + ")",
                ok,
            )
        )
    n = res["totals"].get("unexpected", 0)
    detail = ", ".join(f"{c['kind']} {c['status']} × {c['count']}" for c in res["unexpected"])
    out.append((f"unexpected statuses: {n}" + (f" ({detail})" if detail else "") + " (must be 0)", n == 0))
    for r in ("guard", "enforce"):
        e = int(num(info, f"wrk_{r}_sockerr"))
        out.append((f"wrk ({r}) socket errors: {e} (must be 0)", e == 0))
    mb = num(info, "max_bytes")
    out.append(
        (
            f"precond_store_bytes: peak {res['peak_store'] / MiB:.2f} MiB over all samples "
            f"(bound: max_bytes = {mb / MiB:.2f} MiB)",
            res["peak_store"] <= mb,
        )
    )
    return out


def markdown(res, info, counts, results, log_summary, unexpected):
    smoke = res["smoke"]
    out = []
    out.append("# precond soak" + (" (smoke run)" if smoke else ""))
    out.append("")
    out.append(f"- date: {info.get('date', '?')} (load average at the end: {info.get('loadavg', '?')})")
    out.append(f"- machine: {info.get('machine', '?')}")
    out.append(f"- nginx: {info.get('nginx', '?')}; wrk: {info.get('wrk', '?')}")
    out.append(f"- precond: {info.get('precond', '?')}")
    out.append(
        f"- precond, 2 threads: /g guard (policy {info.get('guard_policy', '?')}), /e enforce "
        "(require PUT, PATCH, DELETE; write_wait 5s, write_body_timeout 3s: defaults); "
        f"`[store] max_bytes = {info.get('max_bytes_text', '?')}`, `ttl = {info.get('ttl', '?')}`, "
        f"`capacity = {int(num(info, 'capacity')):,}`; RUST_LOG=warn"
    )
    out.append(
        f"- load, {info.get('duration', '?')}: wrk -t{info.get('connections')} "
        f"-c{info.get('connections')} on each route ({info.get('items')} items per route), "
        f"{info.get('tricklers')} trickling and {info.get('aborters')} aborting clients "
        "(benches/soak/slow.py)"
    )
    out.append("")
    out.append("| | RSS | open fds |")
    out.append("|---|---:|---:|")
    ra, rb, rd = res["flat"]["rss_kib"]
    fa, fb, fd = res["flat"]["fds"]
    out.append(f"| mean, {res['label_a']} | {ra / 1024:.1f} MiB | {fa:.1f} |")
    out.append(f"| mean, {res['label_b']} | {rb / 1024:.1f} MiB | {fb:.1f} |")
    out.append(f"| change | **{rd:+.1f} %** | **{fd:+.1f} %** |")
    out.append(f"| peak during the load | {res['rss_peak'] / 1024:.1f} MiB | {res['fds_peak']:.0f} |")
    out.append("")
    full = res["full_at"]
    out.append(
        f"Store: peak {res['peak_store'] / MiB:.2f} MiB of {num(info, 'max_bytes') / MiB:.2f} MiB "
        f"({res['peak_entries']:,.0f} entries at most)"
        + (f", within 95 % of max_bytes after {full:.0f} s" if full is not None else ", never within 95 % of max_bytes")
        + f"; evicted {res['evicted_size']:,.0f} for size, {res['evicted_expired']:,.0f} expired. "
        f"precond forwarded {res['forwarded']:,.0f} requests, answered {res['rejected']:,.0f} 412s "
        f"and {res['required']:,.0f} 428s at the edge, counted {res['upstream_failures']:,.0f} "
        f"upstream failures; the origin logged {int(num(info, 'origin_requests')):,} requests."
    )
    out.append("")
    wrk = []
    for r in ("guard", "enforce"):
        wrk.append(
            f"{r}: {int(num(info, f'wrk_{r}_requests')):,} requests ({num(info, f'wrk_{r}_rps'):,.0f}/s), "
            f"p99 {info.get(f'wrk_{r}_p99', '?')}, max {info.get(f'wrk_{r}_max', '?')}, "
            f"socket errors {int(num(info, f'wrk_{r}_sockerr'))}"
        )
    out.append("wrk: " + "; ".join(wrk) + ".")
    out.append("")
    out.append("Checks (run.sh fails when one does not hold):")
    out.append("")
    for text, ok in results:
        out.append(f"- {text}: **{'met' if ok else 'NOT met'}**")
    out.append("")
    if smoke:
        out.append(
            "Smoke run: too short for the minute windows, so the second half is compared with the "
            "first, within a loose tolerance (the store is still filling in the first seconds); it "
            "only catches a gross leak. The full run (DURATION >= 2m) compares the last minute "
            "with the second, within 5 %."
        )
        out.append("")
    out.append("Answers by kind of request (all clients, the whole run):")
    out.append("")
    out.append("| request | status | class | count |")
    out.append("|---|---|---|---:|")
    order = {c: i for i, c in enumerate(CLASSES)}
    for c in sorted(counts, key=lambda c: (c["kind"].split("/")[0], c["kind"], order.get(c["class"], 9), c["status"])):
        cls = CLASS_TEXT.get(c["class"], c["class"])
        if c["class"] == "unexpected":
            cls = f"**{cls}**"
        out.append(f"| {c['kind']} | {c['status']} | {cls} | {int(c['count']):,} |")
    t = res["totals"]
    out.append("")
    out.append(
        "Totals: " + ", ".join(f"{CLASS_TEXT[k]} {t.get(k, 0):,}" for k in CLASSES) + ". "
        f"The 503 write-busy answers ({t.get('busy', 0):,}) are expected under contention: an "
        "enforce write waited write_wait (5s) for its resource's lock, held by other writes "
        "(trickled uploads hold it up to write_body_timeout, 3s)."
    )
    out.append("")
    out.append(
        "Kinds: *read* GET an item; *match-get*/*match-put* GET an item, then PUT it with "
        "`If-Match: \"v1\"` (its current tag); *stale* PUT with `If-Match: \"v0\"`; *new* PUT "
        "`If-None-Match: *` to a new path (the store learns one more resource each time: what "
        "fills it); *plain* PUT without a precondition (guard forwards it; enforce requires one: "
        "428). *slow/trickle-body-…*: a PUT whose body comes one byte every 0.25 s (enforce: "
        "write_body_timeout ends it with 408); *slow/trickle-headers*: a GET whose head comes a few "
        "bytes at a time; *slow/abort-…*: the client hangs up after half a body, half a head, or "
        "before reading the answer (*aborted*)."
    )
    if unexpected.strip():
        out.append("")
        out.append("The first unexpected answers (time, request, status, start of the body):")
        out.append("")
        out.append("```")
        out.extend(line.rstrip()[:200] for line in unexpected.splitlines()[:20])
        out.append("```")
    if log_summary.strip():
        out.append("")
        out.append(
            f"precond logged {int(num(info, 'precond_log_lines')):,} WARN/ERROR lines; the most "
            "frequent (numbers replaced by N):"
        )
        out.append("")
        out.append("```")
        out.extend(line.rstrip() for line in log_summary.splitlines())
        out.append("```")
    out.append("")
    out.append("![RSS, fds, store and answers over time](soak.svg)")
    return "\n".join(out) + "\n"


def svg(rows, res, info):
    t0 = rows[0]["t_s"]
    t = [r["t_s"] - t0 for r in rows]
    phases = []
    if res["window_a"]:
        a0, a1 = res["window_a"]
        phases.append((a0 - t0, a1 - t0 + 1, res["label_a"]))
    if res["window_b"]:
        b0, b1 = res["window_b"]
        phases.append((b0 - t0, b1 - t0 + 1, res["label_b"]))
    after = next((r["t_s"] - t0 for r in rows if r["phase"] == "after"), None)
    if after is not None:
        phases.append((after, t[-1], "load ended"))
    # per second, averaged over 5 s (the clients write their counts once a second, not in step
    # with the sampler: a 1 s difference alternates between 0 and twice the rate)
    span = 5
    rates = {c: [] for c in CLASSES}
    for i, cur in enumerate(rows):
        prev = rows[max(i - span, 0)]
        dt = cur["t_s"] - prev["t_s"]
        for c in CLASSES:
            a, b = prev.get(c), cur.get(c)
            rates[c].append(None if a is None or b is None or dt <= 0 else max(b - a, 0) / dt)
    mb = num(info, "max_bytes") / MiB
    ra, rb, _ = res["flat"]["rss_kib"]
    fa, fb, _ = res["flat"]["fds"]
    panels = [
        {
            "title": "precond resident memory (VmRSS)",
            "unit": "MiB",
            "series": [{"label": "RSS", "values": [r["rss_kib"] / 1024 if r["rss_kib"] else None for r in rows], "colour": "#4e79a7"}],
            "hlines": [
                {"value": ra / 1024, "label": f"mean, {res['label_a']}: {ra / 1024:.1f}", "colour": "#888"},
                {"value": rb / 1024, "label": f"mean, {res['label_b']}: {rb / 1024:.1f}", "colour": "#e15759"},
            ],
        },
        {
            "title": "open file descriptors",
            "unit": "/proc/PID/fd",
            "series": [{"label": "fds", "values": [r["fds"] for r in rows], "colour": "#f28e2b"}],
            "hlines": [
                {"value": fa, "label": f"mean, {res['label_a']}: {fa:.1f}", "colour": "#888"},
                {"value": fb, "label": f"mean, {res['label_b']}: {fb:.1f}", "colour": "#e15759"},
            ],
        },
        {
            "title": "store bytes (precond_store_bytes)",
            "unit": "MiB",
            "series": [{"label": "store bytes", "values": [
                None if r.get("precond_store_bytes") is None else r["precond_store_bytes"] / MiB for r in rows
            ], "colour": "#59a14f"}],
            "hlines": [{"value": mb, "label": f"max_bytes {mb:.1f} MiB", "colour": "#e15759"}],
        },
        {
            "title": "store entries (precond_store_entries)",
            "unit": "resources",
            "series": [{"label": "entries", "values": [r.get("precond_store_entries") for r in rows], "colour": "#b07aa1"}],
        },
        {
            "title": "answers per second, by class (all clients; 5 s average)",
            "unit": "1/s",
            "series": [
                {"label": CLASS_TEXT[c], "values": rates[c], "colour": CLASS_COLOUR[c]}
                for c in ("ok", "expected_refusals", "closed")
            ],
        },
        {
            "title": "503 write-busy and unexpected answers, cumulative",
            "unit": "answers",
            "series": [
                {"label": CLASS_TEXT[c], "values": [r.get(c) for r in rows], "colour": CLASS_COLOUR[c]}
                for c in ("busy", "unexpected")
            ],
            "ymin": 0,
        },
    ]
    subtitle = [
        f"{info.get('date', '')}: {info.get('machine', '')}",
        f"precond {info.get('precond', '')}; /g guard ({info.get('guard_policy', '')}), /e enforce; "
        f"max_bytes {info.get('max_bytes_text', '')}, ttl {info.get('ttl', '')}",
        f"{info.get('duration', '')}: wrk -c{info.get('connections', '')} per route, "
        f"{info.get('tricklers', '')} trickling and {info.get('aborters', '')} aborting clients",
    ]
    return chart.chart("precond soak: memory, descriptors and answers over time", subtitle, t, panels, phases)


def main():
    if len(sys.argv) != 9:
        sys.exit(__doc__)
    rows = load(sys.argv[1])
    if not rows:
        sys.exit("no samples in " + sys.argv[1])
    with open(sys.argv[2], newline="") as f:
        counts = list(csv.DictReader(f))
    info = summary(sys.argv[3])
    with open(sys.argv[4]) as f:
        log_summary = f.read()
    with open(sys.argv[5]) as f:
        unexpected = f.read()
    res = analyse(rows, counts, info)
    results = checks(res, info)
    md = markdown(res, info, counts, results, log_summary, unexpected)
    sys.stdout.write(md)
    with open(sys.argv[6], "w") as f:
        f.write(md)
    with open(sys.argv[7], "w") as f:
        f.write(svg(rows, res, info))
    with open(sys.argv[8], "w") as f:
        for text, ok in results:
            if not ok:
                f.write(text + "\n")


if __name__ == "__main__":
    main()
