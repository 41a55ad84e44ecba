#!/usr/bin/env python3
"""Samples a running precond once a second: resident memory, open file descriptors, and gauges and
counters from its /metrics; used by benches/flood/run.sh and benches/soak/run.sh.

usage: sample.py --pid PID --metrics URL --csv OUT.csv [--interval 1] [--phase-file FILE]
                 [--counts-dir DIR] [--metric NAME[{LABELS}]]...

Appends one row per interval to OUT.csv (writing the header first when the file is empty):
  t_s          seconds since the sampler started (monotonic clock)
  phase        the first line of --phase-file (what run.sh is doing: idle, warm-up, a scenario)
  rss_kib      VmRSS of PID (/proc/PID/status)
  fds          entries of /proc/PID/fd
  threads      Threads of PID (/proc/PID/status)
  one column per --metric: the sample's value ("" when precond did not answer or lacks it),
  e.g. precond_store_bytes or precond_store_evictions_total{cause="size"} (column name: the
  metric name, with the label values appended after ':' e.g. precond_store_evictions_total:size),
  or sum:NAME, the sum of every series of NAME whatever its labels (column name: NAME)
  with --counts-dir: ok, expected_refusals, busy, unexpected, closed: the sums of the fourth
  field of every line "KIND STATUS CLASS COUNT" in the files DIR/*.counts, by CLASS (the load
  generators rewrite their file once a second with cumulative counts; see benches/soak/run.sh)

Stops when PID exits, or on SIGTERM/SIGINT (after writing the current row). Python standard
library only.
"""

import argparse
import csv
import glob
import os
import re
import signal
import sys
import time
import urllib.request

CLASSES = ["ok", "expected_refusals", "busy", "unexpected", "closed"]


def status_fields(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def kib(v):
    # "123456 kB"
    return int(v.split()[0]) if v else ""


def scrape(url):
    try:
        with urllib.request.urlopen(url, timeout=0.8) as r:
            return r.read().decode("utf-8", "replace")
    except OSError:
        return ""


LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text):
    """{"name": value, "name{labels}": value} for every sample line."""
    out = {}
    sums = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if m:
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            try:
                out[name + labels] = float(value)
            except ValueError:
                continue
            sums["sum:" + name] = sums.get("sum:" + name, 0.0) + out[name + labels]
    if out:
        out.update(sums)
    return out


def column_name(metric):
    if metric.startswith("sum:"):
        return metric[4:]
    name, _, labels = metric.partition("{")
    if not labels:
        return name
    values = re.findall(r'="([^"]*)"', labels)
    return name + ":" + ":".join(values)


def read_counts(directory):
    sums = dict.fromkeys(CLASSES, 0)
    for path in glob.glob(os.path.join(directory, "*.counts")):
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 4 and parts[2] in sums:
                        sums[parts[2]] += int(parts[3])
        except (OSError, ValueError):
            continue
    return sums


def fmt(v):
    if v == "" or v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else f"{v:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--metrics", required=True, help="precond's metrics URL")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--phase-file")
    ap.add_argument("--counts-dir")
    ap.add_argument("--metric", action="append", default=[])
    a = ap.parse_args()

    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(1))

    header = ["t_s", "phase", "rss_kib", "fds", "threads"] + [column_name(m) for m in a.metric]
    if a.counts_dir:
        header += CLASSES
    new = not os.path.exists(a.csv) or os.path.getsize(a.csv) == 0
    f = open(a.csv, "a", newline="")
    w = csv.writer(f)
    if new:
        w.writerow(header)
        f.flush()
    t0 = time.monotonic()
    n = 0
    while True:
        now = time.monotonic()
        try:
            st = status_fields(a.pid)
            fds = len(os.listdir(f"/proc/{a.pid}/fd"))
        except OSError:
            break  # the process is gone
        phase = ""
        if a.phase_file:
            try:
                with open(a.phase_file) as pf:
                    phase = pf.readline().strip()
            except OSError:
                pass
        values = parse_metrics(scrape(a.metrics))
        row = [f"{now - t0:.2f}", phase, kib(st.get("VmRSS")), fds, st.get("Threads", "")]
        row += [fmt(values.get(m, "")) for m in a.metric]
        if a.counts_dir:
            counts = read_counts(a.counts_dir)
            row += [counts[c] for c in CLASSES]
        w.writerow(row)
        f.flush()
        if stopping:
            break
        n += 1
        # a fixed schedule: one row per interval, however long a scrape took
        delay = t0 + n * a.interval - time.monotonic()
        while delay > 0 and not stopping:
            time.sleep(min(delay, 0.1))
            delay = t0 + n * a.interval - time.monotonic()
        if stopping:
            # one last row, then stop
            continue
    f.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
