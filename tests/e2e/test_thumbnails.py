#!/usr/bin/env python3
"""End-to-end: GET /v1/images/{id}/thumbnail: sizes and clamping, the disk
cache (one file per size, ETag, 304), concurrent first requests, EXIF
orientation, RGBA input, a truncated JPEG's 422, no descriptor leak, and the
cache emptied by DELETE.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import os
import random
import re
import struct
import sys
import threading
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, png_chunk, Daemon, REF  # noqa: E402


# -- thumbnails --

def jpeg_size(data):
    """(width, height, components) from a JPEG's SOF segment, or None."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        seglen = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h, data[i + 9]
        i += 2 + seglen
    return None


def jpeg_with_orientation(jpeg, orientation):
    """The JPEG with an EXIF APP1 segment saying orientation (big-endian TIFF)."""
    tiff = (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) +
            struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def png_rgba(w, h, seed):
    rnd = random.Random(seed)
    raw = bytearray()
    for _ in range(h):
        raw.append(0)
        raw.extend(rnd.getrandbits(8) for _ in range(w * 4))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(bytes(raw))) + png_chunk(b"IEND", b""))


def test_thumbnails(tmp):
    d = Daemon("thumbs", os.path.join(tmp, "data-thumbs"))
    if not ok(d.start(), "clipd starts for the thumbnail checks"):
        return
    thumbs_dir = os.path.join(d.data, "thumbs")
    try:
        with open(os.path.join(REF, "images", "rocket.jpg"), "rb") as fh:
            rocket = fh.read()
        r = d.post("/v1/images?wait=true", rocket, ctype="image/jpeg")
        if not ok(r.status == 200, "upload a JPEG", r):
            return
        img = r.json
        iid, sha, W, H = img["id"], img["sha256"], img["width"], img["height"]
        ok(img.get("thumbnail_url") == "/v1/images/%d/thumbnail" % iid,
           "image JSON carries thumbnail_url", img)
        r = d.get("/v1/images/%d" % iid)
        ok(r.status == 200 and r.json.get("thumbnail_url") == "/v1/images/%d/thumbnail" % iid,
           "GET /v1/images/{id} carries thumbnail_url", r)
        r = d.post("/v1/search", {"text": "a rocket", "k": 1})
        ok(r.status == 200 and r.json["results"] and
           r.json["results"][0].get("thumbnail_url") == "/v1/images/%d/thumbnail" % iid,
           "search results carry thumbnail_url", r)

        r = d.get("/v1/images/%d/thumbnail?size=100" % iid)
        size = jpeg_size(r.body) if r.status == 200 else None
        ok(r.status == 200 and r.headers.get("Content-Type") == "image/jpeg" and
           r.body[:3] == b"\xff\xd8\xff" and size and 16 <= max(size[:2]) <= 100,
           "GET thumbnail?size=100: a JPEG whose long side is at most 100 (%s)" % (size,),
           (r.status, r.headers, r.body[:60]))
        ok(size and abs(size[0] / size[1] - W / H) < 0.05, "the aspect ratio is kept", (size, W, H))
        ok(r.headers.get("Cache-Control") == "public, max-age=31536000, immutable" and
           re.match(r'^"[^"]+"$', r.headers.get("ETag", "")),
           "Cache-Control immutable for a year, and a quoted ETag", r.headers)
        files = sorted(f for f in os.listdir(thumbs_dir)) if os.path.isdir(thumbs_dir) else []
        ok(len(files) == 1 and files[0].startswith(sha + "-") and files[0].endswith(".jpg"),
           "the thumbnail is cached as thumbs/<sha256>-<size>.jpg", files)
        path = os.path.join(thumbs_dir, files[0]) if files else ""
        st = os.stat(path) if path else None
        r2 = d.get("/v1/images/%d/thumbnail?size=100" % iid)
        st2 = os.stat(path) if path else None
        ok(r2.status == 200 and r2.body == r.body and r2.headers.get("ETag") == r.headers.get("ETag")
           and r2.headers.get("X-Thumbnail-Cache") == "hit" and
           r.headers.get("X-Thumbnail-Cache") == "miss" and st and st2 and
           (st.st_ino, st.st_mtime_ns) == (st2.st_ino, st2.st_mtime_ns),
           "the second request is served from the cache file, unchanged",
           (r.headers.get("X-Thumbnail-Cache"), r2.headers.get("X-Thumbnail-Cache")))
        with open(path, "rb") as fh:
            ok(fh.read() == r.body, "the cache file holds the bytes served")
        r3 = d.get("/v1/images/%d/thumbnail?size=100" % iid,
                   headers={"If-None-Match": r.headers.get("ETag", "")})
        ok(r3.status == 304 and r3.body == b"" and r3.headers.get("ETag") == r.headers.get("ETag"),
           "If-None-Match with the ETag: 304 without a body", r3)

        r = d.get("/v1/images/%d/thumbnail" % iid)
        s = jpeg_size(r.body) if r.status == 200 else None
        ok(s and max(s[:2]) <= 256 and max(s[:2]) >= 200, "no size: the default, 256 (%s)" % (s,), r)
        r = d.get("/v1/images/%d/thumbnail?size=99999" % iid)
        s = jpeg_size(r.body) if r.status == 200 else None
        ok(s and s[:2] == (W, H), "a size over the image is clamped and never enlarges (%s)" % (s,), r)
        r = d.get("/v1/images/%d/thumbnail?size=0" % iid)
        s = jpeg_size(r.body) if r.status == 200 else None
        ok(s and max(s[:2]) == 16, "size=0 is clamped to 16 (%s)" % (s,), r)
        for bad in ("abc", "12.5", "", "1e3", "%20"):
            r = d.get("/v1/images/%d/thumbnail?size=%s" % (iid, bad))
            ok(r.status == 400 and r.err_code() == "bad_request" and "size" in r.err_msg(),
               "size=%r: 400 naming the parameter" % bad, r)
        r = d.get("/v1/images/99999999/thumbnail")
        ok(r.status == 404 and r.err_code() == "not_found", "unknown id: 404", r)

        # Concurrent first requests of one size: all the same, one file.
        results = []

        def fetch():
            results.append(d.get("/v1/images/%d/thumbnail?size=512" % iid))
        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok(len(results) == 8 and all(x.status == 200 and x.body == results[0].body for x in results)
           and len([f for f in os.listdir(thumbs_dir) if f.startswith(sha)]) == 5 and
           not [f for f in os.listdir(thumbs_dir) if f.startswith(".")],
           "8 concurrent first requests get the same bytes; no temporary file is left",
           sorted(os.listdir(thumbs_dir)))

        # EXIF orientation 6: the landscape JPEG comes out portrait.
        r = d.post("/v1/images", jpeg_with_orientation(rocket, 6), ctype="image/jpeg")
        rid = r.json["id"] if r.status == 202 else 0
        r = d.get("/v1/images/%d/thumbnail?size=128" % rid)
        s = jpeg_size(r.body) if r.status == 200 else None
        ok(s and s[1] > s[0] and W > H, "EXIF orientation is applied (%s from %dx%d)" % (s, W, H), r)
        # Transparency and 16 bits per channel still make an 8-bit RGB JPEG.
        r = d.post("/v1/images", png_rgba(50, 40, 5), ctype="image/png")
        aid = r.json["id"] if r.status == 202 else 0
        r = d.get("/v1/images/%d/thumbnail?size=32" % aid)
        s = jpeg_size(r.body) if r.status == 200 else None
        ok(s and s[0] == 32 and s[2] == 3, "an RGBA PNG gives an RGB JPEG (%s)" % (s,), r)
        # A truncated JPEG (stored, fails to index) has no thumbnail: 422.
        r = d.post("/v1/images", rocket[:20000], ctype="image/jpeg")
        tid = r.json["id"] if r.status == 202 else 0
        r = d.get("/v1/images/%d/thumbnail" % tid)
        ok(r.status == 422 and r.err_code() == "undecodable_image" and
           ("%d" % tid) in r.err_msg() and "Cache-Control" not in r.headers,
           "a truncated JPEG: 422 naming the image, not cacheable", (r, r.headers))
        ok(not [f for f in os.listdir(thumbs_dir) if f.startswith(".")],
           "a failed thumbnail leaves no temporary file", os.listdir(thumbs_dir))

        # No descriptor leaks: made, cached, failed and unknown thumbnails.
        def nfds():
            return len(os.listdir("/proc/%d/fd" % d.proc.pid))
        d.get("/v1/images/%d/thumbnail?size=48" % aid)
        fds0 = nfds()
        for i in range(12):
            d.get("/v1/images/%d/thumbnail?size=%d" % (aid, 64 + 16 * i))
            d.get("/v1/images/%d/thumbnail?size=%d" % (aid, 64 + 16 * i))
            d.get("/v1/images/%d/thumbnail?size=%d" % (tid, 64 + 16 * i))
            d.get("/v1/images/%d/thumbnail" % (10 ** 7 + i))
        fds1 = nfds()
        ok(fds1 <= fds0 + 2, "no descriptor leak from thumbnails (%d before, %d after)" %
           (fds0, fds1), os.listdir("/proc/%d/fd" % d.proc.pid))

        # Deleting the image removes its cached thumbnails.
        r = d.delete("/v1/images/%d" % iid)
        left = [f for f in os.listdir(thumbs_dir) if f.startswith(sha)]
        r2 = d.get("/v1/images/%d/thumbnail" % iid)
        ok(r.status == 200 and not left and r2.status == 404,
           "DELETE removes the cached thumbnails; the thumbnail is then 404", (r, left, r2))
    finally:
        ok(d.stop() == 0, "thumbs daemon: SIGTERM exit 0")


def main():
    return e2e.run_tests('clipd-e2e-thumbs-', [test_thumbnails])


if __name__ == "__main__":
    sys.exit(main())
