#!/usr/bin/env python3
"""End-to-end tests of clipd: the real daemon on 127.0.0.1, talking HTTP.

Environment (set by tests/e2e/meson.build):
  CLIPD_BIN        path to build/clipd
  CLIPD_REFERENCE  ../shared/reference (read-only: tests copy what they need)
  CLIP_MKMODEL     path to build/clip-mkmodel (for the model-mismatch case)

Output is TAP. Python 3 standard library only. Expected numbers come from
$CLIPD_REFERENCE/tiny-clip-a/expected.json (open_clip, see its README):
search scores must equal logits / logit_scale within SCORE_TOL.
"""
import base64
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib

SCORE_TOL = 1e-3
# Reference scores closer than this may swap places: the C model and the
# oracle differ by up to SCORE_TOL per score.
TIE_TOL = 2 * SCORE_TOL

BIN = os.environ.get("CLIPD_BIN", "")
REF = os.environ.get("CLIPD_REFERENCE", "")
MKMODEL = os.environ.get("CLIP_MKMODEL", "")
MODEL = os.path.join(REF, "tiny-clip-a")

_n = 0
_failed = 0


def ok(cond, name, diag=None):
    global _n, _failed
    _n += 1
    if cond:
        print("ok %d - %s" % (_n, name))
    else:
        _failed += 1
        print("not ok %d - %s" % (_n, name))
        if diag is not None:
            for line in str(diag).splitlines()[:40]:
                print("# " + line)
    sys.stdout.flush()
    return cond


def diag(msg):
    for line in str(msg).splitlines():
        print("# " + line)
    sys.stdout.flush()


# ---- test data ---------------------------------------------------------------

def png_bytes(w, h, seed):
    """A w x h RGB PNG of seeded noise (stdlib only)."""
    rnd = random.Random(seed)
    raw = bytearray()
    for _ in range(h):
        raw.append(0)
        raw.extend(rnd.getrandbits(8) for _ in range(w * 3))
    return png_from_raw(w, h, bytes(raw))


