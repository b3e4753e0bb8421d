#!/usr/bin/env python3
"""Security end-to-end tests of clipd's data and caches (issue 12: item 9,
item 10 and the thumbnail, API-key and nosniff items of "lower").

The real clipd on 127.0.0.1 with the harness of test_e2e.py (same
environment variables). Each check below fails on the daemon without its
fix:
  - an image uploaded through the API outlives a watched copy of it that
    comes and goes (and one the watcher made outlives its file once the same
    content is uploaded); the watcher's own images still go;
  - a refused upload (metadata nested too deep or too long, or a row the
    database refuses) leaves no file in DATA/blobs, and never takes a blob
    another image uses;
  - thumbnails come in a fixed set of sizes, their cache stays within
    --thumb-cache-mb (oldest removed first), and a request that finds no
    free thumbnail maker within --thumb-wait-ms gets a 503 with Retry-After;
  - an empty or unusable API key is refused at start-up;
  - the original file and thumbnails carry X-Content-Type-Options: nosniff.
Output is TAP.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402

ok = e2e.ok


def blob_files(data):
    """Every file in DATA/blobs/xx/ (tmp/ holds uploads in flight)."""
    root = os.path.join(data, "blobs")
    out = []
    for sub in sorted(os.listdir(root)):
        p = os.path.join(root, sub)
        if sub != "tmp" and os.path.isdir(p):
            out.extend(os.path.join(sub, f) for f in os.listdir(p))
    return sorted(out)


def wait_log(d, pattern, after=0, timeout=30):
    """The first match of pattern in the daemon's log past offset after."""
    end = time.time() + timeout
    while time.time() < end:
        m = re.search(pattern, d.log()[after:])
        if m:
            return m
        time.sleep(0.1)
    return None


def found_by_content(d, data, iid):
    r = d.post("/v1/search", {"image_b64": base64.b64encode(data).decode(), "k": 1})
    return (r.status == 200 and r.json["results"] and r.json["results"][0]["id"] == iid and
            abs(r.json["results"][0]["score"] - 1) < 1e-4)


