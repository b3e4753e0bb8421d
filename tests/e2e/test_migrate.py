#!/usr/bin/env python3
"""End-to-end: switching a data directory to another model without
downtime (clipd --model NEW on data built with OLD). Two tiny checkpoints
of different dimensions: A, the reference kit's tiny-clip-a (projection 32)
copied to a temporary directory, and B, clip-mkmodel's tiny preset with
--proj 48 (make_model_b).

Built with A, restarted with B: searches keep answering with A during the
migration, /v1/stats names both models, /v1/jobs and /metrics show the
progress, an image ingested meanwhile and one deleted meanwhile come out
right; kill -9 in the middle, and the restart resumes (progress does not
restart from 0); after the switch searches answer with B (scores checked
against B's own /v1/embed vectors), A's embeddings are gone from the store,
a restart with B is a normal start, and a restart with A is the same
migration back. The refusals: no recorded old model directory, a recorded
one that is missing, an --old-model that is another model: exit 2 with
what to pass.

The real clipd on 127.0.0.1 through test_e2e.py's harness; TAP output.
"""
import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, diag, png_bytes, multipart, Daemon, MKMODEL, MODEL  # noqa: E402

N_IMAGES = 96
TEXTS = ["a photo of a cat", "a red square", "noise", "the sea at night", "a rocket"]
QUERY = "a photo of a dog"
B_DIM = 48


