#!/usr/bin/env python3
"""End-to-end tests of clipd: the real daemon on 127.0.0.1, talking HTTP.

Environment (set by tests/e2e/meson.build):
  CLIPD_BIN        path to build/clipd
  CLIPD_REFERENCE  ../shared/reference (read-only: tests copy what they need)
  CLIP_MKMODEL     path to build/clip-mkmodel (for the model-mismatch case)
  CLIPD_MKJPEG     path to build/tests/e2e/mkjpeg (large photo-like JPEGs)

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
MKJPEG = os.environ.get("CLIPD_MKJPEG", "")
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


def skip(name):
    global _n
    _n += 1
    print("ok %d # SKIP %s" % (_n, name))
    sys.stdout.flush()


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
    def __init__(self, name, data, extra=(), env_extra=None, model=MODEL, wrap=()):
        self.wrap = list(wrap)  # a command the daemon runs under (e.g. prlimit)
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
        args = self.wrap + [BIN, "--model", self.model, "--data", self.data,
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

    # f32: the reference kit's scores hold to 1e-3 in float32 only
    # (test_precisions checks bf16 and int8 against it with their own bounds).
    d = Daemon("main", os.path.join(tmp, "data-main"),
               ["--allow-root", root, "--precision", "f32"])
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

        # Concurrent single-text searches are encoded together in batches
        # (server/encoder.c); each must still get its own text's ranking.
        results = {}

        def search_one(t_i):
            r = d.post("/v1/search", {"text": texts[t_i], "k": 7})
            results[t_i] = r

        threads = [threading.Thread(target=search_one, args=(t_i,)) for t_i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bad = []
        for t_i in range(len(texts)):
            r = results.get(t_i)
            if not r or r.status != 200:
                bad.append("text %d: %s" % (t_i, r and r.status))
                continue
            got = [(names.get(x["id"], "?"), x["score"]) for x in r.json["results"]]
            want = {ref_images[i]: L[i][t_i] for i in range(len(ref_images))}
            bad += check_ranking(got, want, scale)
        ok(not bad, "%d concurrent searches, batched together, each rank as expected.json" %
           len(texts), "\n".join(bad))
        _worst[:] = [0.0, 0]

        # Image queries sent with the request are batched the same way:
        # concurrent ones must answer exactly what one at a time does.
        b64 = {}
        for f in ref_images:
            with open(os.path.join(REF, "images", f), "rb") as fh:
                b64[f] = base64.b64encode(fh.read()).decode()
        alone = {f: d.post("/v1/search", {"image_b64": b64[f], "k": 7}) for f in ref_images}
        together = {}

        def search_img(f):
            together[f] = d.post("/v1/search", {"image_b64": b64[f], "k": 7})

        threads = [threading.Thread(target=search_img, args=(f,)) for f in ref_images]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bad = []
        for f in ref_images:
            a, t2 = alone[f], together.get(f)
            if a.status != 200 or not t2 or t2.status != 200:
                bad.append("%s: %s / %s" % (f, a.status, t2 and t2.status))
                continue
            ia = [(x["id"], x["score"]) for x in a.json["results"]]
            it = [(x["id"], x["score"]) for x in t2.json["results"]]
            if [x[0] for x in ia] != [x[0] for x in it] or \
                    max(abs(x[1] - y[1]) for x, y in zip(ia, it)) > 1e-4:
                bad.append("%s: %r != %r" % (f, ia, it))
            elif names.get(ia[0][0]) != f:
                bad.append("%s: not its own best match" % f)
        ok(not bad, "%d concurrent image queries, batched together, equal one-at-a-time answers" %
           len(ref_images), "\n".join(bad))

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
        # The 19 prompts were encoded once and served from the cache for
        # the other six images (whose answers above match all the same).
        st = d.get("/v1/stats").json
        ok(st.get("prompt_cache") == len(texts), "classify prompts are cached: %d in the cache" %
           len(texts), st.get("prompt_cache"))
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
        before = [x["id"] for x in d.post("/v1/search", {"text": texts[4], "k": 50}).json["results"]]

        # SIGTERM while a request is in flight: the request still completes.
        body, ctype = multipart([], [("file", "late%d.png" % i, png_bytes(32, 32, 900 + i),
                                      "image/png") for i in range(5)])
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=60)
        sock.sendall(("POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
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


# ---- the config file: --config FILE / CLIPD_CONFIG ------------------------------

class ConfDaemon(Daemon):
    """A daemon started with exactly args: nothing added, so the model, data
    and listen address may come from a config file or the environment."""

    def __init__(self, name, data, args, env_extra=None):
        super().__init__(name, data, env_extra=env_extra)
        self.args = list(args)

    def start(self, expect_fail=False, timeout=120):
        env = dict(os.environ)
        env.update(self.env_extra)
        self.log_file = open(self.log_path, "ab")
        self.log_offset = self.log_file.tell()
        self.proc = subprocess.Popen([BIN] + self.args, stdout=self.log_file,
                                     stderr=self.log_file, env=env)
        end = time.time() + timeout
        while time.time() < end:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log())
            if m:
                self.port = int(m.group(1))
                return True
            if self.proc.poll() is not None:
                if not expect_fail:
                    diag("%s exited with %s:\n%s" % (self.name, self.proc.returncode, self.log()))
                return False
            time.sleep(0.05)
        diag("%s did not start:\n%s" % (self.name, self.log()))
        return False


def key_in_force(d, keys):
    """The one of keys that a write accepts (a DELETE of an unknown id
    answers 404 with the right key, 401 with a wrong one)."""
    for k in keys:
        r = d.delete("/v1/images/987654321", headers={"Authorization": "Bearer " + k})
        if r.status != 401:
            return k
    return None


def run_clipd(args, env_extra=None):
    """Runs clipd to completion (for start-up errors): (exit status, stderr)."""
    env = dict(os.environ)
    env.update(env_extra or {})
    p = subprocess.run([BIN] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env=env, timeout=60)
    return p.returncode, p.stderr.decode(errors="replace")


def test_config_file(tmp):
    base = os.path.join(tmp, "conf")
    os.makedirs(os.path.join(base, "photos-a"))
    root_b = os.path.join(base, "photos-b")
    os.makedirs(root_b)
    for path, seed in ((os.path.join(base, "photos-a", "a.png"), 71),
                       (os.path.join(base, "photos-a", "b.png"), 72),
                       (os.path.join(base, "outside.png"), 73)):
        with open(path, "wb") as f:
            f.write(png_bytes(32, 24, seed))
    conf = os.path.join(base, "clipd.conf")
    with open(conf, "w") as f:
        f.write("# clipd test configuration\n\n"
                "model = %s\n"
                "data = data\n"
                "  listen = 127.0.0.1:0   \n"
                "api-key = file-key\n"
                "workers = 1\n"
                "log-level = \"info\"\n"
                "allow-root = photos-a\n"
                "allow-root = %s\n" % (MODEL, root_b))
    keys = ["file-key", "env-key", "cli-key", "kf-key"]

    # The file alone: model, data (relative to the file), listen, key, roots.
    d = ConfDaemon("conf-file", os.path.join(base, "data"), ["--config", conf])
    if ok(d.start(), "clipd --config FILE starts with model, data and listen from the file"):
        try:
            ok(os.path.exists(os.path.join(base, "data", "clipd.db")),
               "config file: a relative data path is taken from the file's folder")
            ok(key_in_force(d, keys) == "file-key", "config file: its api-key is in force")
            d.key = "file-key"
            r = d.post("/v1/ingest", {"paths": [os.path.join(base, "photos-a", "a.png")]})
            ok(r.status == 202 and r.json.get("accepted") == 1,
               "config file: a relative allow-root admits files under it", r)
            r = d.post("/v1/ingest", {"paths": [os.path.join(base, "outside.png")]})
            ok(r.status == 403, "config file: paths outside its allow-roots are refused", r)
        finally:
            ok(d.stop() == 0, "config file daemon: SIGTERM exit 0")

    # CLIPD_CONFIG names the file; the environment wins over the file.
    d = ConfDaemon("conf-env", os.path.join(base, "data"), [],
                   env_extra={"CLIPD_CONFIG": conf, "CLIPD_API_KEY": "env-key"})
    if ok(d.start(), "CLIPD_CONFIG=FILE starts clipd from the file"):
        try:
            ok(key_in_force(d, keys) == "env-key", "precedence: environment over config file")
        finally:
            ok(d.stop() == 0, "CLIPD_CONFIG daemon: SIGTERM exit 0")

    # The command line wins over both; --allow-root on it replaces the file's list.
    d = ConfDaemon("conf-cli", os.path.join(base, "data"),
                   ["--config", conf, "--api-key", "cli-key", "--allow-root", root_b],
                   env_extra={"CLIPD_API_KEY": "env-key"})
    if ok(d.start(), "clipd --config FILE with command-line options starts"):
        try:
            ok(key_in_force(d, keys) == "cli-key",
               "precedence: command line over environment over config file")
            d.key = "cli-key"
            r = d.post("/v1/ingest", {"paths": [os.path.join(base, "photos-a", "b.png")]})
            ok(r.status == 403, "precedence: --allow-root on the command line replaces the file's", r)
        finally:
            ok(d.stop() == 0, "command-line daemon: SIGTERM exit 0")

    # The key and the key file are one setting: a stronger key file beats the file's key.
    key_file = os.path.join(base, "key.txt")
    with open(key_file, "w") as f:
        f.write("kf-key\n")
    d = ConfDaemon("conf-keyfile", os.path.join(base, "data"),
                   ["--config", conf, "--api-key-file", key_file])
    if ok(d.start(), "clipd --config FILE --api-key-file starts"):
        try:
            ok(key_in_force(d, keys) == "kf-key",
               "precedence: --api-key-file on the command line over api-key in the file")
        finally:
            ok(d.stop() == 0, "key-file daemon: SIGTERM exit 0")

    # Errors name the file and the line.
    def bad_conf(name, text, expect, env_extra=None, args=()):
        path = os.path.join(base, name)
        with open(path, "w") as f:
            f.write(text)
        rc, err = run_clipd(["--config", path] + list(args), env_extra)
        ok(rc == 2 and expect % {"f": path} in err,
           "config error %s: exit 2 with %r" % (name, expect % {"f": "FILE"}), (rc, err))

    bad_conf("unknown.conf", "# ok\nmodel = %s\nmodle = x\n" % MODEL,
             "%(f)s:3: unknown key 'modle'")
    bad_conf("value.conf", "data = d\nworkers = lots\nmodel = m\n",
             "%(f)s:2: workers: 'lots' is not an integer")
    bad_conf("noeq.conf", "\n\nlisten 127.0.0.1:0\n", "%(f)s:3: expected \"key = value\"")
    bad_conf("twice.conf", "workers = 1\nworkers = 2\n", "%(f)s:2: workers: set twice (first on line 1)")
    bad_conf("flag.conf", "api-key-reads = maybe\n", "%(f)s:1: api-key-reads: 'maybe' is not true or false")
    bad_conf("fast.conf", "fast-decode = maybe\n", "%(f)s:1: fast-decode: 'maybe' is not true or false")
    bad_conf("root.conf", "model = m\ndata = d\nallow-root = does-not-exist\n",
             "%(f)s:3: allow-root: ")
    bad_conf("listen.conf", "model = m\ndata = d\nlisten = localhost:80\n",
             "%(f)s:3: listen: 'localhost' is not a numeric")
    rc, err = run_clipd(["--config", os.path.join(base, "missing.conf")])
    ok(rc == 2 and "--config: cannot open" in err, "a missing config file: exit 2, named", err)
    rc, err = run_clipd(["--model", "m", "--data", "d"], {"CLIPD_WORKERS": "x"})
    ok(rc == 2 and "CLIPD_WORKERS: 'x' is not an integer" in err,
       "a bad environment value is named by its variable", err)
    rc = subprocess.run([BIN, "--help"], stdout=subprocess.PIPE, timeout=30)
    out = rc.stdout.decode()
    ok(rc.returncode == 0 and "--config FILE" in out and "config file" in out,
       "--help documents --config and the precedence", out)
    ok("--fast-decode" in out, "--help documents --fast-decode", out)


# ---- --fast-decode: JPEG shrink-on-load ----------------------------------------------

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


# ---- the API's own description: routes, OpenAPI, metrics, thumbnails, README --------

SRC = os.environ.get("CLIPD_SOURCE_ROOT") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ROUTE_LINE = re.compile(r'^\s*\{"([A-Z]+)",\s*"([^"]+)",\s*(\w+),\s*(BODY_[A-Z]+),\s*([01])\},\s*$')


def router_routes():
    """The route table of server/router.c: [(method, pattern, writes)]. Every
    line of the table must be a route in the fixed format (else a route could
    hide from this check); returns (routes, lines that are not)."""
    with open(os.path.join(SRC, "server", "router.c")) as fh:
        text = fh.read()
    m = re.search(r"static const route routes\[\] = \{\n(.*?)\n\};", text, re.S)
    if not m:
        return [], ["the route table was not found in server/router.c"]
    routes, odd = [], []
    for line in m.group(1).splitlines():
        if not line.strip() or line.strip().startswith(("/*", "*", "//")):
            continue
        r = ROUTE_LINE.match(line)
        if r:
            routes.append((r.group(1), r.group(2), r.group(5) == "1"))
        else:
            odd.append(line)
    return routes, odd


def pattern_re(pattern):
    return re.compile("^" + re.escape(pattern).replace(re.escape("{id}"), "[1-9][0-9]*") + "/?$")


def resolve(doc, node):
    """Follows a local $ref (one level is all this document uses)."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return None
        node = doc
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
    return node


