#!/usr/bin/env python3
"""End-to-end: embedding shards (docs/SHARDS.md). clip-embed --shard writes
them, POST /v1/import loads them into the real daemon on 127.0.0.1.

- clip-embed --list LIST --shard I/3 --out OUT for I = 0, 1, 2 over 60
  distinct JPEGs (mkjpeg): the printed JSON line, the directory names, the
  manifest (format, version, model = GET /v1/stats' model id, dim,
  precision, shard, shards, count, failed, list, created), every file's size
  and SHA-256 against the manifest, items.jsonl's hashes and sizes against
  the files, unit-length embeddings equal to the daemon's own (POST
  /v1/embed), the three shards covering the list exactly once; a rerun
  says "complete" and touches nothing; a stale temporary directory of the
  shard is removed when the shard is written (another shard's is left
  alone); a missing path, a directory and a text file named .jpg go to
  failed.jsonl and the shard is still written; a list, model or output
  that cannot be used is status 1 and writes nothing.
- Daemon A imports OUT: 200, every image ready at once, the import job;
  again: everything present. Daemon B ingests the same files with POST
  /v1/ingest {"paths"}: text and image-by-id searches on A and B give the
  same files in the same order (scores within 1e-3, adjacent swaps of
  scores closer than 2e-3), and A's scores are the dot products of the
  shard's vectors. B importing OUT finds everything present. A restart
  keeps the import.
- "limit": a request handles at most limit file reads, says "done": false,
  and the same request continues.
- A file overwritten after embedding is "changed" and ends up ready with
  the embedding of its new content; a deleted one is a failed item.
- Refusals (4xx, a JSON error naming what is wrong, the daemon still
  answers and holds the images it held): dir outside every --allow-root,
  missing, with no shards, malformed bodies, another model (409), a
  truncated embeddings.f32, items.jsonl not matching its hash, a non-unit
  or NaN embedding (hashes updated), a manifest that is not JSON, wrong
  format/version/dim/count, symbolic links (the dir, a shard, a file); one
  bad shard among good ones imports nothing. An item outside the allowed
  roots, or a symbolic link, is a failed item of the job; the rest import.

The harness of test_e2e.py (same environment, plus CLIP_EMBED); TAP output.
"""
import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import base64
import signal
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, diag, Daemon, MKJPEG, MODEL, SetupError  # noqa: E402

EMBED = os.environ.get("CLIP_EMBED", "")
N_IMAGES = 60
N_SHARDS = 3
SCORE_TOL = 1e-3
TIE_TOL = 2e-3
TEXTS = ["a photo of a cat", "a red square", "a city at night", "noise",
         "a green field under a blue sky", "an old photograph of a horse"]
MODEL_OTHER = "clip-0000000000000000"

CTX = {}  # what test_shards built, for the tests after it


# ---- helpers -------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_jpeg(src_dir, out, seed, w=96, h=96):
    png = os.path.join(src_dir, "src-%d.png" % seed)
    with open(png, "wb") as f:
        f.write(e2e.png_bytes(6, 6, seed))
    subprocess.run([MKJPEG, png, out, str(w), str(h)], check=True)
    return out


