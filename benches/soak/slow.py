#!/usr/bin/env python3
"""The soak's badly behaved clients (benches/soak/run.sh): connections that trickle their request
and connections that give up in the middle of one, against precond's guard and enforce routes.

usage: slow.py --port PORT --duration SECONDS --counts FILE [--tricklers 4] [--aborters 2]
               [--items 100] [--trickle-bytes 32] [--trickle-interval 0.25]

Each trickler loops over three kinds of request, one connection each:
  trickle-body-enforce   PUT /e/items/<i> with If-Match: "v1" (the current tag): the headers at
                         once, then the body (--trickle-bytes bytes) one byte every
                         --trickle-interval s. The write holds the resource's lock while its body
                         arrives: precond's write_body_timeout (3s) must end it with 408 or by
                         closing the connection; other writes to that item wait meanwhile.
  trickle-body-guard     the same on /g/items/<i> (guard: forwarded as it arrives; 2xx when it
                         completes, or 408 or a closed connection)
  trickle-headers        GET /g/items/<i>, the request head sent a few bytes at a time (2xx when it
                         completes, or 408 or a closed connection)
Each aborter loops over four kinds, one connection each, and closes it itself:
  abort-body-enforce     PUT /e/items/<i> with If-Match: "v1", half the body, then close
  abort-body-guard       the same on /g/items/<i>
  abort-headers          half of a request head, then close
  abort-response         a complete GET /e/items/<i>, closed before reading the answer

Outcomes, by kind: a status code, "closed" (precond closed the connection without an answer),
"aborted" (the client closed it, as planned), "connect-error" or "error-<what>" (unexpected). Every
second (and at the end) the cumulative counts are written to --counts, atomically, one line per
(kind, outcome): "slow/KIND OUTCOME CLASS COUNT", CLASS being ok (a 2xx), expected_refusals
(408), busy (503 write-busy), closed (closed or aborted) or unexpected (anything else).
Python standard library only.
"""

import argparse
import os
import random
import socket
import sys
import threading
import time

BODY_BYTE = b"x"


class Counts:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, kind, outcome, cls):
        with self.lock:
            k = (kind, outcome, cls)
            self.counts[k] = self.counts.get(k, 0) + 1

    def flush(self):
        with self.lock:
            lines = [f"slow/{k} {o} {c} {n}\n" for (k, o, c), n in sorted(self.counts.items())]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(lines)
        os.replace(tmp, self.path)


def classify(kind, outcome, body):
    if outcome in ("closed", "aborted"):
        return "closed"
    if outcome.isdigit():
        code = int(outcome)
        if 200 <= code < 300:
            return "ok"
        if code == 408 and kind.startswith("trickle"):
            return "expected_refusals"
        if code == 503 and b"write-busy" in body and "enforce" in kind:
            return "busy"
    return "unexpected"


def read_answer(sock, deadline):
    """(outcome, body-start): the status of the first answer, or "closed"."""
    buf = b""
    while b"\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return "error-no-answer", buf
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return "error-no-answer", buf
        except (ConnectionResetError, BrokenPipeError):
            return "closed", buf
        if not chunk:
            return "closed", buf
        buf += chunk
    line = buf.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        # read a little more of the answer: the body says why (write-busy)
        sock.settimeout(0.5)
        try:
            while len(buf) < 2048:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
                if b"\r\n\r\n" in buf and len(buf.split(b"\r\n\r\n", 1)[1]) > 0:
                    break
        except OSError:
            pass
        return line[1].decode(), buf
    return "error-bad-answer", buf


def answered_early(sock):
    """An answer (or a close) arrived while the client was still sending: peek without blocking."""
    sock.settimeout(0)
    try:
        sock.recv(1, socket.MSG_PEEK)  # data, or b"" at a close
        return True
    except (BlockingIOError, socket.timeout):
        return False
    except OSError:
        return True


