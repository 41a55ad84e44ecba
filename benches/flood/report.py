#!/usr/bin/env python3
"""Formats the key-flood benchmark's results (written by benches/flood/run.sh) and checks them.

usage: report.py SAMPLES.csv SUMMARY.txt OUT.md OUT.svg FAILURES.txt

SAMPLES.csv: one row a second from sample.py (phases idle, warmup, warm-settle, short,
short-settle, long, long-settle, end). SUMMARY.txt: key=value lines from run.sh (machine, knobs,
wrk's figures per scenario). Writes the markdown report to OUT.md (and prints it), the chart of
RSS, open fds and store bytes over time to OUT.svg, and one line per failed check to FAILURES.txt
(empty when every check holds). Python standard library only.
"""

import csv
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chart  # noqa: E402

SCENARIOS = ["short", "long"]
MIN_ALLOWANCE_KIB = 4096
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


def col(rows, name):
    return [r.get(name) for r in rows if r.get(name) is not None]


def in_phase(rows, *phases):
    return [r for r in rows if r["phase"] in phases]


def before(rows, phase):
    """The last sample before the first sample of `phase` or of its settle (a scenario shorter
    than the sampling interval has no sample of its own); None when there is none."""
    prev = None
    for r in rows:
        if r["phase"] in (phase, phase + "-settle"):
            return prev
        prev = r
    return prev


def delta(rows, phase, name):
    """How much counter `name` grew from just before `phase` to the end of `phase`'s settle."""
    start = before(rows, phase)
    span = in_phase(rows, phase, phase + "-settle")
    if not span:
        return None
    end = next((r[name] for r in reversed(span) if r.get(name) is not None), None)
    s = start.get(name) if start else 0.0
    if end is None or s is None:
        return None
    return end - s


def mib(kib):
    return kib / 1024.0


def fmt_mib(kib):
    return "–" if kib is None else f"{mib(kib):.1f} MiB"


