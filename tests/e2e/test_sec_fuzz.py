#!/usr/bin/env python3
"""End-to-end regressions for what the libFuzzer harnesses (tests/fuzz) found
in the HTTP layer: bytes a client sends that are not UTF-8 (a %93 in the
path, a message cut inside a character, Latin-1 file names) made json_pack
fail, so a 4xx became a 500 with an empty body and a bulk ingest silently
listed none of the files it accepted. The real clipd on 127.0.0.1, through
test_e2e's harness; TAP output. Environment as test_e2e.py.
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402


def latin1_multipart(files):
    """Like e2e.multipart, but file names go out as raw Latin-1 bytes."""
    boundary = "----clipd-sec-fuzz"
    out = bytearray()
    for name, filename, data in files:
        out += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                "Content-Type: image/png\r\n\r\n" % (boundary, name, filename)).encode("latin-1")
        out += data + b"\r\n"
    out += ("--%s--\r\n" % boundary).encode()
    return bytes(out), "multipart/form-data; boundary=" + boundary


def is_error(r, status, code):
    return r.status == status and r.err_code() == code and r.err_msg() != ""


def test_not_utf8(tmp):
    d = e2e.Daemon("sec-fuzz", os.path.join(tmp, "data"))
    if not e2e.ok(d.start(), "clipd starts"):
        return
    try:
        r = d.request("PUT", "/v1/i%93%9Eges/1", body=b"{}", ctype="application/json")
        e2e.ok(is_error(r, 404, "not_found"),
               "a path that is not UTF-8 gets a 404 with a JSON error, not an empty 500",
               "%d %r" % (r.status, r.body[:300]))
        e2e.ok(r.status == 404 and "\ufffd" in r.err_msg(),
               "the message shows the bytes that are not UTF-8 as U+FFFD", r.err_msg())

        # "no such route: GET /ééé...": the 255-byte message ends inside an é.
        for n in (119, 120):
            path = "/" + "%C3%A9" * n
            r = d.get(path)
            e2e.ok(is_error(r, 404, "not_found"),
                   "a message cut inside a character still gets a JSON 404 (%d characters)" % n,
                   "%d %r" % (r.status, r.body[:300]))

        body, ctype = latin1_multipart([("file", "caf\xe9.png", e2e.png_bytes(8, 8, 41)),
                                        ("file", "na\xefve.png", e2e.png_bytes(8, 8, 42))])
        r = d.post("/v1/ingest", body=body, ctype=ctype)
        items = (r.json or {}).get("items", [])
        e2e.ok(r.status == 202 and r.json["accepted"] == 2 and len(items) == 2,
               "a bulk ingest of two Latin-1 file names lists both items", r.body[:500])
        e2e.ok(sorted(i["name"] for i in items) == ["caf\ufffd.png", "na\ufffdve.png"],
               "their names show the bytes that are not UTF-8 as U+FFFD", items)
        if items:
            g = d.get("/v1/images/%d" % items[0]["id"])
            e2e.ok(g.status == 200 and g.json.get("filename") in ("caf\ufffd.png", "na\ufffdve.png"),
                   "GET of such an image keeps its filename field", g.body[:500])
        else:
            e2e.ok(False, "GET of such an image keeps its filename field", "no items")
        e2e.ok(d.get("/healthz").status == 200, "the daemon stays healthy")
    finally:
        d.stop()


def main():
    return e2e.run_tests("clipd-sec-fuzz-", [test_not_utf8])


if __name__ == "__main__":
    sys.exit(main())
