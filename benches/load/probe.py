#!/usr/bin/env python3
"""Lost-update probe: CLIENTS clients x UPDATES read-modify-write updates of ONE resource.

usage: probe.py --url http://HOST:PORT --path /probe/1 [--clients 8] [--updates 30] [--callers 1]
                [--stop-on-reason weak_only] [--deadline 30] [--max-refusals 5000]
                [--metrics http://HOST:PORT/metrics] [--csv FILE [--set KEY=VALUE]...]

First creates the resource with a PUT of {"n": 0} (no precondition). Then every client, all
released at once, loops until it has UPDATES successful writes: GET the resource (JSON body
{"n": <int>} and an ETag), PUT {"n": n+1} with `If-Match: <that ETag>` and
`Content-Type: application/json`. A 2xx counts as one of its updates; a 412 is retried from a fresh
GET; a 503 (enforce's write lock busy) too, after a short pause. At the end one more GET reads the
final n: lost = (updates the clients saw succeed) - n, i.e. 240 - n when every client finished.

--callers N: client i sends `Authorization: Bearer probe-caller-<i mod N>` with its requests, so
that precond sees N principals (N partitions of the resource); 1 (the default) sends none.

--stop-on-reason R: a client stops after its first 412 whose problem body has reason R (e.g.
`weak_only` under guard mismatch in front of weak tags, where no write can succeed); the run is
then "bounded" and reports how many writes were applied. --deadline bounds the whole run (every
client stops; the run counts as failed), --max-refusals bounds each client's 412s likewise.

Prints one JSON line: clients, updates, applied (2xx seen by clients), final_n, lost,
refused_412 (412s seen by clients), reasons (412s per problem-body reason), stopped (clients stopped
by --stop-on-reason), other (other statuses seen, by code), origin_writes (update PUTs the origin
answered: answers without a Precond-Decision header, i.e. not made by precond; the creating PUT is
not counted), wall_s (from the clients' release to the last one done), errors (list; non-empty
means the run is not trustworthy), created (status of the creating PUT).

--metrics URL: precond's Prometheus counters after the run (a precond started for this run, so
they count this run only) are added: forwarded_writes (precond_forwarded_conditional_writes_total:
conditional writes precond forwarded to the origin), edge_412 (sum of precond_rejected_total),
fence_waits, fence_refused, fence_bypassed (sum of precond_fence_bypassed_total).
--csv FILE appends the result as one CSV row (the header first when FILE is new or empty), with
the --set KEY=VALUE columns first; dict values are written as "key:value key:value".
Exit status: 0 when the run completed without errors (whatever was lost), 1 otherwise.
Python standard library only.
"""

import argparse
import csv
import http.client
import os
import json
import socket
import sys
import threading
import time
import urllib.parse

DECISION_HEADER = "Precond-Decision"


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None, retry=False):
        """Returns (status, headers, body bytes). `retry`: one more attempt on a fresh connection
        when the exchange broke (only for requests that are safe to repeat)."""
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self._connect()
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, resp.headers, data
            except (OSError, http.client.HTTPException):
                self.close()
                if not retry or attempt == 1:
                    raise
        raise AssertionError("unreachable")