class Client:
    def __init__(self, a, counts, stop_at):
        self.a = a
        self.counts = counts
        self.stop_at = stop_at

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.a.port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def head(self, method, path, extra=b"", length=None):
        h = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.a.port}\r\n".encode()
        h += b"User-Agent: precond-soak-slow\r\n" + extra
        if length is not None:
            h += f"Content-Type: application/json\r\nContent-Length: {length}\r\n".encode()
        return h + b"\r\n"

    def item(self):
        return random.randint(1, self.a.items)

    def record(self, kind, outcome, body=b""):
        self.counts.add(kind, outcome, classify(kind, outcome, body))

    # --- tricklers ---
    def trickle_body(self, prefix, kind):
        n = self.a.trickle_bytes
        try:
            s = self.connect()
        except OSError:
            self.record(kind, "connect-error")
            return
        with s:
            try:
                s.sendall(self.head("PUT", f"/{prefix}/items/{self.item()}", b'If-Match: "v1"\r\n', n))
                for _ in range(n):
                    if answered_early(s):
                        break
                    s.settimeout(5)
                    s.sendall(BODY_BYTE)
                    time.sleep(self.a.trickle_interval)
            except (BrokenPipeError, ConnectionResetError):
                pass  # precond closed it: read what it said, if anything
            except OSError as e:
                self.record(kind, f"error-{type(e).__name__}")
                return
            outcome, body = read_answer(s, time.monotonic() + 15)
            self.record(kind, outcome, body)

    def trickle_headers(self):
        kind = "trickle-headers"
        try:
            s = self.connect()
        except OSError:
            self.record(kind, "connect-error")
            return
        with s:
            req = self.head("GET", f"/g/items/{self.item()}", b"X-Soak: " + b"t" * 40 + b"\r\n")
            step = max(1, len(req) // 20)
            try:
                for i in range(0, len(req), step):
                    if answered_early(s):
                        break
                    s.settimeout(5)
                    s.sendall(req[i : i + step])
                    time.sleep(self.a.trickle_interval)
            except (BrokenPipeError, ConnectionResetError):
                pass
            except OSError as e:
                self.record(kind, f"error-{type(e).__name__}")
                return
            outcome, body = read_answer(s, time.monotonic() + 15)
            self.record(kind, outcome, body)

    def trickler(self):
        kinds = [
            lambda: self.trickle_body("e", "trickle-body-enforce"),
            lambda: self.trickle_body("g", "trickle-body-guard"),
            self.trickle_headers,
        ]
        i = random.randrange(len(kinds))
        while time.monotonic() < self.stop_at:
            kinds[i % len(kinds)]()
            i += 1

    # --- aborters ---
    def abort(self, kind, data, wait=0.0):
        try:
            s = self.connect()
        except OSError:
            self.record(kind, "connect-error")
            return
        try:
            s.sendall(data)
            if wait:
                time.sleep(wait)
            # RST rather than FIN for half of them: both happen in the wild
            if random.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        finally:
            s.close()
        self.record(kind, "aborted")

    def aborter(self):
        n = self.a.trickle_bytes
        kinds = [
            lambda: self.abort(
                "abort-body-enforce",
                self.head("PUT", f"/e/items/{self.item()}", b'If-Match: "v1"\r\n', n) + BODY_BYTE * (n // 2),
                random.uniform(0.05, 0.5),
            ),
            lambda: self.abort(
                "abort-body-guard",
                self.head("PUT", f"/g/items/{self.item()}", b'If-Match: "v1"\r\n', n) + BODY_BYTE * (n // 2),
                random.uniform(0.05, 0.5),
            ),
            lambda: self.abort(
                "abort-headers",
                self.head("GET", f"/e/items/{self.item()}")[:30],
                random.uniform(0.05, 0.5),
            ),
            lambda: self.abort("abort-response", self.head("GET", f"/e/items/{self.item()}")),
        ]
        i = random.randrange(len(kinds))
        while time.monotonic() < self.stop_at:
            kinds[i % len(kinds)]()
            i += 1
            time.sleep(random.uniform(0.05, 0.25))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--counts", required=True)
    ap.add_argument("--tricklers", type=int, default=4)
    ap.add_argument("--aborters", type=int, default=2)
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--trickle-bytes", type=int, default=32)
    ap.add_argument("--trickle-interval", type=float, default=0.25)
    a = ap.parse_args()

    counts = Counts(a.counts)
    stop_at = time.monotonic() + a.duration
    threads = []
    for i in range(a.tricklers):
        threads.append(threading.Thread(target=Client(a, counts, stop_at).trickler, daemon=True))
    for i in range(a.aborters):
        threads.append(threading.Thread(target=Client(a, counts, stop_at).aborter, daemon=True))
    for t in threads:
        t.start()
    counts.flush()
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        counts.flush()
        # a trickle started just before the end may take its full course: bounded
        if time.monotonic() > stop_at + 30:
            print("slow.py: a client did not finish within 30 s of the end", file=sys.stderr)
            break
    counts.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