def make_model_b(out):
    """clip-mkmodel's tiny preset with B_DIM projection outputs: a checkpoint
    of another dimension, and another fingerprint."""
    subprocess.run([MKMODEL, "--preset", "tiny", "--proj", str(B_DIM), "--seed", "7", "--out", out],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def search(d, text=QUERY, k=200):
    r = d.post("/v1/search", {"text": text, "k": k})
    if r.status != 200:
        return None
    return [(x["id"], x["score"]) for x in r.json["results"]]


def stats(d):
    r = d.get("/v1/stats")
    return r.json if r.status == 200 else None


def migrating(s):
    return [m for m in s.get("models", []) if m["state"] == "migrating"] if s else []


def db_models(data):
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(data, "clipd.db"), uri=True)
    try:
        return {m: n for m, n in con.execute(
            "SELECT model, count(*) FROM embeddings GROUP BY model")}
    finally:
        con.close()


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def wait_switched(d, model_id, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        s = stats(d)
        if s and s["model"]["id"] == model_id and not migrating(s):
            return s
        time.sleep(0.1)
    return None


def test_migration(tmp):
    if not MKMODEL:
        e2e.skip("CLIP_MKMODEL is not set")
        return
    model_a = os.path.join(tmp, "model-a")
    shutil.copytree(MODEL, model_a)
    model_b = os.path.join(tmp, "model-b")
    make_model_b(model_b)
    data = os.path.join(tmp, "data")
    common = ["--precision", "f32", "--workers", "1"]
    images = {"img%03d.png" % i: png_bytes(48, 40, 300 + i) for i in range(N_IMAGES)}

    # Built with A.
    d = Daemon("a", data, common, model=model_a)
    if not ok(d.start(), "clipd starts with model A"):
        return
    try:
        body, ctype = multipart([], [("file", n, b, "image/png") for n, b in images.items()])
        r = d.post("/v1/ingest?wait=true", body, ctype=ctype)
        ok(r.status in (200, 202), "ingest of %d images with model A" % N_IMAGES, r)
        r = d.post("/v1/texts?wait=true", {"texts": TEXTS})
        ok(r.status in (200, 202), "texts added with model A", r)
        s = d.wait_idle()
        a_id = s["model"]["id"]
        ok(s["model"]["dim"] == 32 and s["images"]["ready"] == N_IMAGES,
           "model A: dim 32, every image ready", s)
        ids = {x["filename"]: x["id"] for x in d.post("/v1/search", {"text": "x", "k": 500}).json["results"]}
        before = search(d)
    finally:
        d.stop()

    # Restarted with B: a migration, searches served by A meanwhile.
    d = Daemon("b", data, common + ["--migration-pause-ms", "150"], model=model_b)
    if not ok(d.start(), "clipd starts with model B on A's data directory"):
        return
    killed_at = None
    try:
        s = stats(d)
        mig = migrating(s)
        ok(s["model"]["id"] == a_id and len(s["models"]) == 2 and mig and mig[0]["dim"] == B_DIM
           and s["models"][0] == {"id": a_id, "dim": 32, "state": "serving"},
           "/v1/stats names both models: A serving, B migrating", s)
        b_id = mig[0]["id"] if mig else None
        during = search(d)
        ok(during is not None and [i for i, _ in during] == [i for i, _ in before]
           and all(abs(x - y) < 1e-5 for (_, x), (_, y) in zip(during, before)),
           "searches during the migration answer with model A", (during or [])[:3])
        jobs = d.get("/v1/jobs").json["jobs"]
        job = [j for j in jobs if j["kind"] == "model_migration"]
        ok(job and job[0]["state"] == "running", "/v1/jobs lists the running model_migration job",
           jobs[:3])
        m = d.get("/metrics").body.decode()
        ok(('clipd_migration_active{model="%s"} 1' % b_id) in m and
           'clipd_migration_items{state="total"}' in m,
           "/metrics shows the migration", [l for l in m.splitlines() if "migration" in l])
        # One image more (embedded with both) and one fewer, meanwhile.
        r = d.post("/v1/images?wait=true&filename=late.png", png_bytes(48, 40, 9999),
                   ctype="image/png")
        late = r.json.get("id") if r.json else None
        ok(r.status in (200, 201, 202) and late, "an upload during the migration is accepted", r)
        gone = ids["img%03d.png" % (N_IMAGES - 1)]  # not re-embedded yet: ids go in order
        ok(d.delete("/v1/images/%d" % gone).status == 200, "a delete during the migration")
        # kill -9 in the middle.
        end = time.time() + 120
        while time.time() < end:
            mig = migrating(stats(d))
            if mig and 16 <= mig[0]["done"] < mig[0]["total"] - 16:
                killed_at = mig[0]["done"]
                break
            time.sleep(0.05)
        ok(killed_at is not None, "the migration is under way (%s done)" % killed_at, mig)
    finally:
        d.stop(signal.SIGKILL)
    if killed_at is None:
        return

    stored = db_models(data)
    ok(stored.get(b_id, 0) >= killed_at and stored.get(a_id) == N_IMAGES - 1 + 1 + len(TEXTS),  # - deleted + late
       "after kill -9 the store holds both models' embeddings (%s of model B)" %
       stored.get(b_id), stored)
    if not ok(d.start(), "restart with model B after kill -9"):
        return
    try:
        s = stats(d)
        mig = migrating(s)
        ok(mig and mig[0]["done"] >= stored.get(b_id, 0) > 0 and s["model"]["id"] == a_id,
           "the migration resumes where it was (%s done at the kill, %s now)" %
           (killed_at, mig[0]["done"] if mig else None), s)
        s = wait_switched(d, b_id)
        if not ok(s is not None, "the migration completes and the search switches to model B",
                  stats(d)):
            return
        ok(s["model"]["dim"] == B_DIM and len(s["models"]) == 1 and
           s["images"]["ready"] == N_IMAGES, "/v1/stats: model B only, every image ready", s)
        job = [j for j in d.get("/v1/jobs").json["jobs"] if j["kind"] == "model_migration"]
        ok(job and job[0]["state"] == "done" and job[0]["done"] == job[0]["total"],
           "the model_migration job is done", job)
        got = search(d)
        names = {v: k for k, v in ids.items()}
        names[late] = "late.png"
        q = d.post("/v1/embed", {"texts": [QUERY]}).json
        ok(q["model"] == b_id and q["dim"] == B_DIM, "/v1/embed answers with model B", q.get("model"))
        top = got[:10]
        imgs = [images.get(names.get(i), None) or png_bytes(48, 40, 9999) for i, _ in top]
        emb = d.post("/v1/embed", {"images_b64": [base64.b64encode(b).decode() for b in imgs]}).json
        want = [dot(q["texts"][0], v) for v in emb["images"]]
        ok(all(abs(sc - w) < 1e-3 for (_, sc), w in zip(top, want)),
           "search scores are model B's (text . image embeddings from /v1/embed)",
           list(zip([s for _, s in top], want)))
        ok(len(got) == N_IMAGES and late in [i for i, _ in got] and gone not in [i for i, _ in got],
           "after the switch: the late image is found, the deleted one is not", len(got))
        ok(len(search(d, k=10) or []) == 10 and
           d.post("/v1/search", {"text": TEXTS[0], "collection": "texts", "k": 5}).status == 200,
           "texts collection searchable with model B")
    finally:
        d.stop(signal.SIGKILL)  # soon after the switch: it holds
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(data, "clipd.db"), uri=True)
    kv = dict(con.execute("SELECT key, value FROM kv"))
    con.close()
    ok(kv.get("model.id") == b_id and kv.get("model.dim") == str(B_DIM) and
       not any(k.startswith("migration.") for k in kv),
       "after kill -9 the data directory's model is B (the switch was one commit)", kv)

    # A further restart with B is a normal start.
    if not ok(d.start(), "restart with model B after kill -9"):
        return
    try:
        log = d.log()
        s = stats(d)
        ok("migrating to" not in log and "built with model" not in log and
           len(s["models"]) == 1 and s["model"]["id"] == b_id and len(search(d)) == N_IMAGES,
           "a restart with model B is a normal start", log[-1500:])
        ok(not os.path.exists(os.path.join(data, "index", a_id)) and
           os.path.exists(os.path.join(data, "index", b_id)), "model A's index directory is gone",
           os.listdir(os.path.join(data, "index")))
        ok(e2e.wait_until(lambda: list(db_models(data)) == [b_id], 60),
           "model A's embeddings are deleted from the store (in the background)", db_models(data))
    finally:
        rc = d.stop()
    ok(rc == 0, "SIGTERM on model B: exit 0")

    # Refusals, before going back to A: B's recorded directory is gone.
    moved_b = model_b + "-moved"
    os.rename(model_b, moved_b)
    back = Daemon("back", data, common, model=model_a)
    started = back.start(expect_fail=True, timeout=60)
    rc = back.proc.wait() if back.proc else None
    log = back.log()
    ok(not started and rc == 2 and "Pass --old-model DIR" in log and b_id in log,
       "the old model's recorded directory missing: refused with what to pass (exit 2)", log)
    back = Daemon("back", data, common + ["--old-model", model_a], model=model_a)
    started = back.start(expect_fail=True, timeout=60)
    rc = back.proc.wait() if back.proc else None
    log = back.log()
    ok(not started and rc == 2 and "holds model %s" % a_id in log,
       "an --old-model that is another model: refused (exit 2)", log)
    con = sqlite3.connect(os.path.join(data, "clipd.db"))
    saved_dir = con.execute("SELECT value FROM kv WHERE key = 'model.dir'").fetchone()[0]
    con.execute("DELETE FROM kv WHERE key = 'model.dir'")
    con.commit()
    back = Daemon("back", data, common, model=model_a)
    started = back.start(expect_fail=True, timeout=60)
    rc = back.proc.wait() if back.proc else None
    log = back.log()
    ok(not started and rc == 2 and "does not record where" in log and "--old-model" in log,
       "no recorded old model directory: refused with what to pass (exit 2)", log)
    con.execute("INSERT INTO kv (key, value) VALUES ('model.dir', ?)", (saved_dir,))
    con.commit()
    con.close()

    # Back to A, the old model where --old-model says: the same migration.
    back = Daemon("back", data, common + ["--old-model", moved_b], model=model_a)
    if not ok(back.start(), "restart with model A and --old-model: a migration back"):
        return
    try:
        s = wait_switched(back, a_id)
        ok(s is not None and s["model"]["dim"] == 32, "the migration back to model A completes", stats(back))
        again = search(back)
        want = {i: sc for i, sc in before}
        ok(again and all(abs(sc - want[i]) < 1e-5 for i, sc in again if i in want),
           "model A's scores are back as before", (again or [])[:3])
        ok(e2e.wait_until(lambda: list(db_models(back.data)) == [a_id], 60),
           "the store holds model A's embeddings only", db_models(back.data))
    finally:
        rc = back.stop()
    ok(rc == 0, "SIGTERM after a switch in the same process: exit 0 (nothing leaked under ASan)",
       back.log()[-1500:])


if __name__ == "__main__":
    sys.exit(e2e.run_tests("clipd-e2e-migrate-", [test_migration], need=(MKMODEL,),
                           need_msg="CLIPD_BIN, CLIPD_REFERENCE or CLIP_MKMODEL not set"))
