#!/usr/bin/env python3
"""Hostile HTTP clients against the real clipd (issue 12): Host and Origin
checks, Content-Type on JSON routes, JSON and multipart limits, invalid
UTF-8 anywhere in a request, and connection exhaustion.

Same environment and TAP output as test_e2e.py, whose harness it reuses.
"""
import json
import os
import socket
import sys
import tempfile
import time
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402

ok = e2e.ok


def raw_request(port, data, timeout=30, source=None):
    """Sends data as is; returns the whole reply (status line, headers, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                got = s.recv(65536)
            except socket.timeout:
                break
            if not got:
                break
            out += got
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                length = None
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                if length is not None and len(body) >= length:
                    break
        return out
    finally:
        s.close()


def status_of(reply):
    try:
        return int(reply.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def body_json(reply):
    try:
        return json.loads(reply.partition(b"\r\n\r\n")[2].decode())
    except ValueError:
        return None


def stats(d):
    return d.get("/v1/stats").json


def test_host_origin_ctype(tmp):
    d = e2e.Daemon("sec-host", os.path.join(tmp, "data-host"),
                   ["--allow-host", "photos.example", "--allow-origin", "http://app.example:3000"])
    if not ok(d.start(), "clipd starts with --allow-host and --allow-origin"):
        return
    try:
        port = d.port
        for host in ["127.0.0.1:%d" % port, "localhost:%d" % port, "LOCALHOST", "[::1]:%d" % port,
                     "photos.example:%d" % port, "192.168.1.20:%d" % port]:
            r = d.get("/v1/stats", headers={"Host": host})
            ok(r.status == 200, "Host %s is accepted" % host, r)
        for host in ["evil.example", "evil.example:%d" % port, "127.0.0.1.evil.example",
                     "localhost.evil.example", "::1"]:
            r = d.get("/v1/stats", headers={"Host": host})
            ok(r.status == 403 and r.err_code() == "host_not_allowed" and "--allow-host" in r.err_msg(),
               "Host %s (DNS rebinding) is refused with 403 host_not_allowed" % host, r)
        r = d.post("/v1/search", {"text": "a dog"}, headers={"Host": "evil.example"})
        ok(r.status == 403 and r.err_code() == "host_not_allowed",
           "a search under a foreign Host name is refused", r)
        r = d.get("/healthz", headers={"Host": "evil.example"})
        ok(r.status == 200, "health probes answer whatever the Host", r)

        before = stats(d)["texts"]["total"]
        r = d.post("/v1/texts", {"texts": ["from a foreign page"]},
                   headers={"Origin": "http://evil.example"})
        ok(r.status == 403 and r.err_code() == "origin_not_allowed",
           "a write from a foreign Origin: 403 origin_not_allowed", r)
        r = d.post("/v1/texts", {"texts": ["null origin"]}, headers={"Origin": "null"})
        ok(r.status == 403, "a write from Origin null: 403", r)
        body, ctype = e2e.multipart([], [("file", "x.png", e2e.png_bytes(8, 8, 1), "image/png")])
        r = d.post("/v1/ingest", body, ctype=ctype, headers={"Origin": "http://evil.example"})
        ok(r.status == 403, "a multipart form post (no preflight) from a foreign Origin: 403", r)
        r = d.delete("/v1/images/1", headers={"Origin": "http://evil.example"})
        ok(r.status == 403, "a DELETE from a foreign Origin: 403", r)
        ok(stats(d)["texts"]["total"] == before and stats(d)["images"]["total"] == 0,
           "refused writes stored nothing", stats(d))
        r = d.post("/v1/texts", {"texts": ["same origin"]},
                   headers={"Origin": "http://127.0.0.1:%d" % port})
        ok(r.status == 202, "a write from the daemon's own page (same origin): 202", r)
        r = d.post("/v1/texts", {"texts": ["allowed origin"]},
                   headers={"Origin": "http://app.example:3000"})
        ok(r.status == 202, "a write from an --allow-origin origin: 202", r)
        r = d.get("/v1/stats", headers={"Origin": "http://evil.example"})
        ok(r.status == 200, "a GET with a foreign Origin is answered (CORS keeps it unreadable)", r)

        # JSON routes take application/json only: text/plain and forms are
        # what a page can send without a preflight.
        before = stats(d)["texts"]["total"]
        for ct in ["text/plain", "application/x-www-form-urlencoded", "text/plain; charset=utf-8"]:
            r = d.post("/v1/texts", json.dumps({"texts": ["plain"]}).encode(), ctype=ct)
            ok(r.status == 415 and r.err_code() == "unsupported_media_type"
               and "application/json" in r.err_msg(),
               "POST /v1/texts as %s: 415 naming application/json" % ct, r)
        r = d.post("/v1/search", json.dumps({"text": "a"}).encode(), ctype="text/plain")
        ok(r.status == 415, "POST /v1/search as text/plain: 415", r)
        r = d.post("/v1/classify", json.dumps({"labels": ["a", "b"], "image_id": 1}).encode())
        ok(r.status == 415, "POST /v1/classify with no Content-Type: 415", r)
        ok(stats(d)["texts"]["total"] == before, "nothing was stored by them", stats(d))
        r = d.post("/v1/search", {"text": "a"}, ctype="application/json; charset=utf-8")
        ok(r.status == 200, "application/json with a charset is JSON", r)
    finally:
        ok(d.stop() == 0, "sec-host daemon: SIGTERM exit 0")


def nested(depth):
    return "[" * depth + "]" * depth


def test_json_and_multipart_limits(tmp):
    d = e2e.Daemon("sec-limits", os.path.join(tmp, "data-limits"), [],
                   wrap=["prlimit", "--nofile=300:300", "--"])
    if not ok(d.start(), "clipd starts under a limit of 300 open files"):
        return
    try:
        r = d.post("/v1/search", ('{"text": "a", "filter": {"x": %s}}' % nested(65)).encode(),
                   ctype="application/json")
        ok(r.status == 400 and "nested deeper than 64" in r.err_msg(),
           "JSON nested 65 deep: 400 naming the limit", r)
        r = d.post("/v1/texts", ('{"texts": [{"text": "deep", "meta": {"m": %s}}]}' %
                                 nested(2010)).encode(), ctype="application/json")
        ok(r.status == 400 and "nested" in r.err_msg(),
           "meta nested 2,010 deep (past SQLite's 2,000): 400", r)
        r = d.post("/v1/search", ('{"text": "a", "k": 1, "filter": {"x": [%s]}}' %
                                  ",".join(["1"] * 100001)).encode(), ctype="application/json")
        ok(r.status == 413 and "100000 values" in r.err_msg(),
           "JSON of 100,001 values: 413 naming the limit", r)
        r = d.post("/v1/search", {"text": "a"})
        ok(r.status == 200, "a normal search still works", r)

        # 1,001 one-byte fields: refused by count, not only by bytes.
        fields = [("f%d" % i, "x") for i in range(1001)]
        body, ctype = e2e.multipart(fields, [])
        r = d.post("/v1/search", body, ctype=ctype)
        ok(r.status == 413 and "more than 1000 parts" in r.err_msg(),
           "a multipart body of 1,001 parts: 413 naming the limit", r)

        # 400 files in one request under a 300-descriptor limit: each part's
        # temporary file is closed once the part is in.
        files = [("file", "p%03d.png" % i, e2e.png_bytes(4, 4, 1000 + i), "image/png")
                 for i in range(400)]
        body, ctype = e2e.multipart([], files)
        r = d.post("/v1/ingest", body, ctype=ctype)
        ok(r.status == 202 and r.json["accepted"] == 400 and not r.json["rejected"],
           "400 files in one multipart request under 300 open files: all accepted", r)
        r = d.get("/v1/stats")
        ok(r.status == 200, "the daemon still opens files afterwards", r)
    finally:
        ok(d.stop() == 0, "sec-limits daemon: SIGTERM exit 0")


def test_utf8(tmp):
    d = e2e.Daemon("sec-utf8", os.path.join(tmp, "data-utf8"), [])
    if not ok(d.start(), "clipd starts"):
        return
    try:
        port = d.port
        rep = raw_request(port, b"GET /v1/nothing%FF HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        j = body_json(rep)
        ok(status_of(rep) == 404 and j and j["error"]["code"] == "not_found" and "\ufffd" in j["error"]["message"],
           "a %FF in the URL: 404 with a JSON message (the byte shown as U+FFFD)", rep[:300])
        long_url = b"/v1/x" + b"%C3%A9" * 200  # a message cut at 255 bytes falls inside a character
        rep = raw_request(port, b"GET " + long_url + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        j = body_json(rep)
        ok(status_of(rep) == 404 and j is not None,
           "an error message cut inside a UTF-8 character: 404 with valid JSON", rep[:300])
        rep = raw_request(port, b"G\xc9T /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        ok(400 <= status_of(rep) < 500, "a non-ASCII method: a 4xx", rep[:300])

        # Two files named in Latin-1 in one bulk request.
        boundary = "----clipd-latin1"
        out = bytearray()
        for i, name in enumerate([b"caf\xe9.png", b"\xe0\xe9\xef.png"]):
            out += (b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\"file\"; "
                    b"filename=\"" + name + b"\"\r\nContent-Type: image/png\r\n\r\n")
            out += e2e.png_bytes(8, 8, 70 + i) + b"\r\n"
        out += b"--" + boundary.encode() + b"--\r\n"
        r = d.post("/v1/ingest", bytes(out), ctype="multipart/form-data; boundary=" + boundary)
        ok(r.status == 202 and r.json["accepted"] == 2 and len(r.json["items"]) == 2
           and all("\ufffd" in it["name"] for it in r.json["items"]),
           "two files named in Latin-1: both accepted and listed, names repaired", r)
        # The same for a rejected one: the rejection is listed too.
        out = (b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\"file\"; "
               b"filename=\"\xe9.txt\"\r\nContent-Type: image/png\r\n\r\nnot an image\r\n--" +
               boundary.encode() + b"--\r\n")
        r = d.post("/v1/ingest", out, ctype="multipart/form-data; boundary=" + boundary)
        ok(r.status in (202, 400, 415, 422) and r.json is not None and len(r.json.get("rejected", [None])) == 1,
           "a rejected file named in Latin-1 is listed in 'rejected'", r)
        r = d.post("/v1/images?filename=%E9t%E9.png", e2e.png_bytes(8, 8, 80), ctype="image/png")
        ok(r.status == 202, "a raw upload with a Latin-1 ?filename=: 202", r)
        if r.status == 202:
            g = d.get("/v1/images/%d" % r.json["id"])
            ok(g.status == 200 and g.json["filename"] == "?t?.png",
               "its stored name is valid UTF-8 and the image reads back", g)
    finally:
        ok(d.stop() == 0, "sec-utf8 daemon: SIGTERM exit 0")


def test_connections(tmp):
    d = e2e.Daemon("sec-conns", os.path.join(tmp, "data-conns"), ["--header-timeout", "3"])
    if not ok(d.start(), "clipd starts with --header-timeout 3"):
        return
    socks = []
    try:
        port = d.port
        for _ in range(200):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                socks.append(s)
            except OSError:
                break
        ok(len(socks) > 0, "opened %d half-sent connections from 127.0.0.1" % len(socks))
        t0 = time.time()
        rep = raw_request(port, b"GET /v1/stats HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n\r\n",
                          timeout=10, source="127.0.0.2")
        ok(status_of(rep) == 200,
           "with 200 idle sockets from 127.0.0.1, a client at 127.0.0.2 is served (%.2f s)" %
           (time.time() - t0), rep[:200])
        # The half-sent ones are closed by the head deadline, though each
        # keeps sending a header byte a second (the idle timeout never fires).
        t0 = time.time()
        open_socks = [s for s in socks]
        closed = 0
        while open_socks and time.time() - t0 < 15:
            for s in list(open_socks):
                try:
                    s.sendall(b"x")
                    s.setblocking(False)
                    try:
                        if s.recv(1024) == b"":
                            closed += 1
                            open_socks.remove(s)
                    except BlockingIOError:
                        pass
                    finally:
                        s.setblocking(True)
                except OSError:
                    closed += 1
                    open_socks.remove(s)
            time.sleep(0.5)
        ok(not open_socks,
           "every half-sent connection was closed by the head deadline (%d of %d, %.1f s)" %
           (closed, len(socks), time.time() - t0))
        rep = raw_request(port, b"GET /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        ok(status_of(rep) == 200, "127.0.0.1 is served again afterwards", rep[:200])
        # A keep-alive client that sends its requests promptly is not cut.
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        good = 0
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf or not buf.endswith(b"}"):
                got = s.recv(4096)
                if not got:
                    break
                buf += got
            good += buf.startswith(b"HTTP/1.1 200")
            time.sleep(1)
        s.close()
        ok(good == 3, "a keep-alive connection with prompt requests is kept (%d of 3)" % good)
    finally:
        for s in socks:
            s.close()
        ok(d.stop() == 0, "sec-conns daemon: SIGTERM exit 0")


def main():
    return e2e.run_tests("clipd-sec-http-", [test_host_origin_ctype, test_json_and_multipart_limits,
                                             test_utf8, test_connections])


if __name__ == "__main__":
    sys.exit(main())