def duration_text(seconds):
    if seconds is None or math.isnan(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def analyse(rows, info):
    idle = max(col(in_phase(rows, "idle"), "rss_kib") or [0])
    warm = max(col(in_phase(rows, "warmup", "warm-settle"), "rss_kib") or [idle])
    forced = info.get("rss_allowance_kib", "")
    measured_allowance = max(2 * (warm - idle), MIN_ALLOWANCE_KIB)
    allowance = float(forced) if forced else measured_allowance
    max_bytes = num(info, "max_bytes")
    bound_kib = max_bytes / 1024 + idle + allowance
    res = {
        "idle_kib": idle,
        "warm_kib": warm,
        "allowance_kib": allowance,
        "allowance_forced": bool(forced),
        "bound_kib": bound_kib,
        "max_bytes": max_bytes,
        "scenarios": {},
    }
    for s in SCENARIOS:
        run = in_phase(rows, s)
        settle = in_phase(rows, s + "-settle")
        both = run + settle
        if not both:
            continue
        rss_run = col(run, "rss_kib")
        rss_settle = col(settle, "rss_kib")
        keys = num(info, f"{s}_keys")
        elapsed = num(info, f"{s}_elapsed", float("nan"))
        entries_before = (before(rows, s) or {}).get("precond_store_entries")
        res["scenarios"][s] = {
            "keys": keys,
            "len": int(num(info, f"{s}_len")),
            "elapsed": elapsed,
            "rate": keys / elapsed if elapsed and elapsed > 0 else float("nan"),
            "requests": num(info, f"{s}_requests"),
            "non2xx": int(num(info, f"{s}_non2xx")),
            "sockerr": int(num(info, f"{s}_sockerr")),
            "final_rss": max(rss_settle) if rss_settle else (rss_run[-1] if rss_run else None),
            "peak_rss": max(rss_run + rss_settle) if rss_run + rss_settle else None,
            "peak_fds": max(col(both, "fds") or [0]),
            "final_fds": (col(settle, "fds") or col(run, "fds") or [None])[-1],
            "peak_store": max(col(both, "precond_store_bytes") or [0]),
            "final_store": (col(both, "precond_store_bytes") or [None])[-1],
            "entries_before": entries_before,
            "peak_entries": max(col(both, "precond_store_entries") or [0]),
            "final_entries": (col(both, "precond_store_entries") or [None])[-1],
            "evicted": delta(rows, s, "precond_store_evictions_total:size"),
            "expired": delta(rows, s, "precond_store_evictions_total:expired"),
            "learned": delta(rows, s, "precond_learned_total"),
            "too_long": delta(rows, s, "precond_key_too_long_total"),
            "forwarded": delta(rows, s, "precond_forwarded_total"),
            "machine_busy": info.get(f"{s}_machine_busy_pct", "?"),
            "precond_cpu": info.get(f"{s}_precond_cpu_pct", "?"),
        }
    # while the store filled (no eviction yet): resident bytes per learned entry, against the
    # bytes the store's weigher counted for it
    fill = [
        r for r in in_phase(rows, "short")
        if not r.get("precond_store_evictions_total:size") and r.get("precond_store_entries") is not None
    ]
    base = before(rows, "short")
    if base and fill and fill[-1]["precond_store_entries"] - base["precond_store_entries"] > 1000:
        de = fill[-1]["precond_store_entries"] - base["precond_store_entries"]
        res["fill"] = {
            "entries": de,
            "rss_per_entry": (fill[-1]["rss_kib"] - base["rss_kib"]) * 1024 / de,
            "weighted_per_entry": (fill[-1]["precond_store_bytes"] - base["precond_store_bytes"]) / de,
        }
    res["peak_store_all"] = max(col(rows, "precond_store_bytes") or [0])
    res["upstream_failures"] = max(col(rows, "precond_upstream_failures_total") or [0])
    return res


def checks(res, info):
    """[(text, ok)]"""
    out = []
    bound = res["bound_kib"]
    for s, r in res["scenarios"].items():
        out.append(
            (
                f"{s}: final RSS {fmt_mib(r['final_rss'])} (bound: max_bytes + overhead = "
                f"{fmt_mib(bound)})",
                r["final_rss"] is not None and r["final_rss"] <= bound,
            )
        )
        out.append(
            (
                f"{s}: wrk saw {r['non2xx']} non-2xx answers and {r['sockerr']} socket errors "
                "(must be 0 and 0)",
                r["non2xx"] == 0 and r["sockerr"] == 0,
            )
        )
    mb = res["max_bytes"]
    out.append(
        (
            f"precond_store_bytes: peak {res['peak_store_all'] / MiB:.2f} MiB over all samples "
            f"(bound: max_bytes = {mb / MiB:.2f} MiB)",
            res["peak_store_all"] <= mb,
        )
    )
    out.append(
        (
            f"precond counted {res['upstream_failures']:.0f} upstream failures (must be 0)",
            res["upstream_failures"] == 0,
        )
    )
    short = res["scenarios"].get("short")
    if short:
        ev = short["evicted"] or 0
        out.append(
            (
                f"short: {ev:,.0f} size evictions (must be more than 0: otherwise the store never "
                "reached max_bytes and the flood did not exercise the bound; raise KEYS or lower "
                "MAX_BYTES)",
                ev > 0,
            )
        )
    long = res["scenarios"].get("long")
    if long:
        tl, ln = long["too_long"], long["learned"]
        grew = (long["peak_entries"] or 0) - (long["entries_before"] or 0)
        out.append(
            (
                f"long: {tl or 0:,.0f} keys counted too long (must be at least "
                f"{long['keys']:,.0f}), {ln or 0:,.0f} answers learned (must be 0), store "
                f"entries grew by {max(grew, 0):,.0f} (must be 0)",
                tl is not None and tl >= long["keys"] and ln == 0 and grew <= 0,
            )
        )
    return out


def markdown(res, info, results):
    sc = res["scenarios"]
    smoke = info.get("smoke") == "1"
    out = []
    out.append("# precond key-flood benchmark" + (" (smoke run)" if smoke else ""))
    out.append("")
    out.append(f"- date: {info.get('date', '?')} (load average at the end: {info.get('loadavg', '?')})")
    out.append(f"- machine: {info.get('machine', '?')}")
    out.append(f"- nginx: {info.get('nginx', '?')}; wrk: {info.get('wrk', '?')}")
    out.append(f"- precond: {info.get('precond', '?')}")
    out.append(
        f"- precond guard, 2 threads, `[store] max_bytes = {info.get('max_bytes_text', '?')}` "
        f"({res['max_bytes']:,.0f} bytes), `capacity = {int(num(info, 'capacity')):,}`, "
        f"`max_key_bytes = {info.get('max_key_bytes', '?')}`, ttl 10m (default), RUST_LOG=warn; "
        f"origin: nginx (1 worker) answering every GET 200 `{{}}` with `ETag: \"v1\"`"
    )
    out.append(
        f"- load: wrk -t{info.get('threads', '?')} -c{info.get('connections', '?')}, keep-alive, "
        "one new key per request (benches/flood/flood.lua)"
        + (f", each scenario for {info['duration']}" if info.get("duration") else "")
    )
    out.append("")
    out.append("| scenario | keys | key bytes | time | keys/s | RSS peak | RSS final | fds peak / final "
               "| store bytes peak | entries (end) | evictions (size) | learned | too long | non-2xx / socket errors | machine busy / precond CPU |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for s, r in sc.items():
        out.append(
            f"| {s} | {r['keys']:,.0f} | {r['len']:,} | {r['elapsed']:.1f} s | {r['rate']:,.0f} "
            f"| {fmt_mib(r['peak_rss'])} | **{fmt_mib(r['final_rss'])}** "
            f"| {r['peak_fds']:.0f} / {r['final_fds']:.0f} "
            f"| {r['peak_store'] / MiB:.2f} MiB | {r['final_entries'] or 0:,.0f} "
            f"| {r['evicted'] or 0:,.0f} | {r['learned'] or 0:,.0f} | {r['too_long'] or 0:,.0f} "
            f"| {r['non2xx']} / {r['sockerr']} | {r['machine_busy']}% / {r['precond_cpu']}% |"
        )
    out.append("")
    idle, warm, allowance = res["idle_kib"], res["warm_kib"], res["allowance_kib"]
    how = (
        "set with RSS_ALLOWANCE"
        if res["allowance_forced"]
        else f"max(2 × (warm-up − idle), {MIN_ALLOWANCE_KIB // 1024} MiB)"
    )
    out.append(
        f"RSS bound: max_bytes {res['max_bytes'] / MiB:.1f} MiB + idle RSS {fmt_mib(idle)} + "
        f"allowance {fmt_mib(allowance)} = **{fmt_mib(res['bound_kib'])}**. The idle RSS is "
        "precond's resident memory a few seconds after start-up (nothing learned). The allowance "
        f"({how}) covers what serving the load costs without any store growth: the same wrk "
        "connections hammering a single key for a few seconds raised the RSS to "
        f"{fmt_mib(warm)} ({fmt_mib(warm - idle)} above idle: connection and request buffers, "
        "the allocator's per-thread arenas and caches); twice that, and at least 4 MiB, leaves "
        "room for the same costs at their high-water mark under the flood. Everything above "
        "it is learned state, which max_bytes must bound. *final RSS*: the highest sample of "
        "the few seconds after the scenario's wrk stopped; *peak*: the highest during the flood."
    )
    out.append("")
    fill = res.get("fill")
    if fill:
        ratio = fill["rss_per_entry"] / fill["weighted_per_entry"] if fill["weighted_per_entry"] else float("nan")
        out.append(
            f"While the store filled (the first {fill['entries']:,.0f} entries, before any "
            f"eviction), precond's RSS grew by **{fill['rss_per_entry']:,.0f} bytes per learned "
            f"entry**, while `precond_store_bytes` (what max_bytes bounds) grew by "
            f"{fill['weighted_per_entry']:,.0f} bytes per entry: real memory is {ratio:.2f}× "
            f"the store's accounting, so once full the RSS levels off near idle + {ratio:.2f} × "
            "max_bytes rather than idle + max_bytes."
        )
        out.append("")
    out.append("Checks (run.sh fails when one does not hold):")
    out.append("")
    for text, ok in results:
        out.append(f"- {text}: **{'met' if ok else 'NOT met'}**")
    out.append("")
    short = sc.get("short")
    if short and short["rate"] == short["rate"] and short["rate"] > 0:
        t10 = 10_000_000 / short["rate"]
        out.append(
            f"Rate: {short['rate']:,.0f} new keys/s through the guard on this machine "
            f"(every one learned, and once the store is full every one evicting another), so "
            f"`KEYS=10000000` takes about {duration_text(t10)} for the short-key scenario "
            "(the rate holds once the store is full: each key costs one eviction from then on); "
            f"the long-key scenario ran at {sc['long']['rate']:,.0f} keys/s." if "long" in sc else ""
        )
        out.append("")
    out.append(
        "Scenarios: *short* sends KEYS GETs, each to a new path of KEY_LEN bytes; each answer is "
        "learned (`ETag: \"v1\"`), so the store grows until max_bytes and evicts from then on. "
        "*long* sends LONG_KEYS GETs with a query string making the target LONG_KEY_LEN bytes, "
        "above `max_key_bytes`: forwarded, counted in `precond_key_too_long_total`, never "
        "learned. Both run against the same precond process, long after short. *machine busy*: "
        "the share of all cores' time not idle during the flood (wrk, nginx, precond and "
        "anything else running); *precond CPU*: precond's share of all cores' time."
    )
    warnings = int(num(info, "precond_log_warnings"))
    if warnings:
        out.append("")
        out.append(f"precond logged {warnings} WARN/ERROR lines (see run.sh's output).")
    out.append("")
    out.append("![RSS, open fds and store bytes over time](flood.svg)")
    return "\n".join(out) + "\n"


def svg(rows, res, info):
    t = [r["t_s"] for r in rows]
    labels = [r["phase"] for r in rows]
    phases = chart.phases_of(t, labels)
    shown = {"short": "short keys", "long": "long keys (never learned)", "warmup": "warm-up", "idle": "idle"}
    phases = [(a, b, shown.get(lab, "")) for a, b, lab in phases]
    rss = [None if r["rss_kib"] is None else mib(r["rss_kib"]) for r in rows]
    store = [
        None if r.get("precond_store_bytes") is None else r["precond_store_bytes"] / MiB for r in rows
    ]
    entries = [r.get("precond_store_entries") for r in rows]
    mb = res["max_bytes"] / MiB
    panels = [
        {
            "title": "precond resident memory (VmRSS)",
            "unit": "MiB",
            "series": [{"label": "RSS", "values": rss, "colour": "#4e79a7"}],
            "hlines": [
                {"value": mib(res["bound_kib"]), "label": f"bound {mib(res['bound_kib']):.1f} MiB "
                 "(max_bytes + idle + allowance)", "colour": "#e15759"},
                {"value": mib(res["idle_kib"]), "label": f"idle {mib(res['idle_kib']):.1f} MiB", "colour": "#888"},
            ],
        },
        {
            "title": "store bytes (precond_store_bytes)",
            "unit": "MiB",
            "series": [{"label": "store bytes", "values": store, "colour": "#59a14f"}],
            "hlines": [{"value": mb, "label": f"max_bytes {mb:.1f} MiB", "colour": "#e15759"}],
        },
        {
            "title": "store entries (precond_store_entries)",
            "unit": "resources",
            "series": [{"label": "entries", "values": entries, "colour": "#b07aa1"}],
        },
        {
            "title": "open file descriptors",
            "unit": "/proc/PID/fd",
            "series": [{"label": "fds", "values": [r["fds"] for r in rows], "colour": "#f28e2b"}],
        },
    ]
    subtitle = [
        f"{info.get('date', '')}: {info.get('machine', '')}",
        f"precond {info.get('precond', '')}",
        f"guard route, max_bytes {info.get('max_bytes_text', '')}, capacity "
        f"{int(num(info, 'capacity')):,}, max_key_bytes {info.get('max_key_bytes', '')}; "
        f"wrk -t{info.get('threads', '')} -c{info.get('connections', '')}",
    ]
    sc = res["scenarios"]
    if sc:
        subtitle.append(
            "; ".join(
                f"{s}: {r['keys']:,.0f} keys of {r['len']:,} B in {r['elapsed']:.0f} s" for s, r in sc.items()
            )
        )
    return chart.chart("precond key flood: RSS, store and descriptors over time", subtitle, t, panels, phases)


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    rows = load(sys.argv[1])
    info = summary(sys.argv[2])
    if not rows:
        sys.exit("no samples in " + sys.argv[1])
    res = analyse(rows, info)
    results = checks(res, info)
    md = markdown(res, info, results)
    sys.stdout.write(md)
    with open(sys.argv[3], "w") as f:
        f.write(md)
    with open(sys.argv[4], "w") as f:
        f.write(svg(rows, res, info))
    with open(sys.argv[5], "w") as f:
        for text, ok in results:
            if not ok:
                f.write(text + "\n")


if __name__ == "__main__":
    main()
