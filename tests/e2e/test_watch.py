#!/usr/bin/env python3
"""End-to-end: --watch / CLIPD_WATCH: files present at start, copied in,
in new subdirectories, modified, deleted, renamed, written slowly, or not
images at all, and the changes made while the daemon was stopped.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import base64
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, png_bytes, Daemon, images_by_name, wait_until  # noqa: E402


def test_watch(tmp):
    w = os.path.join(tmp, "watched")
    os.makedirs(os.path.join(w, ".hidden"))
    for i in range(3):
        with open(os.path.join(w, "start%d.png" % i), "wb") as fh:
            fh.write(png_bytes(20, 20, 700 + i))
    with open(os.path.join(w, ".hidden", "h.png"), "wb") as fh:
        fh.write(png_bytes(20, 20, 799))
    # Rescans are rare here: what shows within seconds came by inotify.
    env = {"CLIPD_WATCH": w, "CLIPD_RESCAN_SECONDS": "300", "CLIPD_WORKERS": "1"}
    d = Daemon("watch", os.path.join(tmp, "data-watch"), env_extra=env)
    if not ok(d.start(), "clipd starts with CLIPD_WATCH"):
        return
    p = lambda name: os.path.join(w, name)
    try:
        names = wait_until(lambda: len(images_by_name(d, w)) >= 3 and images_by_name(d, w))
        ok(names and sorted(names) == sorted(p("start%d.png" % i) for i in range(3)),
           "the files present at start are ingested; hidden ones are not", names)

        t0 = time.time()
        new = png_bytes(28, 20, 710)
        with open(p("new.png"), "wb") as fh:
            fh.write(new)
        names = wait_until(lambda: p("new.png") in images_by_name(d, w) and images_by_name(d, w))
        took = time.time() - t0
        ok(names, "a file copied into the watched directory is searchable (%.1f s)" % took)
        r = d.post("/v1/search", {"image_b64": base64.b64encode(new).decode(), "k": 1})
        ok(r.status == 200 and r.json["results"][0]["filename"] == "new.png" and
           abs(r.json["results"][0]["score"] - 1) < 1e-4, "and found by its own content", r)
        new_id = (names or {}).get(p("new.png"))

        os.makedirs(p("sub/deeper"))
        with open(p("sub/deeper/s.png"), "wb") as fh:
            fh.write(png_bytes(16, 16, 711))
        ok(wait_until(lambda: p("sub/deeper/s.png") in images_by_name(d, w)),
           "a new subdirectory is watched too")

        # Modified: the old image goes, a new one comes.
        with open(p("new.png"), "wb") as fh:
            fh.write(png_bytes(28, 20, 712))
        names = wait_until(lambda: images_by_name(d, w).get(p("new.png"), new_id) != new_id and
                           images_by_name(d, w))
        ok(names and d.get("/v1/images/%d" % new_id).status == 404,
           "a modified file is indexed again and its old image is gone",
           (new_id, (names or {}).get(p("new.png"))))

        # Deleted.
        gone_id = images_by_name(d, w).get(p("start0.png"))
        os.unlink(p("start0.png"))
        ok(wait_until(lambda: d.get("/v1/images/%d" % gone_id).status == 404) and
           p("start0.png") not in images_by_name(d, w), "a deleted file disappears from the index")

        # A text file: refused, and said so in a watch job.
        with open(p("readme.txt"), "wb") as fh:
            fh.write(b"not an image")

        def refused():
            for j in d.get("/v1/jobs").json["jobs"]:
                if j["kind"] == "watch" and j["failed"]:
                    e = d.get("/v1/jobs/%d" % j["id"]).json["errors"]
                    if any(x["name"] == "readme.txt" for x in e):
                        return e
            return None
        errs = wait_until(refused)
        ok(errs and "not a supported image" in errs[0]["error"],
           "a file that is not an image is a failed item of a watch job", errs)
        # A file written slowly is taken once it is complete.
        slow = png_bytes(40, 40, 713)
        with open(p("slow.png"), "wb") as fh:
            for i in range(0, len(slow), len(slow) // 4 + 1):
                fh.write(slow[i:i + len(slow) // 4 + 1])
                fh.flush()
                time.sleep(0.3)
        sid = wait_until(lambda: images_by_name(d, w).get(p("slow.png")))
        r = d.get("/v1/images/%d" % sid) if sid else None
        ok(r and r.json["bytes"] == len(slow) and r.json["status"] == "ready",
           "a file written in steps is ingested whole", r)
        # Renamed: the same content keeps its image, which now goes with the
        # new name.
        sid2 = images_by_name(d, w).get(p("sub/deeper/s.png"))
        os.rename(p("sub/deeper/s.png"), p("sub/moved.png"))
        time.sleep(2.5)
        ok(sid2 and d.get("/v1/images/%d" % sid2).status == 200, "a renamed file keeps its image")
        os.unlink(p("sub/moved.png"))
        ok(sid2 and wait_until(lambda: d.get("/v1/images/%d" % sid2).status == 404),
           "and it goes when the file goes under its new name")
        before = images_by_name(d, w)
        s_before = d.wait_idle()
    finally:
        ok(d.stop() == 0, "watch daemon: SIGTERM exit 0")

    # While stopped: one file added, one removed. A restart catches up and
    # ingests nothing twice.
    with open(p("offline.png"), "wb") as fh:
        fh.write(png_bytes(20, 20, 720))
    os.unlink(p("start1.png"))
    if not ok(d.start(), "watch daemon restarts"):
        return
    try:
        after = wait_until(lambda: p("offline.png") in images_by_name(d, w) and
                           p("start1.png") not in images_by_name(d, w) and images_by_name(d, w))
        want = dict(before)
        want.pop(p("start1.png"), None)
        got = dict(after or {})
        got.pop(p("offline.png"), None)
        ok(after and got == want, "after a restart: the offline changes are taken, the rest "
           "keeps its ids", (before, after))
        time.sleep(1.5)  # past the debounce of anything the rescan might have queued
        s = d.wait_idle()
        ok(s and s["images"]["total"] == s_before["images"]["total"] and
           len(images_by_name(d, w)) == len(after or {}),
           "a restart does not ingest the watched files again",
           (s_before and s_before["images"], s and s["images"]))
        wjobs = [j for j in d.get("/v1/jobs").json["jobs"] if j["kind"] == "watch"]
        ok(all(j["state"] == "done" for j in wjobs), "every watch job is done", wjobs)
    finally:
        ok(d.stop() == 0, "watch daemon: second SIGTERM exit 0")

    # A directory that cannot be watched stops the start with a reason.
    o = Daemon("watch-bad", os.path.join(tmp, "data-watch-bad"),
               env_extra={"CLIPD_WATCH": os.path.join(tmp, "no-such-dir")})
    started = o.start(expect_fail=True, timeout=60)
    if started:
        o.stop()
    ok(not started and "no-such-dir" in o.log(), "a missing watch directory is refused at start",
       o.log())


def main():
    return e2e.run_tests('clipd-e2e-watch-', [test_watch])


if __name__ == "__main__":
    sys.exit(main())
