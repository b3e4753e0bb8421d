#!/usr/bin/env python3
"""End-to-end tests: nothing outside the allowed roots is ever read (issue 12,
items 6, 7, 8 and the "lower" path items), against the real clipd on
127.0.0.1 (the harness of test_e2e.py; same environment variables).

- POST /v1/ingest {"paths"} / {"dir"}: a directory swapped for a symbolic
  link to outside while the request is in progress (made deterministic: the
  old code blocked on a FIFO named first, the swap happens while it waits),
  links placed before the request on the last and on a middle component, a
  FIFO (4xx at once, and SIGTERM still exits 0), a file that reads longer
  than its size (/proc/self/environ: cut at --max-body), no file-existence
  oracle outside the roots, names shown relative to their root.
- --watch: a watched directory moved out and replaced by a symbolic link to
  where it went; new files there must never be ingested. A FIFO in a
  watched directory does not stop the watcher.

Output is TAP.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402

ok, diag = e2e.ok, e2e.diag


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return hashlib.sha256(data).hexdigest()


def all_images(d):
    """{id: image JSON} of every stored image (ids are dense from 1)."""
    total = d.get("/v1/stats").json["images"]["total"]
    found, i = {}, 0
    while len(found) < total and i < total + 500:
        i += 1
        r = d.get("/v1/images/%d" % i)
        if r.status == 200:
            found[i] = r.json
    return found


def shas(d):
    return {im["sha256"] for im in all_images(d).values()}


def post_quick(d, body, timeout=15):
    """POST /v1/ingest that must answer within timeout: (Response or None, seconds)."""
    t0 = time.time()
    try:
        return d.post("/v1/ingest", body, timeout=timeout), time.time() - t0
    except (socket.timeout, TimeoutError, OSError) as ex:
        diag("no answer in %d s: %r" % (timeout, ex))
        return None, time.time() - t0


def release_fifo(path):
    """Opens the FIFO for writing and closes it: a reader blocked in open()
    (the unfixed daemon) gets EOF and goes on. True when one was blocked."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


def stop_quickly(d, name, fifos=()):
    """SIGTERM exits 0 within 40 s (the grace for requests is 30 s). When it
    does not, the FIFOs are released so that the daemon can be reaped."""
    proc = d.proc
    if proc is None:
        ok(False, name + ": SIGTERM exit 0 (not running)")
        return
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    rc = None
    while time.time() - t0 < 40:
        rc = proc.poll()
        if rc is not None:
            break
        time.sleep(0.1)
    took = time.time() - t0
    if rc is None:
        for f in fifos:
            release_fifo(f)
        rc = d.stop(timeout=30)
        ok(False, "%s: SIGTERM exit 0 (still running after 40 s, then %s)" % (name, rc))
        return
    d.proc = None
    d.log_file.close()
    ok(rc == 0, "%s: SIGTERM exit 0 (%.1f s)" % (name, took), d.log()[-2000:])


def no_server_path(r, *dirs):
    text = r.body.decode(errors="replace") if r is not None else ""
    return not any(x in text for x in dirs)


# ---- {"paths"} and {"dir"} ---------------------------------------------------------