def dangling_refs(doc, node=None, where="#"):
    node = doc if node is None else node
    bad = []
    if isinstance(node, dict):
        if "$ref" in node and resolve(doc, {"$ref": node["$ref"]}) is None:
            bad.append("%s -> %s" % (where, node["$ref"]))
        for k, v in node.items():
            bad += dangling_refs(doc, v, where + "/" + str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            bad += dangling_refs(doc, v, "%s/%d" % (where, i))
    return bad


def schema_at(doc, name, *path):
    """components.schemas[name] followed down path (property names; "[]"
    for an array's items, an int for oneOf's branch)."""
    node = resolve(doc, {"$ref": "#/components/schemas/" + name}) or {}
    for k in path:
        node = resolve(doc, node) or {}
        if k == "[]":
            node = node.get("items", {})
        elif isinstance(k, int):
            node = node.get("oneOf", [{}] * (k + 1))[k]
        else:
            node = node.get("properties", {}).get(k, {})
    return resolve(doc, node) or {}


def test_openapi_limits(d, doc):
    """The documented limits are the daemon's: at each maximum the request
    is served, one past it is refused with a status the operation lists and
    a message naming the number."""
    img = d.post("/v1/images?wait=true", png_bytes(20, 20, 4343), ctype="image/png")
    iid = img.json["id"] if img.status == 200 else 1
    ops = doc["paths"]

    def probe(name, method, path, make, n):
        if not isinstance(n, int):
            ok(False, "%s: the document gives a number" % name, n)
            return
        listed = ops[path][method.lower()]["responses"]
        at = d.request(method, path, make(n))
        over = d.request(method, path, make(n + 1))
        ok(at.status < 300 and str(over.status) in listed and 400 <= over.status < 500 and
           (str(n) in over.err_msg() or format(n, ",") in over.err_msg()),
           "%s: %d is served, %d is refused (%d, listed) naming the limit" %
           (name, n, n + 1, over.status), (at, over))

    probe("search text maxLength", "POST", "/v1/search", lambda n: {"text": "a" * n, "k": 1},
          schema_at(doc, "SearchRequest", "text").get("maxLength"))
    probe("search filter maxProperties", "POST", "/v1/search",
          lambda n: {"text": "a", "filter": {"k%d" % i: "v" for i in range(n)}},
          schema_at(doc, "SearchRequest", "filter").get("maxProperties"))
    n = next((p["schema"].get("maxLength") for p in ops["/v1/search"]["get"]["parameters"]
              if p["name"] == "q"), None)
    if isinstance(n, int):
        at = d.get("/v1/search?k=1&q=" + "a" * n)
        over = d.get("/v1/search?k=1&q=" + "a" * (n + 1))
        ok(at.status == 200 and 400 <= over.status < 500 and
           (format(n, ",") in over.err_msg() or str(n) in over.err_msg()), "GET /v1/search q maxLength %d: served at it, refused past it" % n,
           (at, over))
    else:
        ok(False, "GET /v1/search q has a maxLength", n)
    probe("classify labels maxItems", "POST", "/v1/classify",
          lambda n: {"image_id": iid, "labels": ["l%d" % i for i in range(n)]},
          schema_at(doc, "ClassifyRequest", "labels").get("maxItems"))
    probe("classify label maxLength", "POST", "/v1/classify",
          lambda n: {"image_id": iid, "labels": ["b" * n, "c"]},
          schema_at(doc, "ClassifyRequest", "labels", "[]").get("maxLength"))
    probe("classify templates maxItems", "POST", "/v1/classify",
          lambda n: {"image_id": iid, "labels": ["x"], "templates": ["t%d {}" % i for i in range(n)]},
          schema_at(doc, "ClassifyRequest", "templates").get("maxItems"))
    probe("classify template maxLength", "POST", "/v1/classify",
          lambda n: {"image_id": iid, "labels": ["x"], "templates": ["{}" + "t" * (n - 2)]},
          schema_at(doc, "ClassifyRequest", "templates", "[]").get("maxLength"))
    probe("embed texts maxItems", "POST", "/v1/embed", lambda n: {"texts": ["e"] * n},
          schema_at(doc, "EmbedRequest", "texts").get("maxItems"))
    probe("embed text maxLength", "POST", "/v1/embed", lambda n: {"texts": ["e" * n]},
          schema_at(doc, "EmbedRequest", "texts", "[]").get("maxLength"))
    probe("texts text maxLength", "POST", "/v1/texts", lambda n: {"texts": ["t" * n]},
          schema_at(doc, "TextsRequest", "texts", "[]", 0).get("maxLength"))
    probe("texts maxItems", "POST", "/v1/texts", lambda n: {"texts": ["s%d" % i for i in range(n)]},
          schema_at(doc, "TextsRequest", "texts").get("maxItems"))


def test_openapi(tmp):
    routes, odd = router_routes()
    ok(routes and not odd, "server/router.c: every line of the route table parses (%d routes)" %
       len(routes), "\n".join(odd))
    d = Daemon("openapi", os.path.join(tmp, "data-openapi"))
    if not ok(d.start(), "clipd starts for the OpenAPI checks"):
        return
    try:
        r = d.get("/openapi.json")
        doc = r.json
        ok(r.status == 200 and r.headers.get("Content-Type", "").startswith("application/json") and
           isinstance(doc, dict), "GET /openapi.json: 200, JSON", r)
        if not isinstance(doc, dict):
            return
        with open(os.path.join(SRC, "server", "openapi.json"), "rb") as fh:
            ok(fh.read() == r.body, "the served document is server/openapi.json as it is in the repo")
        ok(re.match(r"^3\.\d+\.\d+$", str(doc.get("openapi"))) and doc.get("info", {}).get("title")
           and isinstance(doc.get("paths"), dict), "an OpenAPI 3.x document with info and paths",
           doc.get("openapi"))
        bad = dangling_refs(doc)
        ok(not bad, "every $ref of the document resolves", "\n".join(bad))

        documented = {}
        for path, item in doc.get("paths", {}).items():
            for m, o in item.items():
                if m in HTTP_METHODS:
                    documented[(m.upper(), path)] = (item, o)
        served = {(m, p): w for m, p, w in routes}
        missing = sorted(set(served) - set(documented))
        extra = sorted(set(documented) - set(served))
        ok(not missing, "every route of router.c is in the OpenAPI document",
           "undocumented: %s" % missing)
        ok(not extra, "every route of the OpenAPI document is in router.c",
           "documented, not routed: %s" % extra)

        schemes = doc.get("components", {}).get("securitySchemes", {})
        bearer = [n for n, s in schemes.items() if s.get("type") == "http" and
                  str(s.get("scheme", "")).lower() == "bearer"]
        ok(bearer, "a bearer security scheme is defined", schemes)
        err = resolve(doc, {"$ref": "#/components/schemas/Error"}) or {}
        inner = err.get("properties", {}).get("error", {})
        ok(set(inner.get("properties", {})) >= {"code", "message"} and
           set(inner.get("required", [])) >= {"code", "message"} and "error" in err.get("required", []),
           "the Error schema is {\"error\": {\"code\", \"message\"}}", err)

        problems = []
        for (m, path), (item, o) in sorted(documented.items()):
            name = "%s %s" % (m, path)
            params = [resolve(doc, p) or {} for p in item.get("parameters", []) + o.get("parameters", [])]
            for var in re.findall(r"\{(\w+)\}", path):
                if not any(p.get("in") == "path" and p.get("name") == var and p.get("required")
                           for p in params):
                    problems.append("%s: path parameter {%s} is not declared" % (name, var))
            responses = o.get("responses", {})
            if not any(str(c).startswith("2") for c in responses):
                problems.append("%s: no 2xx response" % name)
            if path.startswith("/v1/"):
                errs = [c for c in responses if str(c)[0] in "45"]
                if not errs:
                    problems.append("%s: no error response" % name)
                for c in errs:
                    resp = resolve(doc, responses[c]) or {}
                    schema = resp.get("content", {}).get("application/json", {}).get("schema", {})
                    if schema.get("$ref") != "#/components/schemas/Error":
                        problems.append("%s: response %s is not the Error schema" % (name, c))
            sec = o.get("security", doc.get("security"))
            if served.get((m, path)):
                if not sec or any(not s for s in sec) or not all(set(s) <= set(bearer) for s in sec):
                    problems.append("%s: writes, but its security does not require the bearer key" % name)
            if (m in ("POST", "PATCH") and "requestBody" not in o):
                problems.append("%s: no requestBody" % name)
        ok(not problems, "every operation: path parameters, 2xx and Error responses, security, bodies",
           "\n".join(problems))

        # Every error code the daemon can send (server/errors.c's table) is
        # named in the Error schema, and every route behind the Host check
        # documents its 403.
        with open(os.path.join(SRC, "server", "errors.c")) as fh:
            codes = set(re.findall(r'^\s*\{ERR_\w+, \w+, \d+, "(\w+)"\}', fh.read(), re.M))
        listed = set(re.findall(r"\w+", inner.get("properties", {}).get("code", {})
                                .get("description", "")))
        ok(codes and codes <= listed, "every code of server/errors.c is in the Error schema",
           sorted(codes - listed))
        no403 = ["%s %s" % k for k, (item, o) in sorted(documented.items())
                 if k[1] not in ("/healthz", "/readyz") and "403" not in o.get("responses", {})]
        ok(not no403, "every operation behind the Host check documents 403", no403)
        test_openapi_limits(d, doc)

        # Live: every documented operation reaches a handler (never 404 for
        # the path or 405), with ids that exist; deletes go last.
        img = png_bytes(24, 24, 4242)
        r = d.post("/v1/images?wait=true", img, ctype="image/png")
        image_id = r.json["id"] if r.status == 200 else 1
        r = d.post("/v1/texts", {"texts": ["a caption"]})
        text_id = r.json["ids"][0] if r.status == 202 else 1
        job_id = r.json["job_id"] if r.status == 202 else 1
        ids = {"/v1/images/": image_id, "/v1/texts/": text_id, "/v1/jobs/": job_id}
        unreached = []
        for (m, path) in sorted(documented, key=lambda k: (k[0] == "DELETE", k[1], k[0])):
            url = path
            for prefix, v in ids.items():
                if path.startswith(prefix):
                    url = path.replace("{id}", str(v))
            body = {} if m in ("POST", "PATCH", "PUT") else None
            resp = d.request(m, url, body)
            if resp.status in (404, 405):  # the ids exist: a 404 is the route's
                unreached.append("%s %s -> %r" % (m, url, resp))
        ok(not unreached, "every documented operation is served by the live daemon (no 404/405)",
           "\n".join(unreached))
    finally:
        ok(d.stop() == 0, "openapi daemon: SIGTERM exit 0")


# -- metrics --

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
BUCKETS = ["0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
           "+Inf"]


def parse_metrics(text):
    """Exposition text -> ({(name, ((label, value), ...)): value}, {family: type}, problems)."""
    samples, types, helps, problems = {}, {}, set(), []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(" ", 3)
            types[fam] = typ
        elif line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
        elif line.startswith("#") or not line.strip():
            continue
        else:
            m = SAMPLE.match(line)
            if not m:
                problems.append("malformed line: %r" % line)
                continue
            labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
            key = (m.group(1), labels)
            if key in samples:
                problems.append("duplicate series: %r" % line)
            try:
                samples[key] = float(m.group(3))
            except ValueError:
                problems.append("bad value: %r" % line)
    for fam in types:
        if fam not in helps:
            problems.append("no HELP for %s" % fam)
    for name, _ in samples:
        fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        if fam not in types:
            problems.append("no TYPE for %s" % name)
    return samples, types, problems


def mval(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def hist_problems(samples, fam):
    """Checks every series of histogram fam: the bucket bounds, cumulative
    counts, +Inf == _count, a _sum."""
    problems, series = [], {}
    for (name, labels), v in samples.items():
        if name == fam + "_bucket":
            rest = tuple(kv for kv in labels if kv[0] != "le")
            le = dict(labels).get("le")
            series.setdefault(rest, {})[le] = v
    for rest, b in series.items():
        if sorted(b, key=lambda x: float(x)) != [x for x in BUCKETS]:
            problems.append("%s%s: buckets %s" % (fam, rest, sorted(b)))
            continue
        counts = [b[x] for x in BUCKETS]
        if counts != sorted(counts):
            problems.append("%s%s: buckets not cumulative %s" % (fam, rest, counts))
        cnt = samples.get((fam + "_count", rest))
        if cnt is None or cnt != counts[-1]:
            problems.append("%s%s: _count %s != +Inf %s" % (fam, rest, cnt, counts[-1]))
        if samples.get((fam + "_sum", rest)) is None or samples[(fam + "_sum", rest)] < 0:
            problems.append("%s%s: no _sum" % (fam, rest))
    return problems, series


def test_metrics(tmp):
    routes, _ = router_routes()
    patterns = {p for _, p, _ in routes}
    d = Daemon("metrics", os.path.join(tmp, "data-metrics"))
    if not ok(d.start(), "clipd starts for the metrics checks"):
        return
    try:
        def scrape():
            r = d.get("/metrics")
            s, t, p = parse_metrics(r.body.decode(errors="replace"))
            return r, s, t, p
        r, m0, types, problems = scrape()
        ok(r.status == 200 and r.headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
           "GET /metrics: 200, text/plain; version=0.0.4", (r.status, r.headers.get("Content-Type")))
        ok(not problems, "the exposition parses: every sample has a TYPE and HELP, no duplicates",
           "\n".join(problems))
        want_types = {"clipd_http_requests_total": "counter",
                      "clipd_http_request_duration_seconds": "histogram",
                      "clipd_queue_depth": "gauge", "clipd_items": "gauge",
                      "clipd_index_vectors": "gauge", "clipd_encode_seconds": "histogram",
                      "clipd_encoded_items_total": "counter"}
        ok(all(types.get(k) == v for k, v in want_types.items()), "every metric family is there",
           types)
        ok(("clipd_queue_depth", ()) in m0 and m0[("clipd_queue_depth", ())] == 0,
           "clipd_queue_depth is 0 on an idle daemon", m0.get(("clipd_queue_depth", ())))
        ok(all(("clipd_index_vectors", (("collection", c),)) in m0 for c in ("images", "texts")) and
           all(("clipd_items", (("collection", c),)) in m0 for c in ("images", "texts")),
           "clipd_items and clipd_index_vectors for both collections")

        for _ in range(3):
            d.get("/v1/stats")
        d.get("/v1/images/99999")
        d.get("/v1/images/99998")
        d.get("/no/such/route")
        d.post("/v1/search", {"text": "a dog"})
        with open(os.path.join(REF, "images", "horse.png"), "rb") as fh:
            horse = fh.read()
        d.post("/v1/search", {"image_b64": base64.b64encode(horse).decode()})
        r = d.post("/v1/images?wait=true", png_bytes(32, 32, 77), ctype="image/png")
        ok(r.status == 200, "an upload is indexed", r)
        r, m1, _, problems = scrape()
        ok(not problems, "the exposition still parses", "\n".join(problems))

        def delta(route, method, code):
            k = dict(route=route, method=method, code=str(code))
            return mval(m1, "clipd_http_requests_total", **k) - mval(m0, "clipd_http_requests_total", **k)
        moves = [("/v1/stats", "GET", 200, 3), ("/v1/images/{id}", "GET", 404, 2),
                 ("unmatched", "GET", 404, 1), ("/v1/search", "POST", 200, 2),
                 ("/v1/images", "POST", 200, 1), ("/metrics", "GET", 200, 1)]
        got = [(rt, mt, c, delta(rt, mt, c)) for rt, mt, c, _ in moves]
        ok(all(g[3] == w[3] for g, w in zip(got, moves)),
           "request counters move by the requests made, keyed by route pattern", got)
        hp, series = hist_problems(m1, "clipd_http_request_duration_seconds")
        ok(not hp and (("route", "/v1/stats"),) in series, "latency histograms are well-formed",
           "\n".join(hp))
        ok(mval(m1, "clipd_http_request_duration_seconds_count", route="/v1/stats") -
           mval(m0, "clipd_http_request_duration_seconds_count", route="/v1/stats") == 3,
           "the /v1/stats histogram counted its 3 requests")
        hp, series = hist_problems(m1, "clipd_encode_seconds")
        ok(not hp and set(series) == {(("tower", "image"),), (("tower", "text"),)},
           "encode histograms are well-formed, one per tower", "\n".join(hp) or series)
        enc = {t: mval(m1, "clipd_encoded_items_total", tower=t) -
               mval(m0, "clipd_encoded_items_total", tower=t) for t in ("image", "text")}
        cnt = {t: mval(m1, "clipd_encode_seconds_count", tower=t) -
               mval(m0, "clipd_encode_seconds_count", tower=t) for t in ("image", "text")}
        ok(enc["text"] >= 1 and cnt["text"] >= 1 and enc["image"] >= 2 and cnt["image"] >= 2,
           "encode counters move: a text query, an image query and a worker batch", (enc, cnt))
        ok(mval(m1, "clipd_items", collection="images") == 1 and
           mval(m1, "clipd_index_vectors", collection="images") == 1,
           "item and index gauges follow the upload")

        # Bounded labels: many distinct URLs and odd methods add no series.
        before = len([k for k in m1 if k[0] == "clipd_http_requests_total"])
        for i in range(25):
            d.get("/v1/images/%d" % (500000 + i))
            d.get("/junk/%d" % i)
            d.request("BREW", "/v1/coffee/%d" % i)
        d.request("PUT", "/v1/images")
        r, m2, _, _ = scrape()
        series = [dict(k[1]) for k in m2 if k[0] == "clipd_http_requests_total"]
        bad = [s for s in series if s.get("route") not in patterns | {"unmatched"} or
               s.get("method") not in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                                       "OTHER") or not re.match(r"^\d{1,3}$", s.get("code", ""))]
        ok(not bad, "label values are bounded: router patterns or 'unmatched', known methods, codes",
           bad)
        ok(len(series) <= before + 4, "75 distinct URLs add at most a few series (%d -> %d)" %
           (before, len(series)), series)
        ok(mval(m2, "clipd_http_requests_total", route="unmatched", method="OTHER", code="404") == 25,
           "unknown methods on unknown routes count as method OTHER, route unmatched")
    finally:
        ok(d.stop() == 0, "metrics daemon: SIGTERM exit 0")


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


# -- the README's curl examples --

def readme_examples():
    """The curl commands of README.md's "## HTTP API" section, in order."""
    with open(os.path.join(SRC, "README.md")) as fh:
        text = fh.read()
    m = re.search(r"^## HTTP API\n(.*?)(?=^## )", text, re.S | re.M)
    if not m:
        return None
    cmds, cur = [], ""
    for line in m.group(1).splitlines():
        if not line.startswith("    "):
            cur = ""
            continue
        s = line[4:]
        if cur:
            cur += " " + s.strip()
        elif s.startswith("curl "):
            cur = s
        else:
            continue
        if cur.endswith("\\"):
            cur = cur[:-1].rstrip()
            continue
        cmds.append(cur)
        cur = ""
    return cmds


def curl_route(cmd):
    """(method, path) a curl command asks for."""
    url = re.search(r"localhost:8080(/[^'\"\s?]*)", cmd)
    m = re.search(r"-X\s+([A-Z]+)", cmd)
    method = m.group(1) if m else (
        "POST" if re.search(r"\s(-d|-F|--data-binary|--data)\s", cmd) else "GET")
    return method, url.group(1) if url else None


def test_readme_curl(tmp):
    examples = readme_examples()
    if not ok(examples, "README.md has a \"## HTTP API\" section with curl examples"):
        return
    routes, _ = router_routes()
    asked = [curl_route(c) for c in examples]
    uncovered = ["%s %s" % (m, p) for m, p, _ in routes
                 if not any(am == m and ap and pattern_re(p).match(ap) for am, ap in asked)]
    ok(not uncovered, "the README has a curl example for every route", uncovered)
    if not shutil.which("curl"):
        print("ok %d - # SKIP curl is not installed: the examples are not run" % (_n + 1))
        globals()["_n"] += 1
        return
    work = os.path.join(tmp, "readme")
    photos = os.path.join(work, "photos")
    os.makedirs(os.path.join(photos, "2024"))
    for src, dst in (("rocket.jpg", "photo.jpg"), ("horse.png", "a.png"), ("chelsea.png", "b.png"),
                     ("coffee.png", "photos/coffee.png"), ("astronaut.png", "photos/2024/astronaut.png")):
        shutil.copy(os.path.join(REF, "images", src), os.path.join(work, dst))
    key = "readme-key"
    d = Daemon("readme", os.path.join(tmp, "data-readme"), ["--api-key", key, "--allow-root", photos])
    if not ok(d.start(), "clipd starts for the README examples"):
        return
    try:
        env = dict(os.environ, KEY=key)
        failed = []
        for cmd in examples:
            run = cmd.replace("localhost:8080", "127.0.0.1:%d" % d.port).replace("/srv/photos", photos)
            run = run.replace("curl ", "curl -sS -w '\\nHTTP %{http_code}' ", 1)
            p = subprocess.run(["bash", "-c", run], cwd=work, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=120)
            out = p.stdout.decode(errors="replace")
            status = re.search(r"HTTP (\d{3})$", out)
            if p.returncode != 0 or not status or not status.group(1).startswith("2"):
                failed.append("%s\n  -> exit %d, %s %s" % (cmd, p.returncode, out[-300:],
                                                          p.stderr.decode(errors="replace")[-200:]))
        ok(not failed, "every README curl example (%d) succeeds against a fresh daemon with a key" %
           len(examples), "\n".join(failed))
    finally:
        ok(d.stop() == 0, "readme daemon: SIGTERM exit 0")


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


# ---- --watch ---------------------------------------------------------------------------

def images_by_name(d, base=""):
    """{filename: id} of every indexed image; watched files are named by
    their path under the watched directory base, joined to it here."""
    r = d.post("/v1/search", {"text": "x", "k": 1000})
    return ({os.path.join(base, x["filename"]): x["id"] for x in r.json["results"]}
            if r.status == 200 else {})


def wait_until(pred, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


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

# ---- --precision: bf16 and int8 against the reference kit -------------------------

# Score bounds for the low precisions: the model tests measure cosine >= 0.999
# (bf16) and >= 0.995 (int8) between their embeddings and float32's; a score
# is a cosine of two such embeddings.
PRECISION_TOL = {"bf16": 0.01, "int8": 0.03}


def test_precisions(tmp, expected):
    ref_images = [im["file"] for im in expected["images"]]
    texts = [t["text"] for t in expected["texts"]]
    L = expected["logits_per_image"]
    scale = expected["logit_scale"]

    rc, err = run_clipd(["--model", MODEL, "--data", os.path.join(tmp, "p-bad"),
                         "--precision", "fp16"])
    ok(rc == 2 and "--precision: 'fp16' is not auto, f32, bf16 or int8" in err,
       "--precision fp16: exit 2 naming the allowed values", err)

    files = []
    for f in ref_images:
        with open(os.path.join(REF, "images", f), "rb") as fh:
            files.append(("file", f, fh.read(), "image/jpeg" if f.endswith(".jpg") else "image/png"))
    body, ctype = multipart([], files)
    for prec, tol in sorted(PRECISION_TOL.items()):
        d = Daemon("prec-" + prec, os.path.join(tmp, "data-" + prec), ["--precision", prec])
        if not d.start(expect_fail=True):
            if "cannot run here" in d.log():
                skip("--precision %s: this CPU cannot run it (%s)" %
                     (prec, d.log().strip().splitlines()[-1]))
            else:
                ok(False, "clipd --precision %s starts" % prec, d.log())
            continue
        try:
            r = d.get("/v1/stats")
            ok(r.status == 200 and r.json["model"]["precision"] == prec,
               "--precision %s: GET /v1/stats reports it" % prec, r)
            r = d.post("/v1/ingest", body, ctype=ctype)
            job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
            names = {it["id"]: it["name"] for it in (r.json or {}).get("items", [])}
            ok(job is not None and job["done"] == len(ref_images),
               "--precision %s: the reference images are indexed" % prec, job)
            worst, bad = 0.0, []
            for t_i, text in enumerate(texts):
                r = d.post("/v1/search", {"text": text, "k": len(ref_images)})
                if r.status != 200:
                    bad.append("text %d: HTTP %d" % (t_i, r.status))
                    continue
                got = [(names.get(x["id"], "?"), x["score"]) for x in r.json["results"]]
                want = {ref_images[i]: L[i][t_i] / scale for i in range(len(ref_images))}
                for name, score in got:
                    worst = max(worst, abs(score - want[name]))
                    if abs(score - want[name]) > tol:
                        bad.append("text %d %r: score %.4f, expected %.4f" %
                                   (t_i, name, score, want[name]))
                for (a, _), (b, _) in zip(got, got[1:]):
                    if want[a] < want[b] - 2 * tol:
                        bad.append("text %d: %r ranked above %r" % (t_i, a, b))
            diag("--precision %s: largest score error %.4f" % (prec, worst))
            ok(not bad, "--precision %s: every text ranks the images as expected.json "
               "(scores within %g)" % (prec, tol), "\n".join(bad))
        finally:
            ok(d.stop() == 0, "--precision %s daemon: SIGTERM exit 0" % prec)


def run_tests(prefix, tests, need=(), need_msg="CLIPD_BIN or CLIPD_REFERENCE not set"):
    """The main of an e2e file: each test(tmp) in a fresh temp directory
    (kept when anything failed), a crash of one counted as a failure, the
    TAP plan at the end. need: more paths that must exist. Exit status."""
    if not BIN or not os.path.exists(BIN) or not os.path.isdir(MODEL) or \
            not all(p and os.path.exists(p) for p in need):
        print("1..0 # SKIP " + need_msg)
        return 0
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        for test in tests:
            try:
                test(tmp)
            except Exception:
                import traceback
                ok(False, "%s raised" % test.__name__, traceback.format_exc())
    finally:
        if _failed == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            diag("kept %s for inspection" % tmp)
    print("1..%d" % _n)
    return 1 if _failed else 0


def main():
    if not BIN or not os.path.exists(BIN) or not os.path.isdir(MODEL):
        print("1..0 # SKIP CLIPD_BIN or CLIPD_REFERENCE not set")
        return 0
    with open(os.path.join(MODEL, "expected.json")) as fh:
        expected = json.load(fh)
    tmp = tempfile.mkdtemp(prefix="clipd-e2e-")
    try:
        test_main(tmp, expected)
        test_precisions(tmp, expected)
        test_auth_and_limits(tmp)
        test_api_key_reads(tmp)
        test_kill9(tmp)
        test_config_file(tmp)
        test_fast_decode(tmp)
        test_openapi(tmp)
        test_metrics(tmp)
        test_thumbnails(tmp)
        test_readme_curl(tmp)
        test_jobs_and_texts(tmp)
        test_watch(tmp)
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