def make_images(tmp, root, n, seed0, sub="imgs", prefix="img"):
    src = os.path.join(tmp, "src")
    os.makedirs(src, exist_ok=True)
    os.makedirs(os.path.join(root, sub), exist_ok=True)
    paths = []
    for i in range(n):
        p = os.path.join(root, sub, "%s_%03d.jpg" % (prefix, i))
        make_jpeg(src, p, seed0 + i, 64 + 16 * (i % 4), 64 + 16 * ((i // 4) % 3))
        paths.append(p)
    return paths


def write_list(path, paths, blank_lines=False):
    with open(path, "wb") as f:
        for i, p in enumerate(paths):
            f.write(p.encode() + b"\n")
            if blank_lines and i % 7 == 3:
                f.write(b"\n")


def run_embed(args, timeout=120):
    """clip-embed ARGS: (status, [JSON objects of stdout's lines], stdout, stderr)."""
    p = subprocess.run([EMBED] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    objs = []
    for line in out.splitlines():
        if line.strip():
            try:
                objs.append(json.loads(line))
            except ValueError:
                objs.append(None)
    return p.returncode, objs, out, err


def embed_shard(lst, i, n, out, extra=()):
    """clip-embed --shard I/N (it creates OUT, not OUT's parent)."""
    return run_embed(["--model", MODEL, "--list", lst, "--shard", "%d/%d" % (i, n),
                      "--out", out, "--precision", "f32"] + list(extra))


def shard_name(i, n):
    return "shard-%05d-of-%05d" % (i, n)


def read_jsonl(path):
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().split(b"\n") if line.strip()]


def read_shard(d):
    """(manifest, items, rows, failed) of shard directory d."""
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    items = read_jsonl(os.path.join(d, "items.jsonl"))
    failed = read_jsonl(os.path.join(d, "failed.jsonl"))
    with open(os.path.join(d, "embeddings.f32"), "rb") as f:
        raw = f.read()
    dim = man["dim"]
    nrows = len(raw) // (4 * dim) if dim else 0
    rows = [struct.unpack_from("<%df" % dim, raw, 4 * dim * r) for r in range(nrows)]
    return man, items, rows, failed


def fix_manifest(d, **changes):
    """Rewrites d's manifest with changes and every listed file's size and
    SHA-256 recomputed from the files as they are now."""
    path = os.path.join(d, "manifest.json")
    with open(path) as f:
        man = json.load(f)
    for name in man.get("files", {}):
        p = os.path.join(d, name)
        if os.path.lexists(p):
            man["files"][name] = {"bytes": os.path.getsize(p), "sha256": sha256_file(p)}
    man.update(changes)
    with open(path, "w") as f:
        json.dump(man, f)


def edit_manifest(d, **changes):
    """Changes manifest fields without touching the file hashes."""
    path = os.path.join(d, "manifest.json")
    with open(path) as f:
        man = json.load(f)
    man.update(changes)
    with open(path, "w") as f:
        json.dump(man, f)


def max_row_diff(raw_a, raw_b):
    """Largest difference between two embeddings.f32 contents' floats."""
    n = min(len(raw_a), len(raw_b)) // 4
    fa = struct.unpack("<%df" % n, raw_a[:4 * n])
    fb = struct.unpack("<%df" % n, raw_b[:4 * n])
    return max((abs(x - y) for x, y in zip(fa, fb)), default=0.0)


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def ranking(d, query, k=1000):
    r = d.post("/v1/search", dict(query, k=k))
    if r.status != 200:
        return None, r
    return [(x["filename"], x["score"]) for x in r.json["results"]], r


def ranking_problems(ga, gb):
    """ga, gb: [(name, score)] best first, from two daemons. Same names in
    the same order (adjacent swaps of scores within TIE_TOL), scores within
    SCORE_TOL."""
    problems = []
    na, nb = [n for n, _ in ga], [n for n, _ in gb]
    sa, sb = dict(ga), dict(gb)
    if sorted(na) != sorted(nb):
        problems.append("different sets: only A %s, only B %s" %
                        (sorted(set(na) - set(nb))[:10], sorted(set(nb) - set(na))[:10]))
    for n in sa:
        if n in sb and abs(sa[n] - sb[n]) > SCORE_TOL:
            problems.append("%s: score %.6f on A, %.6f on B" % (n, sa[n], sb[n]))
    i = 0
    while i < min(len(na), len(nb)):
        if na[i] == nb[i]:
            i += 1
            continue
        if (i + 1 < min(len(na), len(nb)) and na[i] == nb[i + 1] and na[i + 1] == nb[i] and
                abs(sa[na[i]] - sa[na[i + 1]]) < TIE_TOL):
            i += 2
            continue
        problems.append("position %d: %s (%.6f) on A, %s (%.6f) on B" %
                        (i, na[i], sa[na[i]], nb[i], sb.get(nb[i], float("nan"))))
        i += 1
    return problems


def holding(d):
    """What d holds: (total, ready, sorted filenames of the index)."""
    s = d.get("/v1/stats").json
    r = d.post("/v1/search", {"text": "x", "k": 1000})
    names = sorted(x["filename"] for x in r.json["results"]) if r.status == 200 else None
    return s["images"]["total"], s["images"]["ready"], names


def post_import(d, body, **kw):
    if isinstance(body, bytes):
        return d.post("/v1/import", body, ctype="application/json", **kw)
    return d.post("/v1/import", body, **kw)


def counts(r):
    j = r.json or {}
    return tuple(j.get(k) for k in ("imported", "present", "changed", "failed"))


def dir_state(d):
    """Everything about d that a rewrite would change."""
    st = os.stat(d)
    out = {".": (st.st_ino, st.st_mtime_ns)}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        s = os.lstat(p)
        out[name] = (s.st_ino, s.st_mtime_ns, s.st_size, sha256_file(p))
    return out


def start(name, data, root, extra=()):
    d = Daemon(name, data, ["--allow-root", root, "--precision", "f32"] + list(extra))
    if not d.start():
        raise SetupError("clipd %s did not start (see above)" % name)
    return d


def need_ctx():
    if not CTX.get("shards_ok"):
        raise SetupError("the shards of test_shards were not written")
    return CTX


# ---- clip-embed --shard ----------------------------------------------------------

def test_shards(tmp):
    root = os.path.join(tmp, "root")
    t0 = time.time()
    paths = make_images(tmp, root, N_IMAGES, 7000)
    diag("%d JPEGs in %.1f s" % (len(paths), time.time() - t0))
    shas = {p: sha256_file(p) for p in paths}
    ok(len(set(shas.values())) == N_IMAGES, "the %d JPEGs are distinct" % N_IMAGES)
    lst = os.path.join(tmp, "list.txt")
    write_list(lst, paths, blank_lines=True)  # empty lines are skipped
    out = os.path.join(root, "shards")
    CTX.update(root=root, paths=paths, shas=shas, list=lst, out=out)

    all_good = True
    for i in range(N_SHARDS):
        t0 = time.time()
        rc, objs, sout, serr = embed_shard(lst, i, N_SHARDS, out)
        want_paths = paths[i::N_SHARDS]
        line = objs[-1] if objs else None
        want_dir = os.path.join(out, shard_name(i, N_SHARDS))
        good = (rc == 0 and len(objs) == 1 and isinstance(line, dict) and
                line.get("shard") == i and line.get("shards") == N_SHARDS and
                line.get("state") == "written" and line.get("embedded") == len(want_paths) and
                line.get("failed") == 0 and isinstance(line.get("dir"), str) and
                os.path.realpath(line["dir"]) == os.path.realpath(want_dir))
        all_good &= ok(good, "clip-embed --shard %d/%d: exit 0, one JSON line (written, %d "
                       "embedded, 0 failed, its dir) in %.1f s" %
                       (i, N_SHARDS, len(want_paths), time.time() - t0),
                       "exit %s\nstdout %s\nstderr %s" % (rc, sout[-2000:], serr[-2000:]))
    names = sorted(os.listdir(out)) if os.path.isdir(out) else None
    want_names = [shard_name(i, N_SHARDS) for i in range(N_SHARDS)]
    all_good &= ok(names == want_names, "OUT holds exactly %s" % want_names, names)
    if not all_good:
        return

    covered = []
    for i in range(N_SHARDS):
        d = os.path.join(out, shard_name(i, N_SHARDS))
        files = sorted(os.listdir(d))
        ok(files == ["embeddings.f32", "failed.jsonl", "items.jsonl", "manifest.json"],
           "%s: the four files of the format" % shard_name(i, N_SHARDS), files)
        try:
            man, items, rows, failed = read_shard(d)
        except Exception as ex:  # noqa: BLE001
            all_good &= ok(False, "%s reads as JSON and float32" % shard_name(i, N_SHARDS), ex)
            continue
        want_paths = paths[i::N_SHARDS]
        problems = []
        for k, v in (("format", "clipd-shard"), ("version", 1), ("precision", "f32"),
                     ("shard", i), ("shards", N_SHARDS), ("count", len(want_paths)),
                     ("failed", 0), ("dim", 32)):
            if man.get(k) != v:
                problems.append("%s = %r, expected %r" % (k, man.get(k), v))
        if not isinstance(man.get("model"), str) or not re.fullmatch(r"clip-[0-9a-f]{16}",
                                                                     man.get("model", "")):
            problems.append("model = %r" % man.get("model"))
        if not isinstance(man.get("list"), str) or \
                os.path.realpath(man["list"]) != os.path.realpath(lst):
            problems.append("list = %r, expected %r" % (man.get("list"), lst))
        if not isinstance(man.get("created"), str) or \
                not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", man["created"]):
            problems.append("created = %r" % man.get("created"))
        fl = man.get("files") or {}
        for name in ("embeddings.f32", "items.jsonl", "failed.jsonl"):
            p = os.path.join(d, name)
            f = fl.get(name) or {}
            if f.get("bytes") != os.path.getsize(p) or f.get("sha256") != sha256_file(p):
                problems.append("files.%s = %r; the file: %d bytes, %s" %
                                (name, f, os.path.getsize(p), sha256_file(p)))
        ok(not problems, "%s: manifest fields, sizes and SHA-256s" % shard_name(i, N_SHARDS),
           "\n".join(problems) + "\n" + json.dumps(man))

        problems = []
        if len(items) != len(want_paths) or len(rows) != len(want_paths):
            problems.append("%d items, %d rows, expected %d" % (len(items), len(rows),
                                                                len(want_paths)))
        if os.path.getsize(os.path.join(d, "embeddings.f32")) != len(want_paths) * 32 * 4:
            problems.append("embeddings.f32 is %d bytes" %
                            os.path.getsize(os.path.join(d, "embeddings.f32")))
        for it in items:
            p = it.get("path")
            if p not in shas:
                problems.append("unknown path %r" % p)
                continue
            if it.get("sha256") != shas[p]:
                problems.append("%s: sha256 %r, the file's %s" % (p, it.get("sha256"), shas[p]))
            if it.get("bytes") != os.path.getsize(p):
                problems.append("%s: bytes %r, the file's %d" % (p, it.get("bytes"),
                                                                 os.path.getsize(p)))
        if sorted(it.get("path") for it in items) != sorted(want_paths):
            problems.append("paths are not the lines %d mod %d" % (i, N_SHARDS))
        ok(not problems, "%s: items.jsonl: the list's lines %d mod %d, each with its file's "
           "SHA-256 and size" % (shard_name(i, N_SHARDS), i, N_SHARDS), "\n".join(problems[:20]))
        norms = [math.sqrt(dot(r, r)) for r in rows]
        ok(rows and all(abs(x - 1) < 1e-4 for x in norms) and
           all(math.isfinite(v) for r in rows for v in r),
           "%s: every embedding is finite and of unit length" % shard_name(i, N_SHARDS),
           [x for x in norms if abs(x - 1) >= 1e-4][:10])
        ok(failed == [] and os.path.getsize(os.path.join(d, "failed.jsonl")) == 0,
           "%s: failed.jsonl is empty" % shard_name(i, N_SHARDS), failed)
        covered += [it.get("path") for it in items]
        CTX.setdefault("shard", {})[i] = dict(dir=d, man=man, items=items, rows=rows)
    ok(sorted(covered) == sorted(paths) and len(covered) == len(set(covered)),
       "the %d shards cover the list exactly once" % N_SHARDS,
       "%d paths, %d distinct, %d in the list" % (len(covered), len(set(covered)), len(paths)))
    vec = {}
    for s in CTX.get("shard", {}).values():
        for it, row in zip(s["items"], s["rows"]):
            vec[it["path"]] = row
    CTX["vec"] = vec  # path -> the shard's embedding
    CTX["shards_ok"] = all_good and len(vec) == N_IMAGES


def test_embed_rerun(tmp):
    c = need_ctx()
    out, lst, paths = c["out"], c["list"], c["paths"]

    # A complete shard is not written again.
    before = {n: dir_state(os.path.join(out, n)) for n in sorted(os.listdir(out))}
    rc, objs, sout, serr = embed_shard(lst, 1, N_SHARDS, out)
    line = objs[-1] if objs else {}
    ok(rc == 0 and len(objs) == 1 and isinstance(line, dict) and
       line.get("state") == "complete" and line.get("shard") == 1 and
       line.get("shards") == N_SHARDS and
       os.path.realpath(line.get("dir", "")) ==
       os.path.realpath(os.path.join(out, shard_name(1, N_SHARDS))),
       "rerun of shard 1/3: exit 0, state \"complete\"", "exit %s\n%s\n%s" % (rc, sout, serr))
    after = {n: dir_state(os.path.join(out, n)) for n in sorted(os.listdir(out))}
    ok(after == before, "the rerun changes nothing in OUT (inodes, mtimes, contents)",
       "before %s\nafter  %s" % (before, after))

    # A stale temporary directory of the shard is removed when it is written;
    # another shard's (a task still running) is left alone.
    out2 = os.path.join(c["root"], "shards-stale")
    stale = os.path.join(out2, ".%s.abc123" % shard_name(0, N_SHARDS))
    killed = os.path.join(out2, ".%s.Xy9Zq1" % shard_name(0, N_SHARDS))
    other = os.path.join(out2, ".%s.def456" % shard_name(1, N_SHARDS))
    for s in (stale, other):
        os.makedirs(s)
        with open(os.path.join(s, "junk"), "wb") as f:
            f.write(b"half-written" * 100)
    os.makedirs(killed)  # what a killed run leaves: some of the shard's files, half-written
    with open(os.path.join(killed, "embeddings.f32"), "wb") as f:
        f.write(b"\0" * 1000)
    with open(os.path.join(killed, "items.jsonl"), "wb") as f:
        f.write(b'{"path": "/x.jpg", "sha2')
    rc, objs, sout, serr = embed_shard(lst, 0, N_SHARDS, out2)
    line = objs[-1] if objs else {}
    ok(rc == 0 and isinstance(line, dict) and line.get("state") == "written" and
       line.get("embedded") == len(paths[0::N_SHARDS]),
       "shard 0/3 in an OUT with a stale temporary directory: written",
       "exit %s\n%s\n%s" % (rc, sout, serr))
    left = sorted(os.listdir(out2))
    ok(not os.path.exists(killed) and shard_name(0, N_SHARDS) in left,
       "the stale .%s.Xy9Zq1 (a half-written embeddings.f32 and items.jsonl) is removed" %
       shard_name(0, N_SHARDS), "%s\n%s" % (left, serr))
    ok(os.path.exists(os.path.join(stale, "junk")) and "left" in serr and
       "not a shard" in serr,
       "the stale .%s.abc123 holding a file that is not a shard's is left, with a warning" %
       shard_name(0, N_SHARDS), "%s\n%s" % (left, serr))
    ok(os.path.exists(os.path.join(other, "junk")),
       "another shard's temporary directory is left alone", left)
    try:
        same = read_shard(os.path.join(out2, shard_name(0, N_SHARDS)))
        ok(same[1] == c["shard"][0]["items"] and
           max(abs(a - b) for ra, rb in zip(same[2], c["shard"][0]["rows"])
               for a, b in zip(ra, rb)) < 1e-6,
           "the shard written again has the same items and embeddings")
    except Exception as ex:  # noqa: BLE001
        ok(False, "the shard written again reads", ex)

    # Images that cannot be embedded go to failed.jsonl; the shard is written.
    bad_dir = os.path.join(c["root"], "bad-inputs")
    os.makedirs(os.path.join(bad_dir, "adir.jpg"))
    text_jpg = os.path.join(bad_dir, "x.jpg")
    with open(text_jpg, "w") as f:
        f.write("this is a text file, not a JPEG\n" * 20)
    missing = os.path.join(bad_dir, "missing.jpg")
    good = paths[:5]
    lst3 = os.path.join(tmp, "list-bad.txt")
    write_list(lst3, [good[0], missing, good[1], text_jpg, good[2],
                      os.path.join(bad_dir, "adir.jpg"), good[3], good[4]])
    out3 = os.path.join(c["root"], "shards-bad")
    rc, objs, sout, serr = embed_shard(lst3, 0, 1, out3)
    line = objs[-1] if objs else {}
    d3 = os.path.join(out3, shard_name(0, 1))
    ok(rc == 0 and isinstance(line, dict) and line.get("state") == "written" and
       line.get("embedded") == 5 and line.get("failed") == 3 and os.path.isdir(d3),
       "a missing path, a directory and a text file named x.jpg: exit 0, 5 embedded, 3 failed",
       "exit %s\n%s\n%s" % (rc, sout, serr))
    if os.path.isdir(d3):
        man, items, rows, failed = read_shard(d3)
        fpaths = sorted(x.get("path") for x in failed)
        ok(fpaths == sorted([missing, text_jpg, os.path.join(bad_dir, "adir.jpg")]) and
           all(isinstance(x.get("error"), str) and x["error"] for x in failed),
           "failed.jsonl lists the three, each with an error", failed)
        ok(sorted(it["path"] for it in items) == sorted(good) and len(rows) == 5 and
           man.get("count") == 5 and man.get("failed") == 3 and
           man["files"]["failed.jsonl"]["bytes"] == os.path.getsize(
               os.path.join(d3, "failed.jsonl")) and
           man["files"]["failed.jsonl"]["sha256"] == sha256_file(
               os.path.join(d3, "failed.jsonl")),
           "the shard holds the 5 good images; manifest count 5, failed 3, failed.jsonl hashed",
           json.dumps(man))
    CTX["bad_inputs_shard"] = d3

    # --max-bytes: a file of exactly that size is embedded, a larger one fails.
    some = sorted(paths[:9], key=os.path.getsize)
    cut = os.path.getsize(some[4])
    small = [p for p in some if os.path.getsize(p) <= cut]
    big = [p for p in some if os.path.getsize(p) > cut]
    lst4 = os.path.join(tmp, "list-max.txt")
    write_list(lst4, paths[:9])
    out4 = os.path.join(c["root"], "shards-max")
    rc, objs, sout, serr = embed_shard(lst4, 0, 1, out4, ["--max-bytes", str(cut)])
    line = objs[-1] if objs else {}
    d4 = os.path.join(out4, shard_name(0, 1))
    got_items = sorted(it["path"] for it in read_shard(d4)[1]) if os.path.isdir(d4) else None
    got_failed = read_shard(d4)[3] if os.path.isdir(d4) else []
    ok(rc == 0 and big and got_items == sorted(small) and
       sorted(x["path"] for x in got_failed) == sorted(big) and
       all(x.get("error") for x in got_failed),
       "--max-bytes %d: the files of at most %d bytes embedded (%d), the %d larger ones in "
       "failed.jsonl" % (cut, cut, len(small), len(big)),
       "exit %s %s\nitems %s\nfailed %s" % (rc, serr[-300:], got_items, got_failed))

    # What cannot be used: status 1, nothing written.
    def nothing(o):
        return not os.path.exists(o) or not [n for n in os.listdir(o) if "shard-" in n]
    o = os.path.join(tmp, "out-nolist")
    rc, objs, sout, serr = embed_shard(os.path.join(tmp, "no-such-list.txt"), 0, 1, o)
    ok(rc == 1 and nothing(o), "a list that does not exist: exit 1, nothing written",
       "exit %s %s" % (rc, serr[-500:]))
    o = os.path.join(tmp, "out-nomodel")
    os.makedirs(o)
    rc, objs, sout, serr = run_embed(["--model", os.path.join(tmp, "no-model"), "--list", lst,
                                      "--shard", "0/1", "--out", o])
    ok(rc == 1 and nothing(o), "a model that does not exist: exit 1, nothing written",
       "exit %s %s" % (rc, serr[-500:]))
    o = os.path.join(tmp, "out-created")
    rc, objs, sout, serr = embed_shard(lst, 0, 1, o)
    ok(rc == 0 and os.path.isdir(os.path.join(o, shard_name(0, 1))),
       "a missing --out is created (one level), the shard written in it",
       "exit %s %s" % (rc, serr[-500:]))
    o = os.path.join(tmp, "no-parent", "out")
    rc, objs, sout, serr = embed_shard(lst, 0, 1, o)
    ok(rc == 1 and not os.path.exists(os.path.dirname(o)),
       "an --out whose parent is missing: exit 1, nothing created", "exit %s %s" % (rc, serr[-500:]))
    o = os.path.join(tmp, "out-is-a-file")
    with open(o, "w") as f:
        f.write("x")
    rc, objs, sout, serr = embed_shard(lst, 0, 1, o)
    ok(rc == 1, "an output that is a regular file: exit 1", "exit %s %s" % (rc, serr[-500:]))
    for bad in ("3/3", "0/0", "-1/3", "1", "a/b", "0/100000"):
        o = os.path.join(tmp, "out-shard-%s" % bad.replace("/", "_"))
        os.makedirs(o)
        rc, objs, sout, serr = run_embed(["--model", MODEL, "--list", lst, "--shard", bad,
                                          "--out", o])
        ok(rc != 0 and nothing(o), "--shard %s is refused (exit %s), nothing written" %
           (bad, rc), serr[-500:])


# ---- POST /v1/import ------------------------------------------------------------

def test_import_compare(tmp):
    c = need_ctx()
    root, out, paths, vec = c["root"], c["out"], c["paths"], c["vec"]
    a = start("import-a", os.path.join(tmp, "data-a"), root)
    b = None
    try:
        st = a.get("/v1/stats").json
        mans = [c["shard"][i]["man"] for i in range(N_SHARDS)]
        ok(all(m["model"] == st["model"]["id"] and m["dim"] == st["model"]["dim"] for m in mans),
           "every manifest's model is GET /v1/stats' model id (%s), dim %d" %
           (st["model"]["id"], st["model"]["dim"]), [m["model"] for m in mans])
        ok(st["model"]["precision"] == "f32", "the daemon serves f32", st["model"])

        # The shard's vectors are the daemon's own embeddings of the files.
        worst = 0.0
        for k in range(0, len(paths), 20):
            chunk = paths[k:k + 20]
            imgs = []
            for p in chunk:
                with open(p, "rb") as f:
                    imgs.append(base64.b64encode(f.read()).decode())
            r = a.post("/v1/embed", {"images_b64": imgs})
            if r.status != 200:
                worst = float("inf")
                diag(repr(r))
                break
            for p, v in zip(chunk, r.json["images"]):
                worst = max(worst, max(abs(x - y) for x, y in zip(v, vec[p])))
        ok(worst < 2e-4, "each shard row equals POST /v1/embed of its file (largest difference "
           "%.2g)" % worst)

        t0 = time.time()
        r = post_import(a, {"dir": out})
        took = time.time() - t0
        j = r.json or {}
        sh = sorted(j.get("shards") or [], key=lambda s: str(s.get("name")))
        ok(r.status == 200 and counts(r) == (N_IMAGES, 0, 0, 0) and j.get("done") is True and
           isinstance(j.get("job"), int) and len(sh) == N_SHARDS and
           all(str(s.get("name", "")).endswith(shard_name(i, N_SHARDS)) and
               s.get("count") == N_IMAGES // N_SHARDS and
               s.get("imported") == N_IMAGES // N_SHARDS and s.get("present") == 0 and
               s.get("changed") == 0 and s.get("failed") == 0 for i, s in enumerate(sh)),
           "POST /v1/import {dir: OUT}: 200, imported %d, present 0, done, the 3 shards "
           "(%.2f s)" % (N_IMAGES, took), r)
        st = a.get("/v1/stats").json
        got, _ = ranking(a, {"text": "x"})
        ok(st["images"]["total"] == N_IMAGES and st["images"]["ready"] == N_IMAGES and
           got is not None and len(got) == N_IMAGES,
           "at once: %d images ready and all of them found by a search" % N_IMAGES,
           "stats %s; search found %s" % (st["images"], None if got is None else len(got)))
        r2 = a.post("/v1/search", {"text": "x", "k": 1000})
        ids_a = {x["filename"]: x["id"] for x in r2.json["results"]} if r2.status == 200 else {}
        want_names = {os.path.relpath(p, root): p for p in paths}
        ok(sorted(ids_a) == sorted(want_names),
           "the images are named by their path under the root (imgs/img_NNN.jpg)",
           sorted(ids_a)[:5])
        problems = []
        for n, iid in sorted(ids_a.items())[:N_IMAGES]:
            g = a.get("/v1/images/%d" % iid)
            p = want_names.get(n)
            if g.status != 200 or g.json["status"] != "ready" or p is None or \
                    g.json["sha256"] != c["shas"][p] or g.json["bytes"] != os.path.getsize(p) or \
                    g.json["mime"] != "image/jpeg":
                problems.append("%s: %r" % (n, g))
        ok(not problems, "GET /v1/images/{id}: each ready, with its file's SHA-256, size, mime",
           "\n".join(problems[:5]))
        g = a.get("/v1/images/%d/file" % ids_a.get("imgs/img_000.jpg", 1))
        with open(paths[0], "rb") as f:
            ok(g.status == 200 and g.body == f.read(),
               "GET /v1/images/{id}/file: the imported file's bytes (copied into the store)", g)
        if isinstance(j.get("job"), int):
            jr = a.get("/v1/jobs/%d" % j["job"])
            ok(jr.status == 200 and jr.json.get("kind") == "import" and
               jr.json.get("state") == "done" and jr.json.get("errors") == [],
               "GET /v1/jobs/{job}: kind import, done, no errors", jr)

        r = post_import(a, {"dir": out})
        ok(r.status == 200 and counts(r) == (0, N_IMAGES, 0, 0) and r.json.get("done") is True,
           "POST /v1/import again: imported 0, present %d" % N_IMAGES, r)
        r = post_import(a, {"dir": out + "/"})
        ok(r.status == 200 and counts(r) == (0, N_IMAGES, 0, 0),
           "POST /v1/import {dir: OUT/} (a trailing slash): the same", r)
        r = post_import(a, {"dir": os.path.join(out, shard_name(2, N_SHARDS))})
        ok(r.status == 200 and counts(r) == (0, N_IMAGES // N_SHARDS, 0, 0) and
           len(r.json.get("shards") or []) == 1,
           "POST /v1/import {dir: one shard directory}: that shard, all present", r)
        ok(a.get("/v1/stats").json["images"]["total"] == N_IMAGES, "still %d images" % N_IMAGES)

        # Daemon B ingests the same files by path.
        b = start("import-b", os.path.join(tmp, "data-b"), root)
        r = b.post("/v1/ingest", {"paths": paths})
        job = b.wait_job(r.json["job_id"]) if r.status == 202 else None
        ok(r.status == 202 and r.json["accepted"] == N_IMAGES and job is not None and
           job["done"] == N_IMAGES and b.wait_idle(60) is not None,
           "daemon B: POST /v1/ingest {paths} of the %d files, job done" % N_IMAGES, r)
        r2 = b.post("/v1/search", {"text": "x", "k": 1000})
        ids_b = {x["filename"]: x["id"] for x in r2.json["results"]} if r2.status == 200 else {}

        for t in TEXTS:
            ga, ra = ranking(a, {"text": t})
            gb, rb = ranking(b, {"text": t})
            probs = ranking_problems(ga or [], gb or []) if ga and gb else [repr(ra), repr(rb)]
            ok(not probs, "text %r: A (imported) ranks as B (ingested)" % t, "\n".join(probs))
        for n in ["imgs/img_%03d.jpg" % i for i in (0, 7, 13, 29, 44, 59)]:
            ga, ra = ranking(a, {"image_id": ids_a.get(n, 0)})
            gb, rb = ranking(b, {"image_id": ids_b.get(n, 0)})
            probs = ranking_problems(ga or [], gb or []) if ga and gb else [repr(ra), repr(rb)]
            ok(not probs, "image %s by id: A ranks as B" % n, "\n".join(probs))
            # A searches with the shard's own vectors.
            q = vec[want_names[n]]
            worst = max((abs(s - dot(q, vec[want_names[m]])) for m, s in ga or []),
                        default=float("inf"))
            ok(ga and worst < 1e-5, "image %s by id on A: scores are the shard vectors' dot "
               "products (largest difference %.2g)" % (n, worst))
        r = a.post("/v1/embed", {"texts": TEXTS[:2]})
        if r.status == 200:
            for t, tv in zip(TEXTS[:2], r.json["texts"]):
                ga, _ = ranking(a, {"text": t})
                worst = max((abs(s - dot(tv, vec[want_names[m]])) for m, s in ga or []),
                            default=float("inf"))
                ok(ga and worst < 1e-5, "text %r on A: scores are the text vector's dot "
                   "products with the shard's (largest difference %.2g)" % (t, worst))

        # Content B ingested itself is present.
        r = post_import(b, {"dir": out})
        ok(r.status == 200 and counts(r) == (0, N_IMAGES, 0, 0),
           "daemon B imports OUT: everything present (by SHA-256)", r)

        # A restart keeps the import.
        before = holding(a)
        stop_rc = a.stop()
        ok(stop_rc == 0, "A: SIGTERM exit 0", a.log()[-2000:])
        ok(a.start(), "A restarts")
        ok(holding(a) == before, "after the restart A holds the same %d images" % N_IMAGES)
        ga, _ = ranking(a, {"text": TEXTS[0]})
        gb, _ = ranking(b, {"text": TEXTS[0]})
        probs = ranking_problems(ga or [], gb or [])
        ok(ga and not probs, "after the restart A still ranks as B", "\n".join(probs))
    finally:
        e2e.stop_checked(a, "import-a")
        if b:
            e2e.stop_checked(b, "import-b")


def test_limit(tmp):
    c = need_ctx()
    d = start("import-limit", os.path.join(tmp, "data-limit"), c["root"])
    try:
        seen = [post_import(d, {"dir": c["out"], "limit": 25})]
        # Killed after the first request: what it imported is kept, and the
        # same request again continues.
        d.stop(sig=signal.SIGKILL)
        ok(d.start(), "restart after kill -9 between two import requests")
        st = d.get("/v1/stats").json["images"]
        ok(st["total"] == 25 and st["ready"] == 25,
           "after kill -9 the first request's 25 images are still there, ready", st)
        for step in range(5):
            r = post_import(d, {"dir": c["out"], "limit": 25})
            seen.append(r)
            if r.status != 200 or r.json.get("done") is True:
                break
        got = [(counts(r)[:2], r.json.get("done") if r.json else None) for r in seen]
        want = [((25, 0), False), ((25, 25), False), ((10, 50), True)]
        ok(got == want, "limit 25: imported 25 (done false), 25 more (25 present, done false), "
           "the last 10 (done true)", "\n".join(repr(r) for r in seen))
        st = d.get("/v1/stats").json["images"]
        ok(st["total"] == N_IMAGES and st["ready"] == N_IMAGES,
           "all %d images imported and ready" % N_IMAGES, st)
        before = holding(d)
        for bad in (0, -1, 100001, "10", 2.5):
            r = post_import(d, {"dir": c["out"], "limit": bad})
            ok(r.status == 400 and "limit" in r.err_msg(),
               "limit %s: 400 naming 'limit'" % json.dumps(bad), r)
        ok(holding(d) == before, "the refused limits changed nothing")
    finally:
        e2e.stop_checked(d, "import-limit")


def test_concurrent(tmp):
    """Three imports of the same shards at once: each image stored once."""
    c = need_ctx()
    d = start("import-conc", os.path.join(tmp, "data-conc"), c["root"])
    try:
        res = [None] * 3

        def one(k):
            try:
                res[k] = post_import(d, {"dir": c["out"]})
            except Exception as ex:  # noqa: BLE001
                res[k] = ex
        th = [threading.Thread(target=one, args=(k,)) for k in range(3)]
        for x in th:
            x.start()
        for x in th:
            x.join(120)
        good = [r for r in res if isinstance(r, e2e.Response) and r.status == 200]
        other = [r for r in res if not (isinstance(r, e2e.Response) and
                                        r.status in (200, 409, 429, 503))]
        ok(good and not other and sum(r.json["imported"] for r in good) == N_IMAGES and
           all(r.json["failed"] == 0 and r.json["changed"] == 0 and
               r.json["imported"] + r.json["present"] == N_IMAGES for r in good),
           "three concurrent imports: 200s (or a busy 4xx/503) whose imported add up to %d" %
           N_IMAGES, "\n".join(repr(r) for r in res))
        st = d.get("/v1/stats").json["images"]
        h = holding(d)
        ok(st["total"] == N_IMAGES and st["ready"] == N_IMAGES and h[2] is not None and
           len(h[2]) == N_IMAGES and len(set(h[2])) == N_IMAGES,
           "each image is stored once", (st, h[:2]))
    finally:
        e2e.stop_checked(d, "import-conc")


def test_names(tmp):
    """Paths with spaces, quotes, backslashes, tabs, non-ASCII UTF-8 and a
    non-UTF-8 byte, and two paths with the same content."""
    if not EMBED:
        raise SetupError("CLIP_EMBED not set")
    root = os.path.join(tmp, "root3")
    sub = os.path.join(root, "sub dir")
    os.makedirs(sub)
    names = ["with space \u00e9.jpg", 'quote"and\\back.jpg', "tab\there.jpg",
             "\u65e5\u672c\u8a9e.jpg", "plain.jpg"]
    paths = []
    for k, n in enumerate(names):
        paths.append(make_jpeg(os.path.join(tmp, "src"), os.path.join(sub, n), 9100 + k))
    dup = os.path.join(sub, "dup-of-plain.jpg")
    shutil.copy(paths[-1], dup)
    latin = os.path.join(sub.encode(), b"lat\xe9.jpg")
    make_jpeg(os.path.join(tmp, "src"), os.fsdecode(latin), 9200)
    lst = os.path.join(tmp, "list3.txt")
    with open(lst, "wb") as f:
        for p in paths + [dup]:
            f.write(p.encode() + b"\n")
        f.write(latin + b"\n")
    out = os.path.join(root, "shards")
    rc, objs, sout, serr = embed_shard(lst, 0, 1, out)
    line = objs[-1] if objs else {}
    sd = os.path.join(out, shard_name(0, 1))
    ok(rc == 0 and isinstance(line, dict) and line.get("state") == "written" and
       line.get("embedded", 0) + line.get("failed", 0) == 7 and line.get("embedded", 0) >= 6,
       "odd file names: the shard is written, the six UTF-8 paths embedded",
       "exit %s\n%s\n%s" % (rc, sout, serr))
    if not os.path.isdir(sd):
        return
    man, items, rows, failed = read_shard(sd)
    ok(sorted(it["path"] for it in items if it["path"] in paths + [dup]) ==
       sorted(paths + [dup]), "items.jsonl holds the six UTF-8 paths exactly",
       [it["path"] for it in items])
    latin_in = "items.jsonl" if len(items) == 7 else "failed.jsonl"
    diag("the non-UTF-8 path is in %s: %s" % (latin_in, failed or items[-1]))
    ok(len(items) == 7 or (len(failed) == 1 and failed[0].get("error")),
       "the non-UTF-8 path is embedded or listed in failed.jsonl with a reason", failed)
    d = start("import-names", os.path.join(tmp, "data-names"), root)
    try:
        r = post_import(d, {"dir": out})
        ok(r.status == 200 and r.json.get("imported") == len(items) - 1 and
           r.json.get("present") == 1 and r.json.get("failed") == 0,
           "import: %d imported, the duplicate content present, none failed" %
           (len(items) - 1), r)
        shown = set(e2e.images_by_name(d))
        want = {"sub dir/" + n for n in names}
        ok(want <= shown, "the UTF-8 names are shown as their paths under the root",
           sorted(shown))
    finally:
        e2e.stop_checked(d, "import-names")


def test_api_key(tmp):
    c = need_ctx()
    keyfile = os.path.join(tmp, "key")
    with open(keyfile, "w") as f:
        f.write("s3cret-import-key\n")
    d = start("import-key", os.path.join(tmp, "data-key"), c["root"], ["--api-key-file", keyfile])
    try:
        r = post_import(d, {"dir": c["out"]})
        ok(r.status == 401 and d.get("/v1/stats").json["images"]["total"] == 0,
           "with --api-key, POST /v1/import without the key: 401, nothing imported", r)
        d.key = "s3cret-import-key"
        # The shard of test_embed_rerun with three images clip-embed could not read.
        r = post_import(d, {"dir": c["bad_inputs_shard"]})
        ok(r.status == 200 and counts(r) == (5, 0, 0, 0),
           "with the key, a shard whose failed.jsonl lists 3 paths: its 5 images imported, "
           "none failed", r)
        r = post_import(d, {"dir": c["out"]})
        ok(r.status == 200 and counts(r) == (N_IMAGES - 5, 5, 0, 0),
           "then OUT: imported %d, the 5 present" % (N_IMAGES - 5), r)
    finally:
        e2e.stop_checked(d, "import-key")


def test_changed(tmp):
    """A file overwritten after it was embedded, and one deleted."""
    if not EMBED:
        raise SetupError("CLIP_EMBED not set")
    root = os.path.join(tmp, "root2")
    paths = make_images(tmp, root, 9, 8000, prefix="chg")
    lst = os.path.join(tmp, "list2.txt")
    write_list(lst, paths)
    out = os.path.join(root, "shards")
    rc, objs, sout, serr = embed_shard(lst, 0, 1, out)
    if rc != 0:
        raise SetupError("clip-embed of root2: exit %s %s" % (rc, serr))
    target, gone = paths[4], paths[6]
    old = os.path.join(tmp, "old-content.jpg")
    shutil.copy(target, old)
    make_jpeg(os.path.join(tmp, "src"), target, 8500, 128, 72)  # other content, other size
    os.unlink(gone)
    new_sha = sha256_file(target)
    d = start("import-changed", os.path.join(tmp, "data-changed"), root)
    try:
        r = post_import(d, {"dir": out})
        ok(r.status == 200 and counts(r) == (7, 0, 1, 1),
           "import after one file changed and one was deleted: imported 7, changed 1, "
           "failed 1", r)
        job = r.json.get("job") if r.status == 200 else None
        jr = d.wait_job(job, timeout=60) if isinstance(job, int) else None
        errs = (jr or {}).get("errors") or []
        ok(jr is not None and any(str(e.get("name", "")).endswith(os.path.basename(gone)) and
                                  e.get("error") for e in errs),
           "the import job ends done and lists the deleted file with a reason", jr)
        name = os.path.relpath(target, root)
        st = e2e.wait_until(lambda: (lambda m: m.get(name))(e2e.images_by_name(d)), timeout=30)
        g = d.get("/v1/images/%d" % st) if st else None
        ok(g is not None and g.status == 200 and g.json["status"] == "ready" and
           g.json["sha256"] == new_sha and g.json["width"] == 128 and g.json["height"] == 72,
           "the changed file is ready with its new content's SHA-256 and size", g)
        with open(target, "rb") as f:
            new_b64 = base64.b64encode(f.read()).decode()
        with open(old, "rb") as f:
            old_b64 = base64.b64encode(f.read()).decode()
        gn, rn = ranking(d, {"image_b64": new_b64})
        go, ro = ranking(d, {"image_b64": old_b64})
        sn = dict(gn or []).get(name)
        so = dict(go or []).get(name)
        ok(gn and gn[0][0] == name and sn is not None and sn > 0.99999,
           "searching with the new content finds it first, score %s" % sn, (gn or [])[:3])
        ok(so is not None and sn is not None and so < sn - 1e-4,
           "its embedding is not the old content's (old %s < new %s)" % (so, sn))
        s = d.get("/v1/stats").json["images"]
        ok(s["ready"] == 8, "8 images ready (the deleted one is not)", s)
        r = post_import(d, {"dir": out})
        ok(r.status == 200 and counts(r) == (0, 8, 0, 1),
           "importing again: the 7 unchanged and the changed file's new content are present, "
           "the deleted one failed again", r)
    finally:
        e2e.stop_checked(d, "import-changed")


# ---- refusals -------------------------------------------------------------------

def copy_shard(c, i, dest_parent):
    src = c["shard"][i]["dir"]
    dst = os.path.join(dest_parent, shard_name(i, N_SHARDS))
    os.makedirs(dest_parent, exist_ok=True)
    shutil.copytree(src, dst, symlinks=True)
    return dst


def rewrite_rows(d, fn):
    p = os.path.join(d, "embeddings.f32")
    with open(p, "rb") as f:
        raw = bytearray(f.read())
    fn(raw)
    with open(p, "wb") as f:
        f.write(raw)


def test_refusals(tmp):
    c = need_ctx()
    root = c["root"]
    bad = os.path.join(root, "bad")
    outside = os.path.join(tmp, "outside")
    d = start("import-refuse", os.path.join(tmp, "data-refuse"), root)
    try:
        r = post_import(d, {"dir": os.path.join(c["out"], shard_name(0, N_SHARDS))})
        if r.status != 200 or counts(r) != (20, 0, 0, 0):
            raise SetupError("import of shard 0 alone: %r" % r)
        held = holding(d)
        ok(held[1] == 20, "set-up: the daemon holds shard 0's 20 images", held)
        s1 = shard_name(1, N_SHARDS)

        def refused(what, r, status, words, shard=None):
            msg = r.err_msg()
            st_ok = (r.status == status) if isinstance(status, int) else (400 <= r.status < 500)
            good = (st_ok and r.err_code() is not None and bool(msg) and
                    (not words or any(w.lower() in msg.lower() for w in words)) and
                    (shard is None or shard in msg))
            ok(good, "%s: %s with a JSON error naming %s%s" %
               (what, status if isinstance(status, int) else "4xx",
                "/".join(words) if words else "the problem", " and " + shard if shard else ""),
               r)
            h = d.get("/healthz")
            now = holding(d)
            ok(h.status == 200 and now == held,
               "after %s the daemon answers and holds the same %d images" % (what, held[1]),
               "healthz %r; before %s after %s" % (h, held[:2], now[:2]))

        # Paths.
        copy_shard(c, 1, os.path.join(outside, "shards"))
        refused("a dir outside every --allow-root",
                post_import(d, {"dir": os.path.join(outside, "shards")}), 403,
                ["allow", "root", "outside", "permit", "forbidden"])
        refused("a dir outside, reached with ..",
                post_import(d, {"dir": os.path.join(root, "..", "outside", "shards")}), 403,
                ["allow", "root", "outside", "permit", "forbidden"])
        refused("a dir that does not exist",
                post_import(d, {"dir": os.path.join(root, "nope")}), 404,
                ["not found", "no such", "exist", "nope"])
        empty = os.path.join(bad, "empty")
        os.makedirs(os.path.join(empty, "not-a-shard"))
        with open(os.path.join(empty, "readme.txt"), "w") as f:
            f.write("x")
        refused("a dir with no shards", post_import(d, {"dir": empty}), 400, ["shard"])
        refused("a dir that is a regular file",
                post_import(d, {"dir": os.path.join(empty, "readme.txt")}), "4xx", [])

        # Bodies.
        refused("malformed JSON", post_import(d, b'{"dir": '), 400,
                ["json", "parse", "invalid", "malformed"])
        refused("JSON that is not an object", post_import(d, b'["x"]'), 400, [])
        refused("no \"dir\"", post_import(d, {}), 400, ["dir"])
        refused("\"dir\" a number", post_import(d, {"dir": 5}), 400, ["dir"])
        refused("\"dir\" relative", post_import(d, {"dir": "shards"}), 400, [])
        refused("\"dir\" empty", post_import(d, {"dir": ""}), 400, [])

        # Shards that fail a check.
        def case(name, what, status, words, edit):
            parent = os.path.join(bad, name)
            sd = copy_shard(c, 1, parent)
            edit(sd)
            refused(what, post_import(d, {"dir": parent}), status, words, shard=s1)

        case("model", "a manifest naming another model", 409, ["model"],
             lambda sd: edit_manifest(sd, model=MODEL_OTHER))
        case("format", "a manifest of another format", 400, ["format"],
             lambda sd: edit_manifest(sd, format="other-shard"))
        case("version", "a manifest of version 2", 400, ["version"],
             lambda sd: edit_manifest(sd, version=2))
        case("dim", "a manifest with dim 16", "4xx", ["dim"],
             lambda sd: edit_manifest(sd, dim=16))
        case("count", "a manifest count one short of items.jsonl's lines", 400,
             ["count", "line", "item", "vectors", "embeddings"],
             lambda sd: edit_manifest(sd, count=19))
        case("notjson", "a manifest.json that is not JSON", 400, ["manifest", "json"],
             lambda sd: open(os.path.join(sd, "manifest.json"), "w").write('{"format": "clip'))
        case("nomanifest", "a shard with no manifest.json", "4xx", ["manifest"],
             lambda sd: os.unlink(os.path.join(sd, "manifest.json")))

        def truncate(sd):
            p = os.path.join(sd, "embeddings.f32")
            os.truncate(p, os.path.getsize(p) - 4)
        case("trunc", "a truncated embeddings.f32", 400,
             ["embeddings", "size", "bytes", "length", "truncat", "sha", "hash"], truncate)

        def truncate_row(sd):
            p = os.path.join(sd, "embeddings.f32")
            os.truncate(p, os.path.getsize(p) - 4 * 32)
            fix_manifest(sd)
        case("trunc-row", "embeddings.f32 one row short, manifest hashes updated", 400,
             ["embeddings", "size", "bytes", "count", "row", "dim"], truncate_row)

        def items_sha(sd):
            p = os.path.join(sd, "items.jsonl")
            with open(p, "rb") as f:
                raw = bytearray(f.read())
            k = raw.index(b'"sha256"') + 12
            raw[k] = ord("0") if raw[k] != ord("0") else ord("1")
            with open(p, "wb") as f:
                f.write(raw)
        case("items", "items.jsonl no longer matching the manifest's SHA-256", 400,
             ["items", "sha", "hash", "checksum"], items_sha)

        def scale(sd):
            def fn(raw):
                for k in range(32):
                    off = 4 * (32 * 3 + k)
                    struct.pack_into("<f", raw, off, struct.unpack_from("<f", raw, off)[0] * 1.5)
            rewrite_rows(sd, fn)
            fix_manifest(sd)
        case("nonunit", "a non-unit embedding (hashes updated)", 400,
             ["unit", "norm", "length", "normal"], scale)

        def nan(sd):
            rewrite_rows(sd, lambda raw: struct.pack_into("<f", raw, 4 * (32 * 2), float("nan")))
            fix_manifest(sd)
        case("nan", "a NaN in an embedding (hashes updated)", 400,
             ["finite", "nan", "unit", "norm"], nan)

        def bad_sha_line(sd):
            items = read_jsonl(os.path.join(sd, "items.jsonl"))
            items[5]["sha256"] = "not-a-hash"
            with open(os.path.join(sd, "items.jsonl"), "w") as f:
                for it in items:
                    f.write(json.dumps(it) + "\n")
            fix_manifest(sd)
        case("badline", "an items.jsonl line with a malformed sha256 (hashes updated)", 400,
             ["sha256", "items", "line"], bad_sha_line)

        # Symbolic links: refused or not followed.
        os.makedirs(os.path.join(bad, "links"))
        os.symlink(c["out"], os.path.join(bad, "links", "dirlink"))
        r = post_import(d, {"dir": os.path.join(bad, "links", "dirlink")})
        refused("a dir that is a symbolic link to the shards", r, "4xx", [])
        os.makedirs(os.path.join(bad, "shardlink"))
        os.symlink(os.path.join(c["out"], s1), os.path.join(bad, "shardlink", s1))
        refused("a dir whose shard is a symbolic link",
                post_import(d, {"dir": os.path.join(bad, "shardlink")}), "4xx", [])
        refused("a shard directory that is itself a symbolic link",
                post_import(d, {"dir": os.path.join(bad, "shardlink", s1)}), "4xx", [])

        def emb_link(sd):
            p = os.path.join(sd, "embeddings.f32")
            os.unlink(p)
            os.symlink(os.path.join(c["out"], s1, "embeddings.f32"), p)
        case("emblink", "an embeddings.f32 that is a symbolic link", "4xx", [], emb_link)

        # One bad shard among good ones: nothing at all is imported.
        mixed = os.path.join(bad, "mixed")
        copy_shard(c, 1, mixed)
        copy_shard(c, 2, mixed)
        sd0 = copy_shard(c, 0, mixed)
        truncate(sd0)
        refused("shards 1 and 2 good, shard 0 truncated", post_import(d, {"dir": mixed}), 400,
                [], shard=shard_name(0, N_SHARDS))
        mixed2 = os.path.join(bad, "mixed2")
        copy_shard(c, 2, mixed2)
        edit_manifest(copy_shard(c, 1, mixed2), model=MODEL_OTHER)
        refused("shard 2 good, shard 1 of another model", post_import(d, {"dir": mixed2}), 409,
                ["model"], shard=s1)

        # Entries other than shard-*-of-* are ignored, among them a running
        # (or killed) task's temporary directory.
        parent = os.path.join(bad, "withjunk")
        copy_shard(c, 2, parent)
        os.makedirs(os.path.join(parent, ".%s.abc123" % shard_name(0, N_SHARDS)))
        with open(os.path.join(parent, ".%s.abc123" % shard_name(0, N_SHARDS), "junk"),
                  "w") as f:
            f.write("x")
        os.makedirs(os.path.join(parent, "other-dir"))
        with open(os.path.join(parent, "notes.txt"), "w") as f:
            f.write("not a shard")
        r = post_import(d, {"dir": parent})
        ok(r.status == 200 and counts(r) == (20, 0, 0, 0) and len(r.json.get("shards")) == 1,
           "a dir with one shard, a temporary .shard-* directory, a file and another directory: "
           "the shard alone is imported", r)
        held = holding(d)

        # Items outside the allowed roots, or links: failed items; the rest import.
        parent = os.path.join(bad, "outpath")
        sd = copy_shard(c, 1, parent)
        items = read_jsonl(os.path.join(sd, "items.jsonl"))
        out_file = os.path.join(outside, "outside_017.jpg")
        shutil.copy(items[3]["path"], out_file)
        items[3]["path"] = out_file
        os.makedirs(os.path.join(root, "links"))
        link = os.path.join(root, "links", "link_009.jpg")
        os.symlink(items[6]["path"], link)
        items[6]["path"] = link
        text_file = os.path.join(root, "links", "notimage_011.jpg")
        with open(text_file, "w") as f:
            f.write("a text file, not an image\n" * 50)
        items[9].update(path=text_file, sha256=sha256_file(text_file),
                        bytes=os.path.getsize(text_file))
        with open(os.path.join(sd, "items.jsonl"), "w") as f:
            for it in items:
                f.write(json.dumps(it) + "\n")
        fix_manifest(sd)
        r = post_import(d, {"dir": parent})
        ok(r.status == 200 and counts(r) == (17, 0, 0, 3),
           "a shard with one item outside the roots, one a symbolic link and one a text file "
           "(its hash in items.jsonl): 200, imported 17, failed 3", r)
        job = r.json.get("job") if r.status == 200 else None
        jr = d.wait_job(job, timeout=30) if isinstance(job, int) else None
        errs = (jr or {}).get("errors") or []
        ok(jr is not None and jr.get("kind") == "import" and
           any(str(e.get("name", "")).endswith("outside_017.jpg") and e.get("error")
               for e in errs) and
           any(str(e.get("name", "")).endswith("link_009.jpg") and e.get("error")
               for e in errs) and
           any(str(e.get("name", "")).endswith("notimage_011.jpg") and e.get("error")
               for e in errs),
           "GET /v1/jobs/{job} lists the three failed items with their reasons", jr)
        now = holding(d)
        names = set(now[2] or [])
        ok(now[1] == 57 and "links/link_009.jpg" not in names and
           "links/notimage_011.jpg" not in names and
           not any(n.endswith("outside_017.jpg") for n in names),
           "the daemon holds 57 ready images, no failed one among the searchable", now[:2])
    finally:
        e2e.stop_checked(d, "import-refuse")


if __name__ == "__main__":
    sys.exit(e2e.run_tests("clipd-e2e-import-",
                           [test_shards, test_embed_rerun, test_import_compare, test_limit,
                            test_concurrent, test_names, test_api_key, test_changed,
                            test_refusals],
                           need=(MKJPEG, EMBED),
                           need_msg="CLIPD_BIN, CLIPD_REFERENCE, CLIPD_MKJPEG or CLIP_EMBED "
                                    "not set"))