def test_ingest_paths(tmp):
    root = os.path.join(tmp, "root")
    out = os.path.join(tmp, "out")
    png = e2e.png_bytes
    write(os.path.join(root, "a.png"), png(16, 16, 9001))
    write(os.path.join(root, "sub", "b.png"), png(16, 16, 9002))
    secret = write(os.path.join(out, "secret.png"), png(16, 16, 9100))
    secret_b = write(os.path.join(out, "sub", "b.png"), png(16, 16, 9101))
    secret_race = write(os.path.join(out, "racesub", "x.png"), png(16, 16, 9102))
    inside_race = write(os.path.join(root, "race", "sub", "x.png"), png(16, 16, 9003))
    secrets = {secret, secret_b, secret_race}
    os.symlink(out, os.path.join(root, "dirlink"))
    os.symlink(os.path.join(out, "secret.png"), os.path.join(root, "link.png"))
    fifo = os.path.join(root, "fifo.png")
    os.mkfifo(fifo)
    blocker = os.path.join(root, "race", "blocker.png")
    os.mkfifo(blocker)
    fifos = (fifo, blocker)

    d = e2e.Daemon("sec-paths", os.path.join(tmp, "data-paths"),
                   ["--allow-root", root], env_extra={"CLIPD_WORKERS": "1"})
    if not ok(d.start(), "clipd starts with --allow-root"):
        return
    try:
        # A FIFO named in {"paths"}: refused at once (the old daemon blocked
        # in open() until a writer came, for ever).
        r, took = post_quick(d, {"paths": [fifo]})
        if r is None:
            release_fifo(fifo)
        ok(r is not None and r.status == 202 and len(r.json["rejected"]) == 1 and
           r.json["rejected"][0]["code"] == "bad_request" and
           "not a regular file" in r.json["rejected"][0]["error"] and took < 10,
           "a FIFO under the root: rejected with a 4xx at once (%.1f s)" % took, r)

        # The race, made deterministic. The request names a FIFO first and
        # then a file in a directory; while the old daemon waited for the
        # FIFO (after its checks, before the opens), the directory is
        # swapped for a link to outside. The fixed daemon never waits: it
        # reads the directory as it is, and would refuse the link anyway.
        result = {}

        def send():
            try:
                result["r"] = d.post("/v1/ingest", {"paths": [
                    blocker, os.path.join(root, "race", "sub", "x.png")]}, timeout=60)
            except Exception as ex:  # noqa: BLE001 (reported below)
                result["e"] = ex
        th = threading.Thread(target=send)
        th.start()
        # Checking two paths takes microseconds: a request still running
        # after 3 s is the unfixed daemon blocked in open() on the FIFO,
        # past its checks. Swap, then give the FIFO a writer to let it go.
        th.join(3)
        swapped = th.is_alive()
        if swapped:
            os.rename(os.path.join(root, "race", "sub"), os.path.join(root, "race", "sub.real"))
            os.symlink(os.path.join(out, "racesub"), os.path.join(root, "race", "sub"))
            end = time.time() + 10
            while th.is_alive() and time.time() < end and not release_fifo(blocker):
                time.sleep(0.05)
        th.join(60)
        r = result.get("r")
        diag("race: the daemon %s on the FIFO" % ("blocked" if swapped else "did not block"))
        ok(r is not None and r.status == 202 and not swapped,
           "{paths} with a FIFO first: answered without waiting on it", r or result)
        ok(secret_race not in shas(d),
           "a directory swapped for a link between check and open is never followed")
        if swapped:  # put the tree back for what follows
            os.unlink(os.path.join(root, "race", "sub"))
            os.rename(os.path.join(root, "race", "sub.real"), os.path.join(root, "race", "sub"))

        # Links placed before the request, on the last and on a middle
        # component: the paths pass the lexical check, the opens refuse them.
        r = d.post("/v1/ingest", {"paths": [os.path.join(root, "dirlink", "secret.png"),
                                            os.path.join(root, "link.png"),
                                            os.path.join(root, "a.png")]})
        rej = {x["name"]: x for x in (r.json or {}).get("rejected", [])}
        ok(r.status == 202 and r.json["accepted"] == 1 and
           rej.get("dirlink/secret.png", {}).get("code") == "forbidden" and
           "symbolic link" in rej.get("dirlink/secret.png", {}).get("error", "") and
           rej.get("link.png", {}).get("code") == "forbidden",
           "{paths}: a link on a middle or the last component is refused (403 each), "
           "the plain file is taken", r)
        r = d.post("/v1/ingest", {"dir": os.path.join(root, "dirlink")})
        ok(r.status == 403 and r.err_code() == "forbidden" and "symbolic link" in r.err_msg(),
           "{dir} naming a link to outside: 403", r)
        r = d.post("/v1/ingest", {"dir": os.path.join(root, "dirlink", "sub")})
        ok(r.status == 403, "{dir} through a link to outside: 403", r)
        r = d.post("/v1/ingest", {"dir": root, "recursive": True})
        names = sorted(it["name"] for it in (r.json or {}).get("items", []))
        ok(r.status == 202 and names == ["a.png", "race/sub/x.png", "sub/b.png"],
           "{dir} recursive: links and FIFOs are skipped; items named under the root", r)
        if r.status == 202:
            d.wait_job(r.json["job_id"], timeout=60)
        got = shas(d)
        ok(not (got & secrets) and inside_race in got,
           "no file outside the root was ever stored", sorted(got & secrets))

        # No existence oracle: outside every root, the same answer whether
        # the file exists or not, for files and directories alike.
        ra = d.post("/v1/ingest", {"paths": [os.path.join(out, "secret.png")]})
        rb = d.post("/v1/ingest", {"paths": [os.path.join(out, "no-such-file.png")]})
        ok(ra.status == rb.status == 403 and ra.json == rb.json,
           "a path outside the roots: the same 403 whether it exists or not", (ra, rb))
        ra = d.post("/v1/ingest", {"dir": out})
        rb = d.post("/v1/ingest", {"dir": os.path.join(out, "no-such-dir")})
        rc = d.post("/v1/ingest", {"dir": os.path.join(root, "..", "out", "no-such-dir")})
        ok(ra.status == rb.status == rc.status == 403 and ra.json == rb.json == rc.json,
           "a directory outside the roots: the same 403 whether it exists or not", (ra, rb, rc))
        r = d.post("/v1/ingest", {"paths": ["sub/b.png"]})
        ok(r.status == 400 and "absolute" in r.err_msg(), "a relative path: 400", r)
        r = d.post("/v1/ingest", {"paths": [os.path.join(root, "sub", "..", "a.png")]})
        ok(r.status == 202 and r.json["duplicates"] == 1 and r.json["items"][0]["name"] == "a.png",
           "'..' that stays inside the root is cleaned, not followed", r)

        # Names are shown relative to their root: items, rejections, the
        # image's filename, the job's failures.
        r = d.post("/v1/ingest", {"paths": [os.path.join(root, "sub", "b.png"),
                                            os.path.join(root, "sub", "missing.png"), fifo]})
        ok(r.status == 202 and no_server_path(r, root, tmp) and
           sorted(x["name"] for x in r.json["rejected"]) == ["fifo.png", "sub/missing.png"],
           "bulk items and rejections name paths under the root, never the server's", r)
        ids = [it["id"] for it in (r.json or {}).get("items", [])]
        img = d.get("/v1/images/%d" % ids[0]) if ids else None
        ok(img is not None and img.json["filename"] == "sub/b.png" and no_server_path(img, tmp),
           "an image ingested by path: filename is its path under the root", img)
        job = d.get("/v1/jobs/%d" % r.json["job_id"]) if r.status == 202 else None
        ok(job is not None and no_server_path(job, tmp) and
           sorted(x["name"] for x in job.json["errors"]) == ["fifo.png", "sub/missing.png"],
           "the job's failures name paths under the root", job)
        ok(d.get("/healthz").status == 200, "the daemon serves on after all of it")
    finally:
        stop_quickly(d, "paths daemon", fifos)


