#!/usr/bin/env python3
"""End-to-end: --fast-decode (JPEG shrink-on-load): a large EXIF-rotated
photo indexed with its oriented size and found by text and by itself, its
embedding within FAST_DECODE_COS of the exact path's, and the setting's
precedence between the config file and the environment.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import base64
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, diag, multipart, Daemon, ConfDaemon, REF, MKJPEG, MODEL  # noqa: E402


# Lowest cosine of a --fast-decode embedding against the exact path's. Measured
# with bench/decode (README, "Fast decode"): on photo-like JPEGs from 2048x1536
# to 6000x4000, shrunk on load at the shipped margin, 1 - cosine was at most
# 5e-6 with tiny-clip-a (1.7e-5 with a ViT-B/32-shaped checkpoint). The bound
# leaves 20x that; a geometry error (a crop one pixel off, a lost EXIF
# rotation) moves tiny-clip-a's embeddings by 1e-2 or more (reference README).
FAST_DECODE_COS = 0.9999


def test_fast_decode(tmp):
    base = os.path.join(tmp, "fast")
    os.makedirs(base)
    big = os.path.join(base, "photo.jpg")
    # 3024x2016 stored, EXIF orientation 6: shown as 2016x3024. Its short
    # side of 2016 is decoded at 1/2 (1008 px >= 3 x 224; 1/4 would be 504).
    p = subprocess.run([MKJPEG, os.path.join(REF, "images", "000000039769.png"), big,
                        "3024", "2016", "6"], stderr=subprocess.PIPE, timeout=120)
    if not ok(p.returncode == 0, "mkjpeg writes a 3024x2016 photo-like JPEG", p.stderr):
        return
    with open(big, "rb") as fh:
        jpeg = fh.read()
    b64 = base64.b64encode(jpeg).decode()
    data = os.path.join(tmp, "data-fast")

    d = Daemon("fast", data, ["--fast-decode", "--precision", "f32"])
    if not ok(d.start(), "clipd --fast-decode starts"):
        return
    iid = None
    try:
        ok("fast decode on" in d.log(), "--fast-decode: the start-up line says fast decode on",
           d.log())
        body, ctype = multipart([], [("image", "photo.jpg", jpeg, "image/jpeg")])
        r = d.post("/v1/images?wait=true", body, ctype=ctype)
        ok(r.status == 200 and r.json["status"] == "ready" and r.json["width"] == 2016 and
           r.json["height"] == 3024,
           "--fast-decode: a large JPEG is indexed, with its full oriented size", r)
        iid = r.json["id"] if r.status == 200 else None
        r = d.post("/v1/search", {"text": "two cats", "k": 1})
        ok(r.status == 200 and [x["id"] for x in r.json["results"]] == [iid],
           "--fast-decode: the image is searchable by text", r)
        r = d.post("/v1/search", {"image_b64": b64, "k": 1})
        ok(r.status == 200 and r.json["results"] and r.json["results"][0]["id"] == iid and
           r.json["results"][0]["score"] > 1 - 1e-5,
           "--fast-decode: a query by the same file is decoded the same way (score 1)", r)
    finally:
        ok(d.stop() == 0, "fast-decode daemon: SIGTERM exit 0")
    if iid is None:
        return

    # The same data without fast decode: the query takes the exact path, so
    # its score against the stored embedding is the cosine of the two paths.
    # Off through the environment, which wins over the config file's on.
    conf = os.path.join(base, "fast.conf")
    with open(conf, "w") as f:
        f.write("model = %s\ndata = %s\nlisten = 127.0.0.1:0\nprecision = f32\n"
                "fast-decode = true\n" % (MODEL, data))
    d = ConfDaemon("fast-exact", data, ["--config", conf],
                   env_extra={"CLIPD_FAST_DECODE": "0"})
    if not ok(d.start(), "clipd with fast-decode = true in the file, CLIPD_FAST_DECODE=0, starts"):
        return
    try:
        ok("fast decode off" in d.log(), "precedence: CLIPD_FAST_DECODE=0 over the file's true",
           d.log())
        r = d.post("/v1/search", {"image_b64": b64, "k": 1})
        good = r.status == 200 and r.json["results"] and r.json["results"][0]["id"] == iid
        cos = r.json["results"][0]["score"] if good else None
        if good:
            diag("--fast-decode vs exact: cosine %.7f (bound %g)" % (cos, FAST_DECODE_COS))
        ok(good and cos >= FAST_DECODE_COS,
           "--fast-decode embedding vs the exact path: cosine >= %g" % FAST_DECODE_COS, r)
    finally:
        ok(d.stop() == 0, "exact daemon: SIGTERM exit 0")

    # The file's true alone turns it on.
    d = ConfDaemon("fast-file", data, ["--config", conf])
    if ok(d.start(), "clipd with fast-decode = true in the config file starts"):
        try:
            ok("fast decode on" in d.log(), "config file: fast-decode = true is in force", d.log())
        finally:
            ok(d.stop() == 0, "config-file fast-decode daemon: SIGTERM exit 0")


def main():
    return e2e.run_tests('clipd-e2e-fast-', [test_fast_decode])


if __name__ == "__main__":
    sys.exit(main())
