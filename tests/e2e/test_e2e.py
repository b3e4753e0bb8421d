#!/usr/bin/env python3
"""The shared harness of clipd's end-to-end tests: the real daemon on
127.0.0.1, talking HTTP. Each area has its own file (test_api_search.py,
test_api_images.py, test_crash.py, test_watch.py, ..., test_sec_*.py), which
imports this one (`import test_e2e as e2e`) and ends with e2e.run_tests;
tests/e2e/meson.build registers each in suite 'e2e'. This file runs no
test itself.

Environment (set by tests/e2e/meson.build):
  CLIPD_BIN        path to build/clipd
  CLIPD_REFERENCE  ../shared/reference (read-only: tests copy what they need)
  CLIP_MKMODEL     path to build/clip-mkmodel (for the model-mismatch case)
  CLIPD_MKJPEG     path to build/tests/e2e/mkjpeg (large photo-like JPEGs)

Output is TAP. Python 3 standard library only. Expected numbers come from
$CLIPD_REFERENCE/tiny-clip-a/expected.json (open_clip, see its README):
search scores must equal logits / logit_scale within SCORE_TOL.
"""
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import types
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


def ingest_reference_images(d, images):
    """Ingests the reference images named in images (one multipart
    request) into d and waits for their job: two cases (accepted, indexed).
    Returns {file name: image id}."""
    files = []
    for f in images:
        with open(os.path.join(REF, "images", f), "rb") as fh:
            files.append(("file", f, fh.read(), "image/jpeg" if f.endswith(".jpg") else "image/png"))
    body, ctype = multipart([], files)
    r = d.post("/v1/ingest", body, ctype=ctype)
    ok(r.status == 202 and r.json["accepted"] == len(images), "ingest the %d images" % len(images), r)
    job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
    ok(job is not None and job["done"] == len(images), "the images are indexed", job)
    return {it["name"]: it["id"] for it in (r.json or {}).get("items", [])}


def cosine_ranking_problems(got, want):
    """got: [(name, score)] best first; want: {name: the expected cosine}.
    Scores within SCORE_TOL, order up to ties within TIE_TOL, the same set.
    Returns a list of problems (empty when fine)."""
    problems = []
    for name, score in got:
        if name not in want:
            problems.append("unexpected %r" % (name,))
        elif abs(score - want[name]) > SCORE_TOL:
            problems.append("%r: score %.6f, expected %.6f" % (name, score, want[name]))
    for (a, _), (b, _) in zip(got, got[1:]):
        if a in want and b in want and want[a] < want[b] - TIE_TOL:
            problems.append("%r ranked above %r" % (a, b))
    if sorted(n for n, _ in got) != sorted(want):
        problems.append("returned %s, expected %s" % (sorted(n for n, _ in got), sorted(want)))
    return problems


def norm(v):
    """v scaled to unit length."""
    s = math.sqrt(sum(x * x for x in v))
    return [x / s for x in v]


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


# ---- a daemon started from a config file or the environment ------------------------

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



def run_clipd(args, env_extra=None):
    """Runs clipd to completion (for start-up errors): (exit status, stderr)."""
    env = dict(os.environ)
    env.update(env_extra or {})
    p = subprocess.run([BIN] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env=env, timeout=60)
    return p.returncode, p.stderr.decode(errors="replace")



# ---- the source tree: the route table of server/router.c ---------------------------

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


# ---- waiting -------------------------------------------------------------------------

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


# ---- a daemon holding the reference kit ------------------------------------------

class SetupError(Exception):
    """A set-up step that is not itself a test case failed."""


def load_expected():
    with open(os.path.join(MODEL, "expected.json")) as fh:
        return json.load(fh)


def reference_daemon(tmp, name):
    """Set-up for the area files that test on top of the reference kit: a
    daemon in tmp/name (--allow-root tmp/name/root, which holds the
    reference images under ref/; tmp/name/outside beside it; --precision
    f32) with the reference images ingested by multipart and the reference
    texts added to the texts collection, both indexed. It prints no TAP
    line (the cases are the callers'); a step that fails raises SetupError,
    which run_tests reports as a failure. Returns a namespace: d, expected,
    ref_images, texts, ids ({file name: image id}), hid (horse.png's id),
    text_ids, root, outside."""
    expected = load_expected()
    ref_images = [im["file"] for im in expected["images"]]
    texts = [t["text"] for t in expected["texts"]]
    base = os.path.join(tmp, name)
    root = os.path.join(base, "root")
    os.makedirs(os.path.join(root, "ref"))
    files = []
    for f in ref_images:
        shutil.copy(os.path.join(REF, "images", f), os.path.join(root, "ref", f))
        with open(os.path.join(REF, "images", f), "rb") as fh:
            ctype = "image/jpeg" if f.endswith(".jpg") else "image/png"
            files.append(("file", f, fh.read(), ctype))
    outside = os.path.join(base, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "x.png"), "wb") as f:
        f.write(png_bytes(8, 8, 1))
    d = Daemon(name, os.path.join(base, "data"), ["--allow-root", root, "--precision", "f32"])
    if not d.start():
        raise SetupError("clipd did not start (see above)")
    try:
        body, ctype = multipart([], files)
        r = d.post("/v1/ingest", body, ctype=ctype)
        if r.status != 202 or r.json["accepted"] != len(ref_images):
            raise SetupError("ingest of the reference images: %r" % r)
        ids = {it["name"]: it["id"] for it in r.json["items"]}
        job = d.wait_job(r.json["job_id"])
        if not job or job["done"] != len(ref_images):
            raise SetupError("the reference images' job: %r" % job)
        r = d.post("/v1/texts", {"texts": [{"text": t, "meta": {"i": i}}
                                           for i, t in enumerate(texts)]})
        if r.status != 202:
            raise SetupError("POST /v1/texts: %r" % r)
        text_ids = r.json["ids"]
        job = d.wait_job(r.json["job_id"])
        if not job or job["done"] != len(texts):
            raise SetupError("the reference texts' job: %r" % job)
    except BaseException:
        d.stop()
        raise
    return types.SimpleNamespace(d=d, expected=expected, ref_images=ref_images, texts=texts,
                                 ids=ids, hid=ids.get("horse.png"), text_ids=text_ids, root=root,
                                 outside=outside)


def stop_checked(d, what):
    """Stops a set-up daemon with SIGTERM. A non-zero exit status (under
    ASan+UBSan: a report or a leak) is a failed case; a clean exit prints
    nothing, so that a passing run counts only the tests' own cases."""
    rc = d.stop()
    if rc not in (0, None):
        ok(False, "%s: SIGTERM exit 0" % what, "exit %s\n%s" % (rc, d.log()[-2000:]))


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