def test_fifo_sigterm(tmp):
    """A request stuck on a FIFO kept the unfixed daemon from ever exiting."""
    root = os.path.join(tmp, "root-fifo")
    os.makedirs(root)
    fifo = os.path.join(root, "pipe.jpg")
    os.mkfifo(fifo)
    d = e2e.Daemon("sec-fifo", os.path.join(tmp, "data-fifo"), ["--allow-root", root])
    if not ok(d.start(), "clipd starts for the FIFO and SIGTERM case"):
        return
    result = {}

    def send():
        try:
            result["r"] = d.post("/v1/ingest", {"paths": [fifo]}, timeout=60)
        except Exception as ex:  # noqa: BLE001
            result["e"] = ex
    th = threading.Thread(target=send)
    th.start()
    th.join(10)
    r = result.get("r")
    ok(r is not None and r.status == 202 and r.json["rejected"][0]["code"] == "bad_request",
       "a FIFO path answers within 10 s", r or result)
    stop_quickly(d, "FIFO daemon", (fifo,))
    th.join(5)


def test_growing_file(tmp):
    """A file that reads longer than fstat says (here /proc/self/environ,
    size 0, of a daemon given a 1.2 MB environment) is cut at --max-body:
    413, where the unfixed daemon read all of it (and said 415)."""
    env = {"CLIPD_WORKERS": "1"}
    for i in range(12):
        env["CLIPD_TEST_PAD_%02d" % i] = "x" * 100000
    d = e2e.Daemon("sec-grow", os.path.join(tmp, "data-grow"),
                   ["--allow-root", "/proc/self", "--max-body-mb", "1"], env_extra=env)
    if not ok(d.start(), "clipd starts with --allow-root /proc/self and --max-body-mb 1"):
        return
    try:
        r = d.post("/v1/ingest", {"paths": ["/proc/self/environ"]})
        rej = (r.json or {}).get("rejected", [{}])
        ok(r.status == 202 and rej and rej[0].get("code") == "payload_too_large" and
           "grew past the limit" in rej[0].get("error", ""),
           "a file read past --max-body: 413, the copy stops at the limit", r)
    finally:
        stop_quickly(d, "growing-file daemon")


