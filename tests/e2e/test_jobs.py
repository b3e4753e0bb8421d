#!/usr/bin/env python3
"""End-to-end: jobs and texts: a bulk ingest's job lists each failed item
with its reason, a job of duplicates only, the cap on error rows, and kill
-9 during POST /v1/texts (stored whole or not at all; every acknowledged
text embedded after restart); text search pages through the batched reads.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, png_bytes, multipart, Daemon, REF  # noqa: E402


# ---- jobs, texts and the store's batch calls -----------------------------------

def test_jobs_and_texts(tmp):
    d = Daemon("jobs", os.path.join(tmp, "data-jobs"), env_extra={"CLIPD_WORKERS": "1"})
    if not ok(d.start(), "clipd starts for the job tests"):
        return
    with open(os.path.join(REF, "images", "rocket.jpg"), "rb") as fh:
        rocket = fh.read()
    a, b = png_bytes(24, 24, 601), png_bytes(24, 24, 602)
    try:
        # A bulk ingest with a corrupt image and a text file: the job lists both.
        body, ctype = multipart([], [("file", "a.png", a, "image/png"),
                                     ("file", "broken.jpg", rocket[:20000], "image/jpeg"),
                                     ("file", "notes.txt", b"just some words\n", "text/plain"),
                                     ("file", "b.png", b, "image/png")])
        r = d.post("/v1/ingest", body, ctype=ctype)
        ok(r.status == 202 and r.json["accepted"] == 3 and len(r.json["rejected"]) == 1,
           "bulk ingest: 3 accepted (one of them corrupt), the text file rejected", r)
        ids = {it["name"]: it["id"] for it in (r.json or {}).get("items", [])}
        job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
        errs = (job or {}).get("errors", [])
        by_name = {e.get("name"): e for e in errs}
        broken, notes = by_name.get("broken.jpg", {}), by_name.get("notes.txt", {})
        ok(job is not None and job["total"] == 4 and job["done"] == 2 and job["failed"] == 2 and
           len(errs) == 2 and broken.get("id") == ids.get("broken.jpg") and
           "truncated" in broken.get("error", "") and notes.get("id", 0) is None and
           "not a supported image" in notes.get("error", "") and
           "errors_truncated" not in job,
           "GET /v1/jobs/{id} lists the corrupt image (its id) and the text file (id null) "
           "with their reasons", job)
        r = d.get("/v1/jobs")
        ok(r.status == 200 and all("errors" not in j for j in r.json["jobs"]),
           "GET /v1/jobs lists jobs without their errors", r)

        # Every file a duplicate: the request still has a job, and it is done.
        body, ctype = multipart([], [("file", "a-again.png", a, "image/png"),
                                     ("file", "b-again.png", b, "image/png")])
        r = d.post("/v1/ingest", body, ctype=ctype)
        ok(r.status == 202 and r.json["duplicates"] == 2 and r.json["accepted"] == 0 and
           isinstance(r.json.get("job_id"), int), "a bulk ingest of duplicates answers a job", r)
        if r.status == 202 and r.json.get("job_id"):
            j = d.get("/v1/jobs/%d" % r.json["job_id"]).json
            ok(j["state"] == "done" and j["total"] == 0 and j["errors"] == [],
               "the empty job is done in the store at once", j)

        # Many error rows: capped, with a flag.
        files = [("file", "t%03d.txt" % i, b"text %d" % i, "text/plain") for i in range(105)]
        body, ctype = multipart([], files)
        r = d.post("/v1/ingest", body, ctype=ctype)
        j = d.wait_job(r.json["job_id"]) if r.status == 202 else None
        ok(j is not None and j["failed"] == 105 and len(j["errors"]) == 100 and
           j.get("errors_truncated") is True, "job errors are capped at 100 with errors_truncated",
           j and {k: j[k] for k in j if k != "errors"})

        # Texts: acknowledged, then kill -9 before the workers are through.
        n = 3000
        r = d.post("/v1/texts", {"texts": [{"text": "caption number %d" % i, "meta": {"i": i}}
                                           for i in range(n)]})
        ok(r.status == 202 and len(r.json["ids"]) == n, "POST /v1/texts of %d texts: 202" % n, r)
        d.stop(signal.SIGKILL)
        text_job = r.json["job_id"] if r.status == 202 else None
        text_ids = r.json["ids"] if r.status == 202 else []

        # Killed while another POST /v1/texts is being stored: all or none,
        # whatever the moment (a few moments are tried).
        if not ok(d.start(), "restart after kill -9 with texts acknowledged"):
            return
        outcomes = []
        for delay in (0.05, 0.15, 0.3, 0.6):
            before = d.get("/v1/stats").json["texts"]["total"]
            result = {}

            def send():
                try:
                    result["r"] = d.post("/v1/texts", {"texts": ["late caption %d" % i
                                                                 for i in range(10000)]},
                                         timeout=60)
                except Exception as e:  # the daemon dies under us
                    result["e"] = e
            t = threading.Thread(target=send)
            t.start()
            time.sleep(delay)
            d.stop(signal.SIGKILL)
            t.join()
            if not d.start():
                outcomes.append("no restart")
                break
            added = d.get("/v1/stats").json["texts"]["total"] - before
            outcomes.append("%s: %d stored" % ("answered" if "r" in result else "cut off", added))
            if added not in (0, 10000):
                break
        ok(all(o.endswith(": 0 stored") or o.endswith(": 10000 stored") for o in outcomes),
           "kill -9 during POST /v1/texts: stored whole or not at all (%s)" % "; ".join(outcomes))
        job = d.wait_job(text_job) if text_job else None
        ok(job is not None and job["total"] == n and job["done"] == n and job["failed"] == 0,
           "after restart every acknowledged text is embedded (job done %d/%d)" %
           ((job or {}).get("done", -1), n), job)
        s = d.wait_idle()
        ok(s is not None and s["index"]["texts"]["count"] == s["texts"]["total"] and
           s["queue_depth"] == 0, "the texts index holds every stored text", s)
        bad = [i for i in text_ids[::100] if d.get("/v1/texts/%d" % i).json.get("status") != "ready"]
        ok(not bad, "sampled acknowledged texts are ready", bad)

        # Search results with the batched reads: offset pages, and a deep page.
        r1 = d.post("/v1/search", {"text": "caption number 7", "collection": "texts", "k": 50})
        r2 = d.post("/v1/search", {"text": "caption number 7", "collection": "texts", "k": 25,
                                   "offset": 25})
        ok(r1.status == 200 and r2.status == 200 and len(r1.json["results"]) == 50 and
           [x["id"] for x in r1.json["results"][25:]] == [x["id"] for x in r2.json["results"]] and
           all("text" in x and "score" in x for x in r2.json["results"]),
           "text search pages through the batched reads", (r1, r2))
    finally:
        d.stop()


def main():
    return e2e.run_tests('clipd-e2e-jobs-', [test_jobs_and_texts])


if __name__ == "__main__":
    sys.exit(main())
