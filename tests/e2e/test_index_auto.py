#!/usr/bin/env python3
"""End-to-end: --index auto in the daemon. A texts collection grows past a
small --index-auto-threshold; the maintenance thread moves its index from
exact to IVF-PQ on a copy (reported in /v1/stats and /metrics) while
searches keep answering, and the answers are those of the test's own
arithmetic on /v1/embed's vectors (under 9,984 vectors the IVF-PQ index
still holds them in its exact pending part). The snapshot keeps the
index's kind across a restart; bad settings are refused at start.

The real clipd on 127.0.0.1 through test_e2e.py's harness; TAP output.
"""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, Daemon, wait_until, run_clipd  # noqa: E402
from test_metrics import parse_metrics, mval  # noqa: E402

THRESHOLD = 30
WORDS = ["dog", "cat", "boat", "rocket", "tree", "house", "car", "bird", "fish", "horse",
         "cup", "book", "lamp", "shoe", "clock", "train", "bridge", "river", "cloud", "apple"]


def texts(n, offset=0):
    return ["a %s next to a %s, number %d" % (WORDS[i % 20], WORDS[(i * 7 + 3) % 20], i)
            for i in range(offset, offset + n)]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def expected_ranking(qvec, vecs, k):
    """Ids by cosine (the vectors are normalised), best first, ties by id."""
    return [i for i, _ in sorted(vecs.items(), key=lambda kv: (-dot(qvec, kv[1]), kv[0]))[:k]]


def search_texts(d, q, k):
    r = d.post("/v1/search", {"text": q, "collection": "texts", "k": k})
    return r, [x["id"] for x in (r.json or {}).get("results", [])] if r.status == 200 else None


def texts_index(d):
    return d.get("/v1/stats").json["index"]["texts"]