def png_chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_from_raw(w, h, raw):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def png_header_only(w, h):
    """A PNG whose header claims w x h, with a tiny (wrong) IDAT."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def multipart(fields, files):
    """fields: [(name, str)], files: [(name, filename, bytes, ctype)]."""
    boundary = "----clipd-e2e-%016x" % random.getrandbits(64)
    out = bytearray()
    for name, value in fields:
        out += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n" %
                (boundary, name)).encode()
        out += value.encode() + b"\r\n"
    for name, filename, data, ctype in files:
        out += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                "Content-Type: %s\r\n\r\n" % (boundary, name, filename, ctype)).encode()
        out += data + b"\r\n"
    out += ("--%s--\r\n" % boundary).encode()
    return bytes(out), "multipart/form-data; boundary=" + boundary


# ---- the daemon ----------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body.decode()) if body else None
        except ValueError:
            self.json = None

    def err_code(self):
        try:
            return self.json["error"]["code"]
        except (TypeError, KeyError):
            return None

    def err_msg(self):
        try:
            return self.json["error"]["message"]
        except (TypeError, KeyError):
            return ""

    def __repr__(self):
        return "HTTP %d %s" % (self.status, self.body[:400])


class Daemon:
    def __init__(self, name, data, extra=(), env_extra=None, model=MODEL):
        self.name = name
        self.data = data
        self.extra = list(extra)
        self.env_extra = env_extra or {}
        self.model = model
        self.proc = None
        self.port = None
        self.key = None
        self.log_path = data.rstrip("/") + ".%s.log" % name
        self.log_file = None

    def start(self, expect_fail=False, timeout=120):
        env = dict(os.environ)
        env.update(self.env_extra)
        args = [BIN, "--model", self.model, "--data", self.data,
                "--listen", "127.0.0.1:0"] + self.extra
        self.log_file = open(self.log_path, "ab")
        self.log_offset = self.log_file.tell()
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=self.log_file, env=env)
        end = time.time() + timeout
        while time.time() < end:
            text = self.log()
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
            if m:
                self.port = int(m.group(1))
                return True
            if self.proc.poll() is not None:
                if not expect_fail:
                    diag("%s exited with %s:\n%s" % (self.name, self.proc.returncode, text))
                return False
            time.sleep(0.05)
        diag("%s did not start:\n%s" % (self.name, self.log()))
        return False

    def log(self):
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def request(self, method, path, body=None, ctype=None, headers=None, timeout=120):
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            ctype = ctype or "application/json"
        if ctype:
            h["Content-Type"] = ctype
        if self.key and "Authorization" not in h:
            h["Authorization"] = "Bearer " + self.key
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return Response(r.status, dict(r.getheaders()), r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def wait_job(self, job_id, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            r = self.get("/v1/jobs/%d" % job_id)
            if r.status == 200 and r.json["state"] == "done":
                return r.json
            time.sleep(0.1)
        return None

    def wait_idle(self, timeout=300):
        """Until the queue is empty and the index holds every ready image."""
        end = time.time() + timeout
        while time.time() < end:
            s = self.get("/v1/stats").json
            if s["queue_depth"] == 0 and s["index"]["images"]["count"] == s["images"]["ready"]:
                return s
            time.sleep(0.1)
        return None

    def stop(self, sig=signal.SIGTERM, timeout=120):
        if not self.proc:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.log_file.close()
        return rc


# ---- reference checks ------------------------------------------------------------

_worst = [0.0, 0]  # largest score error seen, exact-order rankings


def check_ranking(got, expected_scores, scale):
    """got: [(name, score)] best first; expected_scores: {name: logit}.
    Returns a list of problems (empty when fine)."""
    problems = []
    order = sorted(expected_scores, key=lambda n: -expected_scores[n])
    _worst[1] += [n for n, _ in got] == order
    for name, score in got:
        want = expected_scores[name] / scale
        _worst[0] = max(_worst[0], abs(score - want))
        if abs(score - want) > SCORE_TOL:
            problems.append("%r: score %.6f, expected %.6f" % (name, score, want))
    for (a, _), (b, _) in zip(got, got[1:]):
        if expected_scores[a] / scale < expected_scores[b] / scale - TIE_TOL:
            problems.append("%r ranked above %r" % (a, b))
    if sorted(n for n, _ in got) != sorted(expected_scores):
        problems.append("returned %s, expected %s" % (sorted(n for n, _ in got),
                                                      sorted(expected_scores)))
    return problems


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


# ---- the tests ---------------------------------------------------------------------

def test_main(tmp, expected):
    ref_images = [im["file"] for im in expected["images"]]
    texts = [t["text"] for t in expected["texts"]]
    L = expected["logits_per_image"]  # [image][text]
    scale = expected["logit_scale"]

    root = os.path.join(tmp, "root")
    os.makedirs(os.path.join(root, "ref"))
    for f in ref_images:
        shutil.copy(os.path.join(REF, "images", f), os.path.join(root, "ref", f))
    outside = os.path.join(tmp, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "x.png"), "wb") as f:
        f.write(png_bytes(8, 8, 1))

    d = Daemon("main", os.path.join(tmp, "data-main"), ["--allow-root", root])
    if not ok(d.start(), "clipd starts on a free loopback port"):
        return
    try:
        r = d.get("/healthz")
        ok(r.status == 200 and r.json == {"status": "ok"}, "GET /healthz", r)
        r = d.get("/readyz")
        ok(r.status == 200, "GET /readyz", r)
        r = d.get("/v1/stats")
        ok(r.status == 200 and r.json["model"]["dim"] == 32 and r.json["images"]["total"] == 0,
           "GET /v1/stats on an empty data directory", r)

        # Bulk ingest by multipart.
        files = []
        for f in ref_images:
            with open(os.path.join(REF, "images", f), "rb") as fh:
                files.append(("file", f, fh.read(),
                              "image/jpeg" if f.endswith(".jpg") else "image/png"))
        body, ctype = multipart([], files)
        r = d.post("/v1/ingest", body, ctype=ctype)
        ok(r.status == 202 and r.json["accepted"] == len(ref_images) and not r.json["rejected"],
           "POST /v1/ingest multipart with the %d reference images: 202" % len(ref_images), r)
        ids = {it["name"]: it["id"] for it in (r.json or {}).get("items", [])}
        names = {v: k for k, v in ids.items()}
        job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
        ok(job is not None and job["done"] == len(ref_images) and job["failed"] == 0,
           "the bulk job ends done with every image indexed", job)

        # Text -> images: every reference text ranks the images as its column.
        for t_i, text in enumerate(texts):
            r = d.post("/v1/search", {"text": text, "k": 7})
            if r.status != 200:
                ok(False, "search text %d" % t_i, r)
                continue
            got = [(names.get(x["id"], "?"), x["score"]) for x in r.json["results"]]
            want = {ref_images[i]: L[i][t_i] for i in range(len(ref_images))}
            problems = check_ranking(got, want, scale)
            ok(not problems, "POST /v1/search text %d (%r) ranks images as expected.json" %
               (t_i, text[:30]), "\n".join(problems))

        diag("text->image: largest score error %.2g; %d of %d rankings in exactly the "
             "reference order" % (_worst[0], _worst[1], len(texts)))
        _worst[:] = [0.0, 0]

        # GET form gives the same as POST.
        q = urllib.parse.quote(texts[0])
        rg = d.get("/v1/search?q=%s&k=7" % q)
        rp = d.post("/v1/search", {"text": texts[0], "k": 7})
        ok(rg.status == 200 and [x["id"] for x in rg.json["results"]] ==
           [x["id"] for x in rp.json["results"]], "GET /v1/search?q= equals POST", rg)

        # Pagination.
        r6 = d.post("/v1/search", {"text": texts[1], "k": 6})
        ra = d.post("/v1/search", {"text": texts[1], "k": 3})
        rb = d.post("/v1/search", {"text": texts[1], "k": 3, "offset": 3})
        ok(all(x.status == 200 for x in (r6, ra, rb)) and
           [x["id"] for x in r6.json["results"]] ==
           [x["id"] for x in ra.json["results"] + rb.json["results"]],
           "offset pages through the same ranking", (r6, ra, rb))
        r = d.post("/v1/search", {"text": texts[1], "k": 7, "min_score": 0.0})
        ok(r.status == 200 and all(x["score"] >= 0 for x in r.json["results"]),
           "min_score drops lower scores", r)

        # Image -> image: an image finds itself first with score 1.
        hid = ids.get("horse.png")
        r = d.post("/v1/search", {"image_id": hid, "k": 3})
        ok(r.status == 200 and r.json["results"][0]["id"] == hid and
           abs(r.json["results"][0]["score"] - 1) < 1e-4, "image_id search finds itself first", r)
        with open(os.path.join(REF, "images", "horse.png"), "rb") as fh:
            horse = fh.read()
        r = d.post("/v1/search", {"image_b64": base64.b64encode(horse).decode(), "k": 3})
        ok(r.status == 200 and r.json["results"][0]["id"] == hid and
           abs(r.json["results"][0]["score"] - 1) < 1e-4, "image_b64 search finds the image", r)

        body, ctype = multipart([("k", "3")], [("image", "q.png", horse, "image/png")])
        r = d.post("/v1/search", body, ctype=ctype)
        ok(r.status == 200 and len(r.json["results"]) == 3 and r.json["results"][0]["id"] == hid,
           "multipart search with an image part and a k field", r)
        r = d.post("/v1/search?k=2", horse, ctype="image/png")
        ok(r.status == 200 and len(r.json["results"]) == 2 and r.json["results"][0]["id"] == hid,
           "raw image/* body search with ?k=", r)

        # Texts collection and image -> texts.
        r = d.post("/v1/texts", {"texts": [{"text": t, "meta": {"i": i}} for i, t in enumerate(texts)]})
        ok(r.status == 202 and len(r.json["ids"]) == len(texts), "POST /v1/texts: 202 with ids", r)
        text_ids = r.json["ids"] if r.status == 202 else []
        tnames = {tid: i for i, tid in enumerate(text_ids)}
        job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
        ok(job is not None and job["done"] == len(texts), "the texts job ends done", job)
        for i_i, f in enumerate(ref_images):
            r = d.post("/v1/search", {"image_id": ids.get(f), "collection": "texts",
                                      "k": len(texts)})
            if r.status != 200:
                ok(False, "image->texts %s" % f, r)
                continue
            got = [(tnames.get(x["id"], -1), x["score"]) for x in r.json["results"]]
            want = {t_i: L[i_i][t_i] for t_i in range(len(texts))}
            problems = check_ranking(got, want, scale)
            ok(not problems, "image->texts for %s ranks texts as its row" % f,
               "\n".join(problems))
        diag("image->text: largest score error %.2g; %d of %d rankings in exactly the "
             "reference order" % (_worst[0], _worst[1], len(ref_images)))
        r = d.get("/v1/texts/%d" % text_ids[3])
        ok(r.status == 200 and r.json["text"] == texts[3] and r.json["meta"] == {"i": 3} and
           r.json["status"] == "ready", "GET /v1/texts/{id}", r)
        r = d.post("/v1/search", {"text": texts[9], "collection": "texts", "k": 1})
        ok(r.status == 200 and r.json["results"][0]["id"] == text_ids[9] and
           abs(r.json["results"][0]["score"] - 1) < 1e-4, "text->texts finds the same text", r)

        # Classify: labels = the reference texts, template "{}" -> softmax of the row.
        worst = 0.0
        bad = []
        for i_i, f in enumerate(ref_images):
            r = d.post("/v1/classify", {"image_id": ids.get(f), "labels": texts,
                                        "templates": ["{}"]})
            if r.status != 200:
                bad.append("%s: %r" % (f, r))
                continue
            probs = softmax(L[i_i])
            got = {x["label"]: x["prob"] for x in r.json["labels"]}
            for t_i, t in enumerate(texts):
                worst = max(worst, abs(got.get(t, -1) - probs[t_i]))
            ps = [x["prob"] for x in r.json["labels"]]
            if ps != sorted(ps, reverse=True):
                bad.append("%s: labels not sorted by probability" % f)
        ok(not bad and worst < 2e-3, "POST /v1/classify matches softmax(logits) (worst %.2g)" % worst,
           "\n".join(bad))
        r = d.post("/v1/classify", {"image_b64": base64.b64encode(horse).decode(),
                                    "labels": ["horse", "cat", "rocket"]})
        ok(r.status == 200 and abs(sum(x["prob"] for x in r.json["labels"]) - 1) < 1e-6,
           "classify with image_b64 and the default template", r)

        # Embed.
        body, ctype = multipart([("labels", json.dumps(["horse", "cat"]))],
                                [("image", "q.png", horse, "image/png")])
        r = d.post("/v1/classify", body, ctype=ctype)
        ok(r.status == 200 and len(r.json["labels"]) == 2, "classify with a multipart image", r)

        r = d.post("/v1/embed", {"texts": ["a horse", ""],
                                 "images_b64": [base64.b64encode(horse).decode()]})
        ok(r.status == 200 and len(r.json["texts"]) == 2 and len(r.json["images"]) == 1 and
           abs(sum(v * v for v in r.json["images"][0]) - 1) < 1e-4 and len(r.json["texts"][0]) == 32,
           "POST /v1/embed gives normalised vectors", r)

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
        before = [x["id"] for x in d.post("/v1/search", {"text": texts[4], "k": 50}).json["results"]]

        # SIGTERM while a request is in flight: the request still completes.
        body, ctype = multipart([], [("file", "late%d.png" % i, png_bytes(32, 32, 900 + i),
                                      "image/png") for i in range(5)])
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=60)
        sock.sendall(("POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n" %
                      (ctype, len(body))).encode())
        sock.sendall(body[:len(body) // 2])
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[len(body) // 2:])
        resp = b""
        while True:
            got = sock.recv(65536)
            if not got:
                break
            resp += got
        sock.close()
        late = {}
        try:
            late = json.loads(resp.split(b"\r\n\r\n", 1)[1].decode())
        except (IndexError, ValueError):
            pass
        ok(resp.startswith(b"HTTP/1.1 202") and late.get("accepted") == 5,
           "a request in flight at SIGTERM completes (202)", resp[:300])
    finally:
        rc = d.stop(signal.SIGTERM)
    log = d.log()
    ok(rc == 0, "SIGTERM: exit status 0", "exit %s\n%s" % (rc, log[-2000:]))
    ok("saved snapshot" in log and os.path.exists(os.path.join(d.data, "index", "images.vidx"))
       and os.path.exists(os.path.join(d.data, "index", "texts.vidx")),
       "SIGTERM writes both index snapshots", log[-2000:])

    # Restart on the same data: snapshots load.
    if not ok(d.start(), "restart on the same data directory"):
        return
    try:
        log = d.log()
        ok(log.count("loaded snapshot") == 2, "restart loads both snapshots", log)
        late_ids = [it["id"] for it in late.get("items", [])]
        after = [x["id"] for x in d.post("/v1/search", {"text": texts[4], "k": 50}).json["results"]]
        after = [i for i in after if i not in late_ids]  # indexed since
        ok(after == before, "search after restart equals before", (before, after))
        s = d.wait_idle()
        ok(late_ids and all(d.get("/v1/images/%d" % i).json["status"] == "ready" for i in late_ids),
           "images acknowledged during shutdown are indexed after restart", late_ids)
    finally:
        ok(d.stop() == 0, "second SIGTERM: exit 0")

    # The same data directory with another model is refused.
    if MKMODEL:
        other = os.path.join(tmp, "other-model")
        subprocess.run([MKMODEL, "--preset", "tiny", "--out", other], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        o = Daemon("other", d.data, model=other)
        started = o.start(expect_fail=True, timeout=60)
        if started:
            o.stop()
        rc = o.proc.wait() if o.proc else None
        log = o.log()
        ok(not started and "new --data directory" in log,
           "another model on the same data directory is refused with how to re-embed", log)


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
        s.sendall(("POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
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


def test_kill9(tmp):
    root = os.path.join(tmp, "bulk")
    os.makedirs(root)
    n = 80
    for i in range(n):
        with open(os.path.join(root, "img%03d.png" % i), "wb") as fh:
            fh.write(png_bytes(96, 64, 1000 + i))
    d = Daemon("kill9", os.path.join(tmp, "data-kill9"), ["--allow-root", root])
    if not ok(d.start(), "clipd starts for the kill -9 test"):
        return
    acked = set()
    # 1: acknowledged, then killed while the workers index.
    r = d.post("/v1/ingest", {"dir": root})
    ok(r.status == 202 and r.json["accepted"] == n, "bulk ingest of %d files acknowledged" % n, r)
    if r.status == 202:
        acked |= {it["id"] for it in r.json["items"]}
    s = d.get("/v1/stats").json
    diag("at kill: %s ready of %s" % (s["images"]["ready"], s["images"]["total"]))
    d.stop(signal.SIGKILL)

    # 2: killed while a second bulk ingest request is being stored.
    if not ok(d.start(), "restart after kill -9"):
        return
    more = os.path.join(root, "more")
    os.makedirs(more)
    for i in range(n):
        with open(os.path.join(more, "m%03d.png" % i), "wb") as fh:
            fh.write(png_bytes(96, 64, 5000 + i))
    result = {}

    def send():
        try:
            result["r"] = d.post("/v1/ingest", {"dir": more}, timeout=60)
        except Exception as e:  # the daemon dies under us
            result["e"] = e
    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.15)
    d.stop(signal.SIGKILL)
    t.join()
    if "r" in result and result["r"].status == 202:
        acked |= {it["id"] for it in result["r"].json["items"]}
        diag("second ingest finished before the kill")
    else:
        diag("second ingest interrupted: %r" % result.get("e"))

    if not ok(d.start(), "restart after the second kill -9"):
        return
    try:
        s = d.wait_idle()
        ok(s is not None, "the queue drains after restart", s)
        ids_missing = [i for i in sorted(acked) if d.get("/v1/images/%d" % i).status != 200]
        not_ready = [i for i in sorted(acked)
                     if d.get("/v1/images/%d" % i).json.get("status") != "ready"]
        ok(not ids_missing and not not_ready,
           "every acknowledged image (%d) is stored and ready" % len(acked),
           "missing %s, not ready %s" % (ids_missing[:10], not_ready[:10]))
        r = d.post("/v1/search", {"text": "noise", "k": 1000})
        got = [x["id"] for x in r.json["results"]]
        ok(len(got) == len(set(got)) and len(got) == s["images"]["ready"] and
           s["images"]["ready"] == s["images"]["total"] and
           s["index"]["images"]["count"] == s["images"]["ready"],
           "search count = index count = ready count = stored count, no duplicates",
           (len(got), len(set(got)), s))
        sha = set()
        dup = 0
        for i in got:
            h = d.get("/v1/images/%d" % i).json["sha256"]
            dup += h in sha
            sha.add(h)
        ok(dup == 0 and acked <= set(got), "no content stored twice; every acknowledged id found",
           dup)
    finally:
        ok(d.stop() == 0, "kill -9 daemon: SIGTERM exit 0")


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
    if not BIN or not os.path.exists(BIN) or not os.path.isdir(MODEL):
        print("1..0 # SKIP CLIPD_BIN or CLIPD_REFERENCE not set")
        return 0
    with open(os.path.join(MODEL, "expected.json")) as fh:
        expected = json.load(fh)
    tmp = tempfile.mkdtemp(prefix="clipd-e2e-")
    try:
        test_main(tmp, expected)
        test_auth_and_limits(tmp)
        test_api_key_reads(tmp)
        test_kill9(tmp)
    except Exception as e:  # a crash of the test itself is a failure
        import traceback
        ok(False, "test script raised %s" % type(e).__name__, traceback.format_exc())
    finally:
        if _failed == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            diag("kept %s for inspection" % tmp)
    print("1..%d" % _n)
    return 1 if _failed else 0


if __name__ == "__main__":
    sys.exit(main())