def reason_of(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return "?"
    return str(doc.get("reason", "?")) if isinstance(doc, dict) else "?"


METRICS = {
    "forwarded_writes": "precond_forwarded_conditional_writes_total",
    "edge_412": "precond_rejected_total",
    "fence_waits": "precond_fence_waits_total",
    "fence_refused": "precond_fence_refused_total",
    "fence_bypassed": "precond_fence_bypassed_total",
}


def metrics(url):
    """The METRICS counters from precond's /metrics (labelled series summed)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
    try:
        conn.request("GET", u.path or "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        if resp.status != 200:
            raise OSError(f"{url} answered {resp.status}")
    finally:
        conn.close()
    sums = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        try:
            sums[name] = sums.get(name, 0) + int(float(value))
        except ValueError:
            continue
    return {k: sums.get(v, 0) for k, v in METRICS.items()}


CSV_FIELDS = [
    "clients", "updates", "applied", "final_n", "lost", "refused_412", "reasons", "stopped",
    "other", "origin_writes", "forwarded_writes", "edge_412", "fence_waits", "fence_refused",
    "fence_bypassed", "wall_s", "created", "errors",
]


def append_csv(path, extra, result):
    def cell(v):
        if isinstance(v, dict):
            return " ".join(f"{k}:{v[k]}" for k in sorted(v))
        if isinstance(v, list):
            return " | ".join(str(x) for x in v)
        return "" if v is None else v

    row = dict(extra)
    row.update({k: cell(result.get(k)) for k in CSV_FIELDS})
    fields = list(extra) + CSV_FIELDS
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow(row)


def run(args):
    u = urllib.parse.urlsplit(args.url)
    host, port = u.hostname, u.port or 80
    path = args.path
    timeout = 10.0
    result = {
        "clients": args.clients,
        "updates": args.updates,
        "errors": [],
    }

    setup = Client(host, port, timeout)
    try:
        status, _, body = setup.request(
            "PUT", path, body=b'{"n":0}', headers={"Content-Type": "application/json"}
        )
    except (OSError, http.client.HTTPException) as e:
        result["errors"].append(f"creating PUT {path}: {e!r}")
        return result
    result["created"] = status
    if status not in (200, 201, 204):
        result["errors"].append(f"creating PUT {path} answered {status}: {body[:200]!r}")
        return result

    lock = threading.Lock()
    totals = {"applied": 0, "refused_412": 0, "stopped": 0, "origin_writes": 0}
    reasons, other = {}, {}
    start = threading.Barrier(args.clients + 1)
    deadline = [0.0]

    def error(msg):
        with lock:
            if len(result["errors"]) < 20:
                result["errors"].append(msg)

    def client(i):
        c = Client(host, port, timeout)
        auth = {}
        if args.callers > 1:
            auth = {"Authorization": f"Bearer probe-caller-{i % args.callers}"}
        done = refused = origin = 0
        stopped = False
        mine_reasons, mine_other = {}, {}
        start.wait()
        try:
            while done < args.updates:
                if time.monotonic() > deadline[0]:
                    error(f"client {i}: deadline ({args.deadline:g} s) reached, {done} updates")
                    break
                if refused > args.max_refusals:
                    error(f"client {i}: more than {args.max_refusals} refusals, {done} updates")
                    break
                status, headers, body = c.request("GET", path, headers=auth, retry=True)
                if status == 503:
                    mine_other[status] = mine_other.get(status, 0) + 1
                    time.sleep(0.02)
                    continue
                if status != 200:
                    error(f"client {i}: GET answered {status}: {body[:200]!r}")
                    break
                etag = headers.get("ETag")
                if not etag:
                    error(f"client {i}: GET answered without an ETag")
                    break
                try:
                    n = int(json.loads(body)["n"])
                except (ValueError, KeyError, TypeError):
                    error(f"client {i}: GET body is not {{\"n\": <int>}}: {body[:200]!r}")
                    break
                status, headers, body = c.request(
                    "PUT",
                    path,
                    body=json.dumps({"n": n + 1}).encode(),
                    headers={"If-Match": etag, "Content-Type": "application/json", **auth},
                )
                if headers.get(DECISION_HEADER) is None:
                    origin += 1
                if 200 <= status < 300:
                    done += 1
                elif status == 412:
                    refused += 1
                    r = reason_of(body)
                    mine_reasons[r] = mine_reasons.get(r, 0) + 1
                    if r in args.stop_on_reason:
                        stopped = True
                        break
                elif status == 503:
                    mine_other[status] = mine_other.get(status, 0) + 1
                    time.sleep(0.02)
                else:
                    error(f"client {i}: PUT answered {status}: {body[:200]!r}")
                    break
        except (OSError, http.client.HTTPException) as e:
            # A write whose exchange broke may or may not have been applied: the count would be
            # wrong, so the run is not trustworthy.
            error(f"client {i}: {e!r} after {done} updates")
        finally:
            c.close()
            with lock:
                totals["applied"] += done
                totals["refused_412"] += refused
                totals["origin_writes"] += origin
                totals["stopped"] += int(stopped)
                for k, v in mine_reasons.items():
                    reasons[k] = reasons.get(k, 0) + v
                for k, v in mine_other.items():
                    other[str(k)] = other.get(str(k), 0) + v

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + args.deadline
    t0 = time.monotonic()
    start.wait()
    for t in threads:
        # Each client checks the deadline between requests; a request itself is bounded by the
        # connection timeout.
        t.join(args.deadline + 2 * timeout + 5)
    wall = time.monotonic() - t0
    if any(t.is_alive() for t in threads):
        error("a client did not finish")
    result.update(totals)
    result["reasons"] = reasons
    result["other"] = other
    result["wall_s"] = round(wall, 3)

    try:
        status, _, body = setup.request("GET", path, retry=True)
        result["final_n"] = int(json.loads(body)["n"]) if status == 200 else None
        if status != 200:
            result["errors"].append(f"final GET answered {status}")
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as e:
        result["final_n"] = None
        result["errors"].append(f"final GET: {e!r}")
    finally:
        setup.close()
    if result["final_n"] is not None:
        result["lost"] = result["applied"] - result["final_n"]
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="base URL: http://HOST:PORT")
    p.add_argument("--path", required=True, help="the resource, e.g. /probe/1 (created first)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--updates", type=int, default=30, help="successful writes per client")
    p.add_argument("--callers", type=int, default=1, help="distinct Authorization values")
    p.add_argument(
        "--stop-on-reason",
        action="append",
        default=[],
        metavar="REASON",
        help="a client stops after its first 412 with this problem-body reason (repeatable)",
    )
    p.add_argument("--deadline", type=float, default=30.0, help="seconds for the whole run")
    p.add_argument(
        "--max-refusals", type=int, default=5000, help="412s per client before it gives up"
    )
    p.add_argument("--metrics", help="precond's metrics URL, read after the run")
    p.add_argument("--csv", help="append the result to this CSV file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a CSV column")
    args = p.parse_args()
    if args.clients < 1 or args.updates < 1 or args.callers < 1:
        p.error("--clients, --updates and --callers must be at least 1")
    extra = {}
    for kv in args.set:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            p.error(f"--set takes KEY=VALUE, not {kv!r}")
        extra[k] = v
    result = run(args)
    if args.metrics:
        try:
            result.update(metrics(args.metrics))
        except (OSError, http.client.HTTPException) as e:
            result["errors"].append(f"metrics {args.metrics}: {e!r}")
    if args.csv:
        append_csv(args.csv, extra, result)
    print(json.dumps(result, sort_keys=True))
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
