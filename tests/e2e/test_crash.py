#!/usr/bin/env python3
"""End-to-end: stopping and crashing. SIGTERM while a request is in flight
(it completes), the index snapshots written at exit and loaded at restart
with the same answers, a wrong --old-model refused on the same data directory,
and kill -9 twice during bulk ingest: every acknowledged image is stored
and indexed after restart, none twice.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, diag, png_bytes, multipart, Daemon, MKMODEL  # noqa: E402


def test_sigterm_restart(tmp):
    ref = e2e.reference_daemon(tmp, "lifecycle")
    d, texts = ref.d, ref.texts
    try:
        model_id = d.get("/v1/stats").json["model"]["id"]
        before = [x["id"] for x in d.post("/v1/search", {"text": texts[4], "k": 50}).json["results"]]

        # SIGTERM while a request is in flight: the request still completes.
        body, ctype = multipart([], [("file", "late%d.png" % i, png_bytes(32, 32, 900 + i),
                                      "image/png") for i in range(5)])
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=60)
        sock.sendall(("POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n" %
                      (ctype, len(body))).encode())
        sock.sendall(body[:len(body) // 2])
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[len(body) // 2:])
        resp = b""
        while True:
            got = sock.recv(65536)
            if not got:
                break
            resp += got
        sock.close()
        late = {}
        try:
            late = json.loads(resp.split(b"\r\n\r\n", 1)[1].decode())
        except (IndexError, ValueError):
            pass
        ok(resp.startswith(b"HTTP/1.1 202") and late.get("accepted") == 5,
           "a request in flight at SIGTERM completes (202)", resp[:300])
    finally:
        rc = d.stop(signal.SIGTERM)
    log = d.log()
    ok(rc == 0, "SIGTERM: exit status 0", "exit %s\n%s" % (rc, log[-2000:]))
    index_dir = os.path.join(d.data, "index", model_id)  # one directory per model
    ok("saved snapshot" in log and os.path.exists(os.path.join(index_dir, "images.vidx"))
       and os.path.exists(os.path.join(index_dir, "texts.vidx")),
       "SIGTERM writes both index snapshots", log[-2000:])

    # Restart on the same data: snapshots load.
    if not ok(d.start(), "restart on the same data directory"):
        return
    try:
        log = d.log()
        ok(log.count("loaded snapshot") == 2, "restart loads both snapshots", log)
        late_ids = [it["id"] for it in late.get("items", [])]
        after = [x["id"] for x in d.post("/v1/search", {"text": texts[4], "k": 50}).json["results"]]
        after = [i for i in after if i not in late_ids]  # indexed since
        ok(after == before, "search after restart equals before", (before, after))
        s = d.wait_idle()
        ok(late_ids and all(d.get("/v1/images/%d" % i).json["status"] == "ready" for i in late_ids),
           "images acknowledged during shutdown are indexed after restart", late_ids)
    finally:
        ok(d.stop() == 0, "second SIGTERM: exit 0")

    # Another model on the same data directory migrates to it (test_migrate.py),
    # which needs the data directory's model: an --old-model that is not it is
    # refused, saying what to pass.
    if MKMODEL:
        other = os.path.join(tmp, "other-model")
        subprocess.run([MKMODEL, "--preset", "tiny", "--out", other], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        o = Daemon("other", d.data, model=other, extra=["--old-model", other])
        started = o.start(expect_fail=True, timeout=60)
        if started:
            o.stop()
        rc = o.proc.wait() if o.proc else None
        log = o.log()
        ok(not started and rc == 2 and "Pass --old-model DIR" in log,
           "another model with a wrong --old-model is refused with what to pass (exit 2)", log)


def test_kill9(tmp):
    root = os.path.join(tmp, "bulk")
    os.makedirs(root)
    n = 80
    for i in range(n):
        with open(os.path.join(root, "img%03d.png" % i), "wb") as fh:
            fh.write(png_bytes(96, 64, 1000 + i))
    d = Daemon("kill9", os.path.join(tmp, "data-kill9"), ["--allow-root", root])
    if not ok(d.start(), "clipd starts for the kill -9 test"):
        return
    acked = set()
    # 1: acknowledged, then killed while the workers index.
    r = d.post("/v1/ingest", {"dir": root})
    ok(r.status == 202 and r.json["accepted"] == n, "bulk ingest of %d files acknowledged" % n, r)
    if r.status == 202:
        acked |= {it["id"] for it in r.json["items"]}
    s = d.get("/v1/stats").json
    diag("at kill: %s ready of %s" % (s["images"]["ready"], s["images"]["total"]))
    d.stop(signal.SIGKILL)

    # 2: killed while a second bulk ingest request is being stored.
    if not ok(d.start(), "restart after kill -9"):
        return
    more = os.path.join(root, "more")
    os.makedirs(more)
    for i in range(n):
        with open(os.path.join(more, "m%03d.png" % i), "wb") as fh:
            fh.write(png_bytes(96, 64, 5000 + i))
    result = {}

    def send():
        try:
            result["r"] = d.post("/v1/ingest", {"dir": more}, timeout=60)
        except Exception as e:  # the daemon dies under us
            result["e"] = e
    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.15)
    d.stop(signal.SIGKILL)
    t.join()
    if "r" in result and result["r"].status == 202:
        acked |= {it["id"] for it in result["r"].json["items"]}
        diag("second ingest finished before the kill")
    else:
        diag("second ingest interrupted: %r" % result.get("e"))

    if not ok(d.start(), "restart after the second kill -9"):
        return
    try:
        s = d.wait_idle()
        ok(s is not None, "the queue drains after restart", s)
        ids_missing = [i for i in sorted(acked) if d.get("/v1/images/%d" % i).status != 200]
        not_ready = [i for i in sorted(acked)
                     if d.get("/v1/images/%d" % i).json.get("status") != "ready"]
        ok(not ids_missing and not not_ready,
           "every acknowledged image (%d) is stored and ready" % len(acked),
           "missing %s, not ready %s" % (ids_missing[:10], not_ready[:10]))
        r = d.post("/v1/search", {"text": "noise", "k": 1000})
        got = [x["id"] for x in r.json["results"]]
        ok(len(got) == len(set(got)) and len(got) == s["images"]["ready"] and
           s["images"]["ready"] == s["images"]["total"] and
           s["index"]["images"]["count"] == s["images"]["ready"],
           "search count = index count = ready count = stored count, no duplicates",
           (len(got), len(set(got)), s))
        sha = set()
        dup = 0
        for i in got:
            h = d.get("/v1/images/%d" % i).json["sha256"]
            dup += h in sha
            sha.add(h)
        ok(dup == 0 and acked <= set(got), "no content stored twice; every acknowledged id found",
           dup)
    finally:
        ok(d.stop() == 0, "kill -9 daemon: SIGTERM exit 0")


def main():
    return e2e.run_tests('clipd-e2e-crash-', [test_sigterm_restart, test_kill9])


if __name__ == "__main__":
    sys.exit(main())
