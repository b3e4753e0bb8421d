#!/usr/bin/env python3
"""End-to-end: the image and text resources on a daemon holding the
reference kit: duplicates, metadata, the original file, PATCH, search
filters, uploads with ?wait=true, DELETE, the job list, server-side ingest
under --allow-root, every bad input's 4xx (status, code and message), a
truncated JPEG that fails in the job, and no descriptor leak after a burst
of uploads, failures and searches.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, png_bytes, png_header_only, multipart, REF  # noqa: E402


def test_images(tmp):
    ref = e2e.reference_daemon(tmp, "images")
    d, hid, texts, text_ids = ref.d, ref.hid, ref.texts, ref.text_ids
    ref_images, root, outside = ref.ref_images, ref.root, ref.outside
    with open(os.path.join(REF, "images", "horse.png"), "rb") as fh:
        horse = fh.read()
    try:
        # Dedupe.
        r = d.post("/v1/images", horse, ctype="image/png")
        ok(r.status == 200 and r.json["id"] == hid and r.json.get("duplicate") is True,
           "the same bytes again: 200 with the existing id", r)
        body, ctype = multipart([], [("image", "again.png", horse, "image/png")])
        r = d.post("/v1/images", body, ctype=ctype)
        ok(r.status == 200 and r.json["id"] == hid, "dedupe through multipart too", r)

        # Metadata, file, patch.
        r = d.get("/v1/images/%d" % hid)
        ok(r.status == 200 and r.json["filename"] == "horse.png" and r.json["mime"] == "image/png"
           and r.json["width"] == 400 and r.json["height"] == 328 and r.json["status"] == "ready",
           "GET /v1/images/{id}", r)
        r = d.get("/v1/images/%d/file" % hid)
        ok(r.status == 200 and r.body == horse and r.headers.get("Content-Type") == "image/png",
           "GET /v1/images/{id}/file returns the original bytes and type",
           (r.status, r.headers.get("Content-Type"), len(r.body)))
        r = d.request("PATCH", "/v1/images/%d" % hid, {"meta": {"tag": "animal", "n": 1}})
        r2 = d.get("/v1/images/%d" % hid)
        ok(r.status == 200 and r2.json["meta"] == {"tag": "animal", "n": 1},
           "PATCH /v1/images/{id} replaces the metadata", (r, r2))

        # Filters: only the horse has tag=animal; rocket.jpg is the one JPEG.
        r = d.post("/v1/search", {"text": texts[0], "k": 7, "filter": {"tag": "animal"}})
        ok(r.status == 200 and [x["id"] for x in r.json["results"]] == [hid],
           "filter on a metadata field keeps the matching image only", r)
        r = d.post("/v1/search", {"text": texts[0], "k": 7,
                                  "filter": {"tag": ["plant", "animal"], "n": 1}})
        ok(r.status == 200 and [x["id"] for x in r.json["results"]] == [hid],
           "filter: a list of accepted values, every key must match", r)
        r = d.post("/v1/search", {"text": texts[0], "k": 7, "filter": {"tag": "plant"}})
        ok(r.status == 200 and r.json["results"] == [], "filter matching nothing: no results", r)
        full = d.post("/v1/search", {"text": texts[0], "k": 7})
        pngs = [x["id"] for x in full.json["results"] if x["mime"] == "image/png"]
        r = d.post("/v1/search", {"text": texts[0], "k": 7, "filter": {"mime": "image/png"}})
        ok(r.status == 200 and [x["id"] for x in r.json["results"]] == pngs and len(pngs) == 6,
           "filter on mime keeps the PNGs in the unfiltered order", (r, pngs))
        r = d.post("/v1/search", {"text": texts[0], "k": 2, "offset": 2,
                                  "filter": {"mime": "image/png"}})
        ok(r.status == 200 and [x["id"] for x in r.json["results"]] == pngs[2:4],
           "offset counts filtered results", r)
        for bad_filter in ("pets", {"tag": {"a": 1}}, {"tag": []}, {"tag": [[1]]}):
            r = d.post("/v1/search", {"text": "x", "filter": bad_filter})
            ok(r.status == 400 and "filter" in r.err_msg(), "malformed filter %r: 400" %
               (bad_filter,), r)

        # Upload one new image with meta and wait.
        img = png_bytes(40, 30, 7)
        body, ctype = multipart([("meta", json.dumps({"src": "e2e"}))],
                                [("image", "noise.png", img, "image/png")])
        r = d.post("/v1/images?wait=true", body, ctype=ctype)
        ok(r.status == 200 and r.json["status"] == "ready" and r.json["meta"] == {"src": "e2e"}
           and r.json["width"] == 40, "POST /v1/images?wait=true answers once indexed", r)
        nid = r.json["id"] if r.status == 200 else -1
        r = d.post("/v1/images", png_bytes(20, 20, 8), ctype="image/png")
        ok(r.status == 202 and r.json["status"] == "pending" and r.json["job_id"] > 0,
           "POST /v1/images raw: 202 pending with a job", r)

        # Delete.
        r = d.post("/v1/search", {"image_id": nid, "k": 1})
        ok(r.status == 200 and r.json["results"][0]["id"] == nid, "new image is searchable", r)
        r = d.request("DELETE", "/v1/images/%d" % nid)
        ok(r.status == 200 and r.json.get("deleted") is True, "DELETE /v1/images/{id}", r)
        r = d.get("/v1/images/%d" % nid)
        ok(r.status == 404 and r.err_code() == "not_found", "deleted image: GET 404", r)
        r = d.get("/v1/images/%d/file" % nid)
        ok(r.status == 404, "deleted image: file 404", r)
        r = d.post("/v1/search", {"text": "noise", "k": 1000})
        ok(r.status == 200 and nid not in [x["id"] for x in r.json["results"]],
           "deleted image is gone from search", r)
        r = d.request("DELETE", "/v1/images/%d" % nid)
        ok(r.status == 404, "DELETE again: 404", r)
        r = d.request("DELETE", "/v1/texts/%d" % text_ids[0])
        r2 = d.get("/v1/texts/%d" % text_ids[0])
        r3 = d.post("/v1/search", {"text": texts[0], "collection": "texts", "k": 100})
        ok(r.status == 200 and r2.status == 404 and r3.status == 200 and
           text_ids[0] not in [x["id"] for x in r3.json["results"]], "DELETE /v1/texts/{id}",
           (r, r2))

        # Jobs.
        r = d.get("/v1/jobs")
        ok(r.status == 200 and len(r.json["jobs"]) >= 3 and
           all(j["state"] in ("queued", "running", "done") for j in r.json["jobs"]),
           "GET /v1/jobs lists recent jobs", r)

        # Server-side ingestion under --allow-root.
        r = d.post("/v1/ingest", {"dir": root, "recursive": True})
        ok(r.status == 202 and r.json["duplicates"] == len(ref_images) and r.json["accepted"] == 0,
           "POST /v1/ingest {dir} under --allow-root (all duplicates here)", r)
        sub = os.path.join(root, "new")
        os.makedirs(sub)
        for i in range(3):
            with open(os.path.join(sub, "n%d.png" % i), "wb") as fh:
                fh.write(png_bytes(16, 16, 100 + i))
        with open(os.path.join(sub, "notes.txt"), "wb") as fh:
            fh.write(b"not an image")
        r = d.post("/v1/ingest", {"dir": sub})
        ok(r.status == 202 and r.json["accepted"] == 3 and len(r.json["rejected"]) == 1 and
           r.json["rejected"][0]["code"] == "unsupported_media_type",
           "ingest {dir}: images accepted, the text file rejected with a reason", r)
        if r.status == 202:
            job = d.wait_job(r.json["job_id"])
            ok(job and job["done"] == 3, "the folder job ends done", job)
        r = d.post("/v1/ingest", {"paths": [os.path.join(sub, "n0.png"),
                                            os.path.join(sub, "missing.png")]})
        ok(r.status == 202 and r.json["duplicates"] == 1 and len(r.json["rejected"]) == 1,
           "ingest {paths}: a missing path is rejected, not fatal", r)

        # Bad inputs: each a 4xx JSON error with a clear message.
        def bad(name, r, status, code=None, words=()):
            good = (r.status == status and r.json is not None and "error" in r.json and
                    (code is None or r.err_code() == code) and
                    all(w.lower() in r.err_msg().lower() for w in words))
            ok(good, "%s: %d %s" % (name, status, code or ""), r)

        bad("malformed JSON", d.post("/v1/search", b'{"text": "a', ctype="application/json"),
            400, "bad_request", ["malformed JSON"])
        bad("JSON that is not an object", d.post("/v1/search", b'[1,2]', ctype="application/json"),
            400, "bad_request", ["object"])
        bad("missing query field", d.post("/v1/search", {"k": 3}), 400, "bad_request", ["text"])
        bad("wrong type", d.post("/v1/search", {"text": 5}), 400, "bad_request", ["'text'"])
        bad("k out of range", d.post("/v1/search", {"text": "a", "k": 100000}), 400,
            "bad_request", ["'k'"])
        bad("k of the wrong type", d.post("/v1/search", {"text": "a", "k": "x"}), 400,
            "bad_request", ["'k'"])
        bad("unknown collection", d.post("/v1/search", {"text": "a", "collection": "x"}), 400,
            "bad_request", ["collection"])
        bad("bad base64", d.post("/v1/search", {"image_b64": "***"}), 400, "bad_request",
            ["base64"])
        bad("GET search with a bad k", d.get("/v1/search?q=a&k=abc"), 400, "bad_request", ["'k'"])
        bad("texts missing", d.post("/v1/texts", {}), 400, "bad_request", ["texts"])
        bad("texts of the wrong type", d.post("/v1/texts", {"texts": [5]}), 400, "bad_request",
            ["texts[0]"])
        bad("classify without labels", d.post("/v1/classify", {"image_id": hid}), 400,
            "bad_request", ["labels"])
        bad("PATCH without meta", d.request("PATCH", "/v1/images/%d" % hid, {"x": 1}), 400,
            "bad_request", ["meta"])
        bad("unknown route", d.get("/v1/nothing"), 404, "not_found")
        bad("wrong method", d.request("PUT", "/v1/images"), 405, "method_not_allowed")
        bad("unknown image id", d.get("/v1/images/99999999"), 404, "not_found")
        bad("unknown job id", d.get("/v1/jobs/99999999"), 404, "not_found")
        bad("unknown text id", d.get("/v1/texts/99999999"), 404, "not_found")
        bad("search by an unknown image id", d.post("/v1/search", {"image_id": 99999999}), 404,
            "not_found")
        body, ctype = multipart([], [("image", "photo.jpg", b"hello, this is text\n", "image/jpeg")])
        bad("text file named .jpg", d.post("/v1/images", body, ctype=ctype), 415,
            "unsupported_media_type", ["not a supported image"])
        bad("text as raw image body", d.post("/v1/images", b"plain text", ctype="image/jpeg"),
            415, "unsupported_media_type")
        bad("JSON to the upload route", d.post("/v1/images", {"a": 1}), 415)
        bad("empty upload body", d.post("/v1/images", b"", ctype="image/png"), 400,
            "bad_request", ["empty"])
        bad("empty JSON body", d.post("/v1/search", b"", ctype="application/json"), 400,
            "bad_request", ["empty"])
        bad("PNG header claiming 50000x50000", d.post("/v1/images", png_header_only(50000, 50000),
                                                      ctype="image/png"), 413, "payload_too_large",
            ["50000x50000"])
        bad("path outside the allowed roots", d.post("/v1/ingest", {"paths": [
            os.path.join(outside, "x.png")]}), 403, "forbidden", ["--allow-root"])
        bad("dir outside the allowed roots", d.post("/v1/ingest", {"dir": outside}), 403,
            "forbidden")
        bad("dotdot escape", d.post("/v1/ingest", {"dir": os.path.join(root, "..", "outside")}),
            403, "forbidden")
        bad("image_b64 that is not an image", d.post("/v1/search", {
            "image_b64": base64.b64encode(b"hello").decode()}), 415, "unsupported_media_type")
        with open(os.path.join(REF, "images", "rocket.jpg"), "rb") as fh:
            rocket = fh.read()
        bad("truncated JPEG as a query", d.post("/v1/search", {
            "image_b64": base64.b64encode(rocket[:20000]).decode()}), 422, "undecodable_image")

        # A truncated JPEG upload: accepted (it sniffs as JPEG), then the job
        # records the failure; with ?wait=true the upload answers 422.
        r = d.post("/v1/images", rocket[:20000], ctype="image/jpeg")
        ok(r.status == 202, "truncated JPEG upload is accepted for indexing (202)", r)
        if r.status == 202:
            job = d.wait_job(r.json["job_id"])
            img = d.get("/v1/images/%d" % r.json["id"]).json
            ok(job and job["failed"] == 1 and img["status"] == "failed" and img.get("error"),
               "the job records the failure and the image is marked failed with a reason",
               (job, img))
        bad("truncated JPEG with ?wait=true", d.post("/v1/images?wait=true", rocket[:30000],
                                                     ctype="image/jpeg"), 422, "undecodable_image")
        bad("search by a failed image", d.post("/v1/search", {"image_id": r.json["id"]}), 409,
            "conflict", ["not indexed"])

        r = d.get("/healthz")
        ok(r.status == 200, "the daemon keeps serving after every bad input", r)

        # No descriptor leaks: a burst of uploads, failures, file reads and
        # searches leaves the daemon with the descriptors it had.
        def nfds():
            return len(os.listdir("/proc/%d/fd" % d.proc.pid))
        d.wait_idle()
        fds0 = nfds()
        for i in range(20):
            d.post("/v1/images", png_bytes(12, 12, 3000 + i), ctype="image/png")
            d.post("/v1/images", rocket[:15000 + i], ctype="image/jpeg")
            d.post("/v1/images", b"text %d" % i, ctype="image/png")
            d.get("/v1/images/%d/file" % hid)
            d.post("/v1/search", {"image_b64": base64.b64encode(rocket[:20000]).decode()})
            d.post("/v1/search", {"text": "x %d" % i})
        d.wait_idle()
        fds1 = nfds()
        ok(fds1 <= fds0 + 2, "no descriptor leak (%d before, %d after)" % (fds0, fds1),
           os.listdir("/proc/%d/fd" % d.proc.pid))
        s = d.wait_idle()
        r = d.post("/v1/search", {"text": "x", "k": 1000})
        ok(s is not None and r.status == 200 and len(r.json["results"]) == s["images"]["ready"],
           "search returns every ready image and nothing else", (s, len(r.json["results"])))
    finally:
        e2e.stop_checked(d, "images daemon")


def main():
    return e2e.run_tests('clipd-e2e-images-', [test_images])


if __name__ == "__main__":
    sys.exit(main())