def test_auto(tmp):
    data = os.path.join(tmp, "data")
    d = Daemon("auto", data, extra=["--index-auto-threshold", str(THRESHOLD),
                                    "--index-nprobe", "16", "--index-refine", "25"])
    if not ok(d.start(), "clipd starts with --index-auto-threshold %d" % THRESHOLD):
        return
    try:
        st = texts_index(d)
        ok(st["requested"] == "auto" and st["kind"] == "exact" and st["factory"] == "Flat" and
           st["auto_threshold"] == THRESHOLD and st["maintenance"]["running"] is None and
           st["maintenance"]["done"] == 0,
           "a new data directory: auto, exact (Flat), threshold %d, no maintenance" % THRESHOLD, st)

        first = texts(THRESHOLD - 1)
        r = d.post("/v1/texts", {"texts": first})
        ok(r.status == 202, "POST /v1/texts of %d texts" % len(first), r)
        ids = list(r.json["ids"]) if r.status == 202 else []
        ok(wait_until(lambda: texts_index(d)["count"] == len(first)),
           "the texts index holds them", texts_index(d))
        st = texts_index(d)
        ok(st["kind"] == "exact" and st["maintenance"]["due"] is None,
           "one below the threshold: still exact, nothing due", st)

        # Queries searched all the while the index moves.
        queries = ["a dog", "a rocket next to a river", "number 7", "an apple"]
        errors, answered = [], [0]
        stop = threading.Event()

        def searcher():
            while not stop.is_set():
                for q in queries:
                    r, got = search_texts(d, q, 5)
                    if r.status != 200 or not got:
                        errors.append((q, r.status, r.body[:200]))
                    answered[0] += 1

        th = threading.Thread(target=searcher)
        th.start()
        more = texts(12, offset=THRESHOLD - 1)
        r = d.post("/v1/texts", {"texts": more})
        ok(r.status == 202, "POST /v1/texts of %d more: past the threshold" % len(more), r)
        ids += list(r.json["ids"]) if r.status == 202 else []
        moved = wait_until(lambda: texts_index(d)["maintenance"]["done"] >= 1, timeout=60)
        stop.set()
        th.join()
        st = texts_index(d)
        ok(moved and st["kind"] == "ivf" and st["factory"].startswith("IVF") and
           "PQ" in st["factory"] and st["requested"] == "auto" and st["refine"] == 25 and
           st["nprobe"] == 16 and
           st["maintenance"]["running"] is None and st["maintenance"]["error"] is None,
           "past the threshold the maintenance thread moves it to re-ranked IVF-PQ, "
           "with --index-nprobe and --index-refine", st)
        ok(wait_until(lambda: texts_index(d)["count"] == len(ids)),
           "the IVF index holds all %d texts" % len(ids), texts_index(d))
        ok(not errors and answered[0] > 0,
           "%d searches during the move, every one answered" % answered[0], errors[:5])
        ok(d.get("/v1/stats").json["index"]["images"]["kind"] == "exact",
           "the images index, empty, stays exact")
        log = d.log()
        ok("texts index: upgrade started" in log and "texts index: upgrade done" in log,
           "the log says when the move started and ended", log[-1500:])

        # Rankings equal the arithmetic on /v1/embed's vectors.
        all_texts = first + more
        r = d.post("/v1/embed", {"texts": all_texts + queries})
        ok(r.status == 200, "POST /v1/embed the texts and the queries", r)
        vecs = dict(zip(ids, r.json["texts"][:len(ids)]))
        qv = dict(zip(queries, r.json["texts"][len(ids):]))
        bad = []
        for q in queries:
            _, got = search_texts(d, q, 8)
            want = expected_ranking(qv[q], vecs, 8)
            if got != want:
                bad.append((q, got, want))
        ok(not bad, "after the move every ranking is the exact one", bad)

        # Metrics.
        m, _, problems = parse_metrics(d.get("/metrics").body.decode())
        ok(not problems and
           mval(m, "clipd_index_info", collection="texts", kind="ivf", factory=st["factory"]) == 1
           and mval(m, "clipd_index_maintenances_total", collection="texts") == 1 and
           mval(m, "clipd_index_maintenance_running", collection="texts", task="none") == 0,
           "/metrics: clipd_index_info, clipd_index_maintenances_total, _running", problems)

        # A deletion after the move reaches the new index.
        gone = ids[0]
        r = d.delete("/v1/texts/%d" % gone)
        ok(r.status in (200, 204), "DELETE a text after the move", r)
        ok(wait_until(lambda: gone not in (search_texts(d, all_texts[0], 5)[1] or [gone])),
           "the deleted text is no longer found")
    finally:
        e2e.stop_checked(d, "auto daemon")

    # Restart: the snapshot is loaded, still auto and IVF, same answers.
    d2 = Daemon("auto2", data, extra=["--index-auto-threshold", str(THRESHOLD)])
    if not ok(d2.start(), "clipd restarts on the same data"):
        return
    try:
        st = texts_index(d2)
        ok(st["kind"] == "ivf" and st["requested"] == "auto" and st["count"] == len(ids) - 1 and
           st["refine"] == 100 and st["nprobe"] == 32,
           "after a restart the index is still the IVF one, all texts but the deleted, "
           "with the default nprobe and refine now that none is given", st)
        ok("texts index (IVF" in d2.log() and "loaded snapshot" in d2.log(),
           "it was loaded from the snapshot, not rebuilt", d2.log()[-1500:])
        vecs.pop(gone, None)
        bad = []
        for q in queries:
            _, got = search_texts(d2, q, 8)
            want = expected_ranking(qv[q], vecs, 8)
            if got != want:
                bad.append((q, got, want))
        ok(not bad, "after the restart every ranking is the exact one", bad)
    finally:
        e2e.stop_checked(d2, "restarted auto daemon")

    # Settings refused at start, with the reason.
    for args, what in ((["--index-auto-threshold", "-5"], "a negative threshold"),
                       (["--index-auto-threshold", "many"], "a threshold that is not a number"),
                       (["--index", "IVF-nonsense,PQ"], "an index factory FAISS rejects"),
                       (["--index-refine", "5000"], "a refine over 1000"),
                       (["--index-nprobe", "-1"], "a negative nprobe")):
        rc, out = run_clipd(["--model", e2e.MODEL, "--data", os.path.join(tmp, "bad"),
                             "--listen", "127.0.0.1:0"] + args)
        ok(rc != 0 and ("index" in out), "%s is refused at start with a message" % what,
           (rc, out[-600:]))


def main():
    return e2e.run_tests('clipd-e2e-index-auto-', [test_auto])


if __name__ == "__main__":
    sys.exit(main())
