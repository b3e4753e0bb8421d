#!/usr/bin/env python3
"""Accepted image formats end to end: JPEG XL, and the one list.

The real clipd on 127.0.0.1 with the reference kit's tiny model. The
upload sniffer, the decoder and the thumbnailer all take their formats from
the model's one list (clip_image_format_accepted, model/clip.h), which
counts a format only where libvips loads it unblocked:
  - a refusal of something that is not an image names the formats of that
    list: JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF, and JPEG XL where it is
    decoded (libvips 8.14.1 flags jxlload untrusted and clipd blocks such
    loaders: there it is not);
  - where JPEG XL is decoded, an upload, as a bare codestream (what libvips'
    jxlsave writes, through mkjxl) and inside the ISO BMFF container (built
    here around that codestream), is accepted, indexed, thumbnailed and
    searchable; its lossless pixels embed as the PNG they came from; one
    over --max-pixels is refused by the decoder's header check (the
    sniffer cannot read its size): 413 as a query, 422 as an upload;
  - where it is not, both are refused at the door (415, the formats named),
    never accepted and failed later.

Output is TAP; the harness (Daemon, ok, ...) is test_e2e.py's.
"""
import base64
import os
import re
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_thumbnails import jpeg_size  # noqa: E402

ok = e2e.ok
MKJXL = os.environ.get("CLIPD_MKJXL", "")
SRC = os.path.join(e2e.REF, "images", "000000039769.png")
# The message text of clip_image_formats_text, the one list's labels, with
# JPEG XL and without (where its loader is blocked).
FORMATS = "JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF or JPEG XL"
FORMATS_NO_JXL = "JPEG, PNG, WebP, GIF, TIFF or HEIF/AVIF"


def mkjxl(out, size=None):
    args = [MKJXL, SRC, out] + ([str(size[0]), str(size[1])] if size else [])
    p = subprocess.run(args, capture_output=True)
    if not ok(p.returncode == 0, "mkjxl writes %s" % os.path.basename(out), p.stderr.decode()):
        return None
    with open(out, "rb") as fh:
        return fh.read()


def jxl_container(codestream):
    """The codestream in the ISO/IEC 18181-2 container: the JPEG XL
    signature box, an ftyp box of brand "jxl ", a jxlc box."""
    sig = b"\0\0\0\x0cJXL \r\n\x87\n"
    ftyp = struct.pack(">I", 20) + b"ftyp" + b"jxl " + struct.pack(">I", 0) + b"jxl "
    jxlc = struct.pack(">I", 8 + len(codestream)) + b"jxlc" + codestream
    return sig + ftyp + jxlc


def b64(data):
    return base64.b64encode(data).decode()


def test_jxl(tmp):
    bare = mkjxl(os.path.join(tmp, "full.jxl"))
    small = mkjxl(os.path.join(tmp, "small.jxl"), (64, 48))
    if bare is None or small is None:
        return
    ok(bare[:2] == b"\xff\x0a", "libvips writes a bare codestream (FF 0A)", bare[:4])
    boxed = jxl_container(bare)
    d = e2e.Daemon("formats", os.path.join(tmp, "data"))
    if not ok(d.start(), "clipd starts"):
        return
    try:
        r = d.post("/v1/images", b"plain text, not an image", ctype="image/png")
        m = re.search(r"the content is not (.*)$", r.err_msg())
        listed = m.group(1) if r.status == 415 and m else ""
        ok(listed in (FORMATS, FORMATS_NO_JXL),
           "an upload that is not an image: 415 naming the formats (%s)" % listed, r)
        r = d.post("/v1/search", {"image_b64": b64(b"not an image")})
        ok(r.status == 415 and r.err_msg().endswith("the content is not " + listed),
           "a query that is not an image: 415 naming the same formats", r)
        if listed == FORMATS:
            jxl_decoded(d, bare, boxed)
        else:
            e2e.diag("JPEG XL is not decoded here: this libvips flags jxlload untrusted")
            jxl_refused(d, bare, boxed, listed)
    finally:
        d.stop()
    if listed == FORMATS:
        jxl_pixel_limit(tmp, small)
    else:
        e2e.skip("a JPEG XL over --max-pixels: JPEG XL is not decoded here")


def jxl_refused(d, bare, boxed, listed):
    for name, data in [("jxl", bare), ("jxl-container", boxed)]:
        r = d.post("/v1/images?wait=true", data, ctype="image/jxl")
        ok(r.status == 415 and r.err_msg().endswith(listed),
           "upload %s: refused at the door (415), not queued to fail" % name, r)
        r = d.post("/v1/search", {"image_b64": b64(data)})
        ok(r.status == 415, "query %s: 415" % name, r)
    s = d.get("/v1/stats").json
    ok(s["images"]["total"] == 0, "nothing was stored", s)


def jxl_decoded(d, bare, boxed):
    with open(SRC, "rb") as fh:
        png = fh.read()
    ids = {}
    for name, data, ctype in [("png", png, "image/png"), ("jxl", bare, "image/jxl"),
                              ("jxl-container", boxed, "image/jxl")]:
        r = d.post("/v1/images?wait=true", data, ctype=ctype)
        if not ok(r.status == 200 and r.json.get("status") == "ready",
                  "upload %s: indexed" % name, r):
            continue
        ids[name] = r.json["id"]
        if name != "png":
            ok(r.json.get("mime") == "image/jxl" and
               (r.json.get("width"), r.json.get("height")) == (640, 480),
               "%s: mime image/jxl, size 640x480 from the decoder" % name, r.json)
    if len(ids) != 3:
        return
    for name in ("jxl", "jxl-container"):
        r = d.get("/v1/images/%d/thumbnail?size=64" % ids[name])
        size = jpeg_size(r.body) if r.status == 200 else None
        ok(r.status == 200 and size and max(size[:2]) == 64,
           "%s: a JPEG thumbnail, long side 64 (%s)" % (name, size), r)
    # Lossless: the JPEG XL query finds the three as one picture.
    r = d.post("/v1/search", {"image_b64": b64(bare), "k": 3})
    got = {x["id"]: x["score"] for x in r.json["results"]} if r.status == 200 else {}
    ok(set(got) == set(ids.values()) and max(got.values()) - min(got.values()) < 1e-4,
       "search by the JPEG XL: PNG and both JPEG XL score alike", r)


def jxl_pixel_limit(tmp, small):
    d = e2e.Daemon("formats-limit", os.path.join(tmp, "data-limit"), ["--max-pixels", "3000"])
    if not ok(d.start(), "clipd starts with --max-pixels 3000"):
        return
    try:
        r = d.post("/v1/search", {"image_b64": b64(small)})
        ok(r.status == 413 and "64x48" in r.err_msg() and "3000" in r.err_msg(),
           "a 64x48 JPEG XL query over --max-pixels 3000: 413 from its header", r)
        r = d.post("/v1/images?wait=true", small, ctype="image/jxl")
        ok(r.status == 422 and "64x48" in r.err_msg() and "over the limit" in r.err_msg(),
           "the same as an upload: accepted by the sniffer, failed by the decoder's "
           "header check", r)
        r = d.post("/v1/search", {"text": "a cat"})
        ok(r.status == 200, "the daemon answers after", r)
    finally:
        d.stop()


if __name__ == "__main__":
    sys.exit(e2e.run_tests("clipd-formats-", [test_jxl], need=[MKJXL],
                           need_msg="CLIPD_BIN, CLIPD_REFERENCE or CLIPD_MKJXL not set"))