def nested(depth):
    """A JSON object nested depth levels deep ({} is 1)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


# ---- item 9: the watcher deletes only what it created ---------------------------

def test_watch_keeps_uploads(tmp):
    w = os.path.join(tmp, "watched")
    os.makedirs(w)
    d = e2e.Daemon("watch", os.path.join(tmp, "data-watch"),
                   ["--watch", w, "--rescan-seconds", "2", "--workers", "1",
                    "--log-level", "debug"])
    if not ok(d.start(), "clipd starts with --watch"):
        return
    try:
        # Uploaded through the API, then an identical copy in the folder.
        up = e2e.png_bytes(24, 20, 9001)
        r = d.post("/v1/images?wait=true&filename=holiday.png", up, ctype="image/png")
        if not ok(r.status == 200, "upload an image through the API", r):
            return
        uid = r.json["id"]
        before_blobs = blob_files(d.data)
        off = len(d.log())
        with open(os.path.join(w, "copy.png"), "wb") as fh:
            fh.write(up)
        m = wait_log(d, r"copy\.png is image %d \(known content\)" % uid, off)
        ok(m, "the watcher sees the copy as the uploaded image", d.log()[off:])
        off = len(d.log())
        os.unlink(os.path.join(w, "copy.png"))
        m = wait_log(d, r"watch: .*\b1 (files )?removed", off)
        ok(m, "the watcher takes the copy's removal", d.log()[off:])
        off = len(d.log())
        ok(wait_log(d, r"watch: rescan in", off), "and a rescan runs after it")
        r = d.get("/v1/images/%d" % uid)
        ok(r.status == 200 and r.json["filename"] == "holiday.png",
           "the uploaded image is still there after its watched copy went", r)
        ok(found_by_content(d, up, uid), "and still searchable by its content")
        ok(blob_files(d.data) == before_blobs, "and its blob is kept",
           (before_blobs, blob_files(d.data)))
        r = d.get("/v1/images/%d/file" % uid)
        ok(r.status == 200 and r.body == up, "and its original is served", r)

        # Made by the watcher first, then the same content uploaded: the
        # upload holds it, so it outlives its file.
        mine = e2e.png_bytes(20, 24, 9002)
        with open(os.path.join(w, "first.png"), "wb") as fh:
            fh.write(mine)
        wid = e2e.wait_until(lambda: e2e.images_by_name(d).get("first.png"))
        if not ok(wid, "a file put in the folder first becomes an image"):
            return
        r = d.post("/v1/images", mine, ctype="image/png")
        ok(r.status == 200 and r.json.get("duplicate") and r.json["id"] == wid,
           "uploading the same content answers the watcher's image as a duplicate", r)
        off = len(d.log())
        os.unlink(os.path.join(w, "first.png"))
        ok(wait_log(d, r"watch: .*\b1 (files )?removed", off), "the watcher takes its removal")
        off = len(d.log())
        ok(wait_log(d, r"watch: rescan in", off), "and a rescan runs after it")
        ok(d.get("/v1/images/%d" % wid).status == 200 and found_by_content(d, mine, wid),
           "an image uploaded again stays when its watched file goes")

        # The watcher's own image still goes with its file.
        own = e2e.png_bytes(22, 22, 9003)
        with open(os.path.join(w, "own.png"), "wb") as fh:
            fh.write(own)
        oid = e2e.wait_until(lambda: e2e.images_by_name(d).get("own.png"))
        ok(oid, "a file only the watcher knows becomes an image")
        r = d.get("/v1/images/%d/thumbnail?size=64" % oid)
        osha = hashlib.sha256(own).hexdigest()
        ok(r.status == 200 and thumbs_of(d, osha), "its thumbnail is cached", thumbs_of(d, osha))
        os.unlink(os.path.join(w, "own.png"))
        ok(oid and e2e.wait_until(lambda: d.get("/v1/images/%d" % oid).status == 404),
           "and goes when its file goes")
        ok(not thumbs_of(d, osha), "and its cached thumbnails with it", thumbs_of(d, osha))
    finally:
        ok(d.stop() == 0, "watch daemon: SIGTERM exit 0")


# ---- item 10: no blob without its row ---------------------------------------------

def test_refused_uploads_leave_no_blob(tmp):
    d = e2e.Daemon("blobs", os.path.join(tmp, "data-blobs"), ["--workers", "1"])
    if not ok(d.start(), "clipd starts for the blob checks"):
        return
    try:
        keep = e2e.png_bytes(16, 16, 9100)
        r = d.post("/v1/images?wait=true", keep, ctype="image/png")
        if not ok(r.status == 200, "upload an image to keep", r):
            return
        kid = r.json["id"]
        base = blob_files(d.data)
        ok(len(base) == 1, "one blob for one image", base)

        # Nested between SQLite's json_valid limit (2,000) and jansson's
        # (2,048), and just past the documented 32.
        n = 0
        for depth in (2010, 2047, 33):
            n += 1
            img = e2e.png_bytes(16, 16, 9110 + n)
            body, ctype = e2e.multipart([("meta", nested(depth))], [("image", "a.png", img,
                                                                     "image/png")])
            r = d.post("/v1/images", body, ctype=ctype)
            ok(r.status == 400 and r.err_code() == "bad_request" and "32 levels" in r.err_msg(),
               "multipart meta nested %d deep: 400 naming the limit" % depth, r)
            r = d.post("/v1/images?meta=%s" % nested(depth).replace('"', "%22"),
                       e2e.png_bytes(16, 16, 9120 + n), ctype="image/png")
            ok(r.status == 400 and "32 levels" in r.err_msg(),
               "raw upload with ?meta nested %d deep: 400" % depth, r)
            body, ctype = e2e.multipart([("meta", nested(depth))],
                                        [("file", "b.png", e2e.png_bytes(16, 16, 9130 + n),
                                          "image/png")])
            r = d.post("/v1/ingest", body, ctype=ctype)
            ok(r.status == 400 and "32 levels" in r.err_msg(),
               "bulk ingest with a meta part nested %d deep: 400" % depth, r)
        big = json.dumps({"caption": "x" * 70000})
        body, ctype = e2e.multipart([("meta", big)], [("image", "c.png",
                                                       e2e.png_bytes(16, 16, 9140), "image/png")])
        r = d.post("/v1/images", body, ctype=ctype)
        ok(r.status == 413 and "65536" in r.err_msg(), "meta over 64 KiB: 413 naming the limit", r)
        ok(blob_files(d.data) == base, "refused uploads leave no file in DATA/blobs",
           (base, blob_files(d.data)))

        # Metadata within the limits is stored as before.
        body, ctype = e2e.multipart([("meta", nested(32))],
                                    [("image", "d.png", e2e.png_bytes(16, 16, 9150), "image/png")])
        r = d.post("/v1/images", body, ctype=ctype)
        ok(r.status == 202, "meta nested 32 deep is accepted", r)
        base = blob_files(d.data)
        r = d.request("PATCH", "/v1/images/%d" % kid, ('{"meta":%s}' % nested(40)).encode(),
                      ctype="application/json")
        ok(r.status == 400 and "32 levels" in r.err_msg(), "PATCH meta nested 40 deep (body limit 64, meta 32): 400", r)
        r = d.post("/v1/texts", ('{"texts":[{"text":"a","meta":%s}]}' % nested(40)).encode(),
                   ctype="application/json")
        ok(r.status == 400 and "texts[0].meta" in r.err_msg() and "32 levels" in r.err_msg(),
           "a text with meta nested 40 deep: 400 naming the text", r)
        r = d.get("/v1/images/%d" % kid)
        ok(r.status == 200 and r.json["meta"] == {}, "the image's metadata is untouched", r)

        # The database refuses the row after the blob was committed (a
        # trigger stands in for any failing insert): the blob goes again,
        # and a blob another image uses is never taken.
        db = sqlite3.connect(os.path.join(d.data, "clipd.db"), timeout=30)
        db.execute("CREATE TRIGGER e2e_refuse BEFORE INSERT ON images "
                   "WHEN NEW.filename = 'refused.png' "
                   "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        db.commit()
        try:
            r = d.post("/v1/images?filename=refused.png", e2e.png_bytes(16, 16, 9160),
                       ctype="image/png")
            ok(400 <= r.status < 600 and r.status != 202,
               "an insert the database refuses fails the upload", r)
            body, ctype = e2e.multipart([], [("file", "refused.png", e2e.png_bytes(16, 16, 9161),
                                              "image/png")])
            r = d.post("/v1/ingest", body, ctype=ctype)
            ok(r.status == 202 and len(r.json["rejected"]) == 1 and r.json["accepted"] == 0,
               "in a bulk ingest it is a rejected file", r)
            r = d.post("/v1/images?filename=refused.png", keep, ctype="image/png")
            ok(r.status == 200 and r.json.get("duplicate") and r.json["id"] == kid,
               "known content under that name is a duplicate (no insert)", r)
            ok(blob_files(d.data) == base, "no blob is left for a refused row, none is taken",
               (base, blob_files(d.data)))
        finally:
            db.execute("DROP TRIGGER e2e_refuse")
            db.commit()
            db.close()
        r = d.get("/v1/images/%d/file" % kid)
        ok(r.status == 200 and r.body == keep, "the kept image's original is still served", r)
        r = d.post("/v1/images?filename=refused.png&wait=true", e2e.png_bytes(16, 16, 9160),
                   ctype="image/png")
        ok(r.status == 200 and len(blob_files(d.data)) == len(base) + 1,
           "the same upload succeeds once the database takes it", r)
    finally:
        ok(d.stop() == 0, "blobs daemon: SIGTERM exit 0")


# ---- thumbnails: fixed sizes, a bounded cache, a bounded wait ---------------------

def thumbs_of(d, sha=""):
    p = os.path.join(d.data, "thumbs")
    return sorted(f for f in os.listdir(p) if f.startswith(sha)) if os.path.isdir(p) else []


def test_thumbnail_cache(tmp):
    d = e2e.Daemon("thumbs", os.path.join(tmp, "data-thumbs"),
                   ["--workers", "1", "--thumb-cache-mb", "1"])
    if not ok(d.start(), "clipd starts with --thumb-cache-mb 1"):
        return
    try:
        r = d.post("/v1/images?wait=true", e2e.png_bytes(40, 30, 9200), ctype="image/png")
        if not ok(r.status == 200, "upload a small image", r):
            return
        iid, sha = r.json["id"], r.json["sha256"]
        for size in range(16, 1025, 16):
            d.get("/v1/images/%d/thumbnail?size=%d" % (iid, size))
        d.get("/v1/images/%d/thumbnail?size=5000" % iid)
        d.get("/v1/images/%d/thumbnail?size=1" % iid)
        want = sorted("%s-%d.jpg" % (sha, s) for s in (16, 32, 64, 128, 256, 512, 1024))
        ok(thumbs_of(d, sha) == want,
           "every size from 1 to 5000 is cached as one of 7 files (16 to 1024, powers of 2)",
           thumbs_of(d, sha))
        r = d.get("/v1/images/%d/thumbnail?size=100" % iid)
        ok(r.status == 200 and r.headers.get("X-Thumbnail-Cache") == "hit" and
           r.headers.get("ETag") == '"%s-64"' % sha,
           "size=100 is served as the cached 64", r.headers)

        # Noise thumbnails of ~100+ KB each: more than the 1 MiB allowed.
        ids = []
        for i in range(10):
            png = e2e.png_bytes(512, 512, 9210 + i)
            r = d.post("/v1/images", png, ctype="image/png")
            if r.status == 202:
                ids.append((r.json["id"], hashlib.sha256(png).hexdigest()))
        ok(len(ids) == 10, "upload 10 noise images")
        made = 0
        for iid2, _ in ids:
            r = d.get("/v1/images/%d/thumbnail?size=512" % iid2)
            made += r.status == 200 and len(r.body) > 0
            time.sleep(0.01)  # distinct creation order on disk
        ok(made == 10, "every thumbnail is served, also those made past the limit")
        files = thumbs_of(d)
        total = sum((os.path.getsize(os.path.join(d.data, "thumbs", f)) + 4095) // 4096 * 4096
                    for f in files)
        big = sum(f.endswith("-512.jpg") and f[:64] in {s for _, s in ids} for f in files)
        ok(total <= 1 << 20 and 0 < big < 10,
           "the cache stays within 1 MiB (%d bytes in %d files, %d of 10 large)" %
           (total, len(files), big), files)
        ok("%s-512.jpg" % ids[-1][1] in files and "%s-512.jpg" % ids[0][1] not in files,
           "the oldest thumbnails went first, the newest stays", files)
        r = d.get("/v1/images/%d/thumbnail?size=512" % ids[0][0])
        ok(r.status == 200 and r.headers.get("X-Thumbnail-Cache") == "miss",
           "an evicted thumbnail is made again", r.headers)
    finally:
        ok(d.stop() == 0, "thumbs daemon: SIGTERM exit 0")

    # A restart counts what is on disk, and clears a crash's temporary file.
    tdir = os.path.join(d.data, "thumbs")
    with open(os.path.join(tdir, ".tmp-crash1"), "wb") as fh:
        fh.write(b"x" * 1000)
    d2 = e2e.Daemon("thumbs2", d.data, ["--workers", "1", "--thumb-cache-mb", "1"])
    if not ok(d2.start(), "clipd restarts on the same data"):
        return
    try:
        r = d2.get("/v1/images/%d/thumbnail?size=512" % ids[1][0])
        ok(r.status == 200, "a thumbnail after the restart", r)
        files = thumbs_of(d2)
        total = sum((os.path.getsize(os.path.join(tdir, f)) + 4095) // 4096 * 4096
                    for f in files)
        ok(total <= 1 << 20 and ".tmp-crash1" not in os.listdir(tdir),
           "after a restart the cache is still within 1 MiB and the leftover temporary file "
           "is gone (%d bytes)" % total, os.listdir(tdir))
    finally:
        ok(d2.stop() == 0, "thumbs2 daemon: SIGTERM exit 0")


def test_thumbnail_wait(tmp):
    d = e2e.Daemon("thumbwait", os.path.join(tmp, "data-thumbwait"),
                   ["--workers", "1", "--thumb-wait-ms", "0"])
    if not ok(d.start(), "clipd starts with --thumb-wait-ms 0"):
        return
    try:
        ids = []
        for i in range(6):
            r = d.post("/v1/images", e2e.png_bytes(1200, 1200, 9300 + i), ctype="image/png")
            if r.status == 202:
                ids.append(r.json["id"])
        if not ok(len(ids) == 6, "upload 6 large noise images"):
            return
        busy = []
        for rnd, size in enumerate((1024, 512, 256)):
            results = []
            lock = threading.Lock()

            def fetch(iid):
                r = d.get("/v1/images/%d/thumbnail?size=%d" % (iid, size))
                with lock:
                    results.append(r)
            threads = [threading.Thread(target=fetch, args=(i,)) for i in ids]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            busy = [r for r in results if r.status == 503]
            if busy:
                break
        ok(busy and all(r.err_code() == "queue_full" and r.headers.get("Retry-After") and
                        "retry later" in r.err_msg() for r in busy),
           "with every maker busy, a thumbnail request gets 503 queue_full with Retry-After "
           "instead of waiting (%d of 6)" % len(busy), busy[:1])
        ok(all(r.status in (200, 503) for r in results),
           "the others are served", [r.status for r in results])
        r = d.get("/v1/images/%d/thumbnail?size=%d" % (ids[0], size))
        ok(r.status == 200, "once they finish, the same request is served", r)
    finally:
        ok(d.stop() == 0, "thumbwait daemon: SIGTERM exit 0")


def test_thumbnail_decode_limit(tmp):
    """Thumbnails decode through the same guard as the model (issue 12,
    item 4): a progressive JPEG of 2,000 scans, stored because its header
    is fine, gets 422 decode_limit for its thumbnail before any pixel is
    decoded, as its indexing did, and the daemon answers as before."""
    if not e2e.MKJPEG:
        e2e.skip("CLIPD_MKJPEG is not set")
        return
    bomb = os.path.join(tmp, "scans.jpg")
    p = subprocess.run([e2e.MKJPEG, "--scans", "2000", bomb, "8192", "8192"],
                       capture_output=True, text=True)
    if not ok(p.returncode == 0, "mkjpeg writes an 8192x8192 JPEG of 2,000 scans", p.stderr):
        return
    with open(bomb, "rb") as f:
        data = f.read()
    d = e2e.Daemon("thumbscans", os.path.join(tmp, "data-thumbscans"), ["--workers", "1"])
    if not ok(d.start(), "clipd starts for the thumbnail decode limit"):
        return
    try:
        r = d.post("/v1/images", data, ctype="image/jpeg")
        iid = (r.json or {}).get("id")
        if not ok(r.status == 202 and iid, "the upload is accepted (its header is within "
                  "--max-pixels)", r):
            return
        d.wait_idle(timeout=120)
        img = d.get("/v1/images/%d" % iid).json or {}
        ok(img.get("status") == "failed" and "scans" in json.dumps(img),
           "its indexing failed on the scan limit", img)
        t0 = time.monotonic()
        r = d.get("/v1/images/%d/thumbnail?size=128" % iid)
        took = time.monotonic() - t0
        ok(r.status == 422 and r.err_code() == "decode_limit" and "scans" in r.err_msg() and
           ("image %d has no thumbnail" % iid) in r.err_msg(),
           "its thumbnail: 422 decode_limit naming the scan limit (%.2f s)" % took, r)
        ok(not thumbs_of(d), "no thumbnail file is left for it", thumbs_of(d))
        r = d.post("/v1/images?wait=true", e2e.png_bytes(16, 16, 9800), ctype="image/png")
        ok(r.status == 200 and d.get("/v1/images/%d/thumbnail" % r.json["id"]).status == 200,
           "an ordinary image and its thumbnail are served after it", r)
    finally:
        ok(d.stop() == 0, "thumbscans daemon: SIGTERM exit 0")


# ---- nosniff ----------------------------------------------------------------------

def test_nosniff(tmp):
    d = e2e.Daemon("nosniff", os.path.join(tmp, "data-nosniff"), ["--workers", "1"])
    if not ok(d.start(), "clipd starts for the header checks"):
        return
    try:
        r = d.post("/v1/images?wait=true", e2e.png_bytes(16, 16, 9400), ctype="image/png")
        iid = r.json["id"] if r.status == 200 else 0
        r = d.get("/v1/images/%d/file" % iid)
        ok(r.status == 200 and r.headers.get("X-Content-Type-Options") == "nosniff" and
           r.headers.get("Content-Type") == "image/png",
           "GET /v1/images/{id}/file: X-Content-Type-Options: nosniff", r.headers)
        r = d.get("/v1/images/%d/thumbnail" % iid)
        ok(r.status == 200 and r.headers.get("X-Content-Type-Options") == "nosniff",
           "a thumbnail made now: nosniff", r.headers)
        r2 = d.get("/v1/images/%d/thumbnail" % iid)
        ok(r2.headers.get("X-Thumbnail-Cache") == "hit" and
           r2.headers.get("X-Content-Type-Options") == "nosniff", "a cached one too", r2.headers)
        r3 = d.get("/v1/images/%d/thumbnail" % iid, headers={"If-None-Match": r.headers["ETag"]})
        ok(r3.status == 304 and r3.headers.get("X-Content-Type-Options") == "nosniff",
           "and a 304", r3.headers)
    finally:
        ok(d.stop() == 0, "nosniff daemon: SIGTERM exit 0")


# ---- empty API keys -----------------------------------------------------------------

def test_empty_api_key(tmp):
    keyfile = os.path.join(tmp, "key-space")
    with open(keyfile, "w") as fh:
        fh.write("  \n")
    padded = os.path.join(tmp, "key-padded")
    with open(padded, "w") as fh:
        fh.write("secret \n")
    conf = os.path.join(tmp, "empty-key.conf")
    with open(conf, "w") as fh:
        fh.write('api-key = ""\n')
    cases = [
        ("--api-key=", ["--api-key="], {}, "the API key is empty"),
        ("--api-key ''", ["--api-key", ""], {}, "the API key is empty"),
        ("CLIPD_API_KEY=", [], {"CLIPD_API_KEY": ""}, "CLIPD_API_KEY: the API key is empty"),
        ("CLIPD_API_KEY_FILE=", [], {"CLIPD_API_KEY_FILE": ""}, "CLIPD_API_KEY_FILE: no file"),
        ("a key file holding spaces", ["--api-key-file", keyfile], {}, "starts or ends with a space"),
        ("a key file with a trailing space", ["--api-key-file", padded], {},
         "starts or ends with a space"),
        ('api-key = "" in a config file', ["--config", conf], {}, "api-key has no value"),
    ]
    for i, (name, args, env, want) in enumerate(cases):
        d = e2e.Daemon("key%d" % i, os.path.join(tmp, "data-key%d" % i), args, env_extra=env)
        started = d.start(expect_fail=True, timeout=60)
        if started:
            d.stop()
        rc = d.proc.returncode if d.proc else None
        ok(not started and rc not in (None, 0) and want in d.log(),
           "%s: refused at start-up, saying so" % name, (started, rc, d.log()[-400:]))
    # A real key still works.
    d = e2e.Daemon("keyok", os.path.join(tmp, "data-keyok"), ["--api-key", "k3y"])
    if ok(d.start(), "a non-empty key starts"):
        r = d.post("/v1/texts", {"texts": ["a"]})
        ok(r.status == 401, "and guards writes", r)
        ok(d.stop() == 0, "keyok daemon: SIGTERM exit 0")


def main():
    return e2e.run_tests("clipd-sec-store-", [test_empty_api_key, test_nosniff,
                                              test_refused_uploads_leave_no_blob,
                                              test_watch_keeps_uploads, test_thumbnail_cache,
                                              test_thumbnail_wait, test_thumbnail_decode_limit])


if __name__ == "__main__":
    sys.exit(main())