# ---- --watch -------------------------------------------------------------------------

def names_of(d):
    return {im["filename"]: i for i, im in all_images(d).items()}


def test_watch_moved_out(tmp):
    w = os.path.join(tmp, "watched")
    away = os.path.join(tmp, "away")
    os.makedirs(away)
    png = e2e.png_bytes
    write(os.path.join(w, "sub", "a.png"), png(20, 20, 9200))
    os.mkfifo(os.path.join(w, "pipe.png"))
    env = {"CLIPD_WATCH": w, "CLIPD_RESCAN_SECONDS": "300", "CLIPD_WORKERS": "1"}
    d = e2e.Daemon("sec-watch", os.path.join(tmp, "data-watch"), env_extra=env)
    if not ok(d.start(), "clipd starts watching a directory with a FIFO in it"):
        return
    try:
        names = e2e.wait_until(lambda: names_of(d).get("sub/a.png") and names_of(d), timeout=30)
        ok(names and "sub/a.png" in names and not any(n.startswith("/") for n in names),
           "watched files are ingested and named by their path under the watched directory",
           names_of(d))
        a_id = (names or {}).get("sub/a.png")

        # Moved out of the tree, and a link put where it was.
        os.rename(os.path.join(w, "sub"), os.path.join(away, "sub"))
        ok(a_id and e2e.wait_until(lambda: d.get("/v1/images/%d" % a_id).status == 404,
                                   timeout=30),
           "a directory moved out: its files are gone from the index")
        os.symlink(os.path.join(away, "sub"), os.path.join(w, "sub"))
        secret = write(os.path.join(away, "sub", "secret.png"), png(20, 20, 9201))
        write(os.path.join(away, "sub", "a.png"), png(20, 20, 9202))
        control = write(os.path.join(w, "control.png"), png(20, 20, 9203))
        seen = e2e.wait_until(lambda: control in shas(d), timeout=30)
        ok(seen, "the watcher goes on: a new file in the watched directory is ingested")
        time.sleep(3)  # past the debounce of anything the old watch could have named
        d.wait_idle(timeout=60)
        got = shas(d)
        ok(secret not in got and not any(n.startswith("sub/") for n in names_of(d)),
           "files written in a directory moved out (behind a link) are never ingested",
           names_of(d))
        ok(d.get("/healthz").status == 200, "the watch daemon serves on")
    finally:
        stop_quickly(d, "watch daemon", (os.path.join(w, "pipe.png"),))


def main():
    return e2e.run_tests("clipd-sec-paths-", [test_ingest_paths, test_fifo_sigterm, test_growing_file,
                                              test_watch_moved_out])


if __name__ == "__main__":
    sys.exit(main())
