#!/usr/bin/env python3
"""End-to-end: the API key (--api-key, --api-key-reads) and the request
limits (--max-body-mb with and without Content-Length, --max-pixels,
CLIPD_MAX_QUEUE's 503 with Retry-After).

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, png_bytes, multipart, Daemon  # noqa: E402


def test_auth_and_limits(tmp):
    key = "s3cret-key"
    d = Daemon("limits", os.path.join(tmp, "data-limits"),
               ["--api-key", key, "--max-body-mb", "1", "--max-pixels", "50000"],
               env_extra={"CLIPD_MAX_QUEUE": "3", "CLIPD_WORKERS": "1"})
    if not ok(d.start(), "clipd starts with --api-key, --max-body-mb 1, --max-pixels 50000"):
        return
    try:
        r = d.post("/v1/texts", {"texts": [{"text": "a"}]})
        ok(r.status == 401 and r.err_code() == "unauthorized", "POST without a key: 401", r)
        r = d.post("/v1/texts", {"texts": [{"text": "a"}]}, headers={"Authorization": "Bearer wrong"})
        ok(r.status == 401, "POST with a wrong key: 401", r)
        r = d.delete("/v1/images/1")
        ok(r.status == 401, "DELETE without a key: 401", r)
        r = d.post("/v1/search", {"text": "a"})
        ok(r.status == 200, "search is a read: open without a key", r)
        r = d.post("/v1/images", png_bytes(8, 8, 3), ctype="image/png",
                   headers={"Authorization": "Bearer " + key + "x"})
        ok(r.status == 401, "upload with a longer wrong key: 401", r)
        r = d.get("/v1/search?q=a")
        ok(r.status == 200, "GET stays open", r)
        d.key = key
        r = d.post("/v1/search", {"text": "a"})
        ok(r.status == 200, "POST with the key: 200", r)
        r = d.post("/v1/images", png_bytes(300, 300, 4), ctype="image/png")
        ok(r.status == 413 and "300x300" in r.err_msg(), "image over --max-pixels: 413", r)
        big = png_bytes(16, 16, 5) + os.urandom(2 << 20)
        r = d.post("/v1/images", big, ctype="image/png")
        ok(r.status == 413 and r.err_code() == "payload_too_large",
           "body over --max-body-mb (Content-Length): 413", r)
        # Chunked: no Content-Length, the limit is checked while receiving.
        s = socket.create_connection(("127.0.0.1", d.port), timeout=60)
        s.sendall(("POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                   "Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n" % key).encode())
        chunk = os.urandom(256 << 10)
        for _ in range(6):
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        resp = b""
        while b"\r\n\r\n" not in resp:
            got = s.recv(65536)
            if not got:
                break
            resp += got
        s.close()
        ok(resp.startswith(b"HTTP/1.1 413"), "chunked body over the limit: 413", resp[:200])
        r = d.post("/v1/images", png_bytes(16, 16, 6), ctype="image/png")
        ok(r.status == 202, "small upload with the key: 202", r)
        body, ctype = multipart([], [("file", "q%d.png" % i, png_bytes(8, 8, 50 + i), "image/png")
                                     for i in range(4)])
        r = d.post("/v1/ingest", body, ctype=ctype)
        ok(r.status == 503 and r.err_code() == "queue_full" and "Retry-After" in r.headers,
           "more than CLIPD_MAX_QUEUE=3 pending: 503 with Retry-After", r)
        r = d.get("/healthz")
        ok(r.status == 200, "still serving", r)
    finally:
        ok(d.stop() == 0, "limits daemon: SIGTERM exit 0")


def test_api_key_reads(tmp):
    d = Daemon("reads", os.path.join(tmp, "data-reads"), ["--api-key", "k1", "--api-key-reads"])
    if not ok(d.start(), "clipd starts with --api-key-reads"):
        return
    try:
        r = d.get("/v1/stats")
        ok(r.status == 401 and r.err_code() == "unauthorized", "--api-key-reads: GET without a key: 401", r)
        r = d.post("/v1/search", {"text": "a"})
        ok(r.status == 401, "--api-key-reads: search without a key: 401", r)
        r = d.get("/healthz")
        ok(r.status == 200, "--api-key-reads: /healthz stays open for probes", r)
        d.key = "k1"
        r = d.get("/v1/stats")
        ok(r.status == 200, "--api-key-reads: GET with the key: 200", r)
    finally:
        ok(d.stop() == 0, "reads daemon: SIGTERM exit 0")


def main():
    return e2e.run_tests('clipd-e2e-auth-', [test_auth_and_limits, test_api_key_reads])


if __name__ == "__main__":
    sys.exit(main())
