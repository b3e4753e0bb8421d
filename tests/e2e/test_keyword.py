#!/usr/bin/env python3
"""End-to-end: keyword and hybrid search ("mode": "keyword" | "hybrid").

clipd on the Chinese-CLIP kit ($CLIPD_REFERENCE/tiny-cn-clip-a): the
reference images uploaded with file names and captions in Chinese and
English, more under --allow-root in Chinese-named folders, texts in Chinese;
then keyword search finds a Chinese caption by any run of its characters
(one character too), a file name, a folder of the ingest path, a text;
a metadata update and a delete are followed at once; filters, min_score,
offset and the GET form apply; hybrid search equals the reciprocal-rank
fusion of the vector and keyword rankings computed here from the two
single-mode searches (ranks, scores, order, rrf_k); FTS5 syntax errors and
bad modes are 400s with their messages; all of it again after a restart.

The real clipd on 127.0.0.1 through test_e2e.py's harness; TAP output.
"""
import json
import os
import shutil
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, Daemon, REF  # noqa: E402

KIT = os.path.join(REF, "tiny-cn-clip-a")

CAPTIONS = {  # reference image -> (stored file name, caption)
    "horse.png": ("IMG_2041.png", "草原上奔跑的马"),
    "chelsea.png": ("cat on the sofa.png", "沙发上的猫 Crème brûlée"),
    "rocket.jpg": ("dog.jpg", "海滩上的狗"),
}


def upload(d, ref_name, filename, caption):
    with open(os.path.join(REF, "images", ref_name), "rb") as fh:
        body = fh.read()
    q = urllib.parse.urlencode({"filename": filename, "wait": "true",
                                "meta": json.dumps({"caption": caption}, ensure_ascii=False)})
    ctype = "image/jpeg" if ref_name.endswith(".jpg") else "image/png"
    return d.post("/v1/images?" + q, body, ctype=ctype)


def search(d, **body):
    return d.post("/v1/search", body)


def ids_of(r):
    return [x["id"] for x in r.json["results"]] if r.status == 200 else None


def rrf(vector, keyword, k):
    """The fusion the README describes, from the two rankings (id lists)."""
    rank = {}
    for i, x in enumerate(vector):
        rank.setdefault(x, [None, None])[0] = i + 1
    for i, x in enumerate(keyword):
        rank.setdefault(x, [None, None])[1] = i + 1
    out = []
    for x, (v, kw) in rank.items():
        s = (1.0 / (k + v) if v else 0.0) + (1.0 / (k + kw) if kw else 0.0)
        out.append((x, s, v, kw))
    inf = float("inf")
    out.sort(key=lambda t: (-t[1], t[2] or inf, t[3] or inf, t[0]))
    return out


def test_keyword(tmp):
    images = sorted(os.listdir(os.path.join(REF, "images")))
    model = os.path.join(tmp, "model")
    shutil.copytree(KIT, model)
    root = os.path.join(tmp, "root")
    trip = os.path.join(root, "假期", "2019 海边")
    os.makedirs(trip)
    shutil.copy(os.path.join(REF, "images", "coffee.png"), os.path.join(trip, "日落.png"))
    others = [f for f in images if f not in CAPTIONS and f != "coffee.png"][:2]
    for f in others:
        shutil.copy(os.path.join(REF, "images", f), os.path.join(root, f))
    data = os.path.join(tmp, "data")
    d = Daemon("keyword", data, ["--precision", "f32", "--allow-root", root], model=model)
    if not ok(d.start(), "clipd starts on tiny-cn-clip-a"):
        return
    try:
        ids = {}
        for ref_name, (fname, caption) in CAPTIONS.items():
            r = upload(d, ref_name, fname, caption)
            ok(r.status in (200, 201) and r.json.get("status") == "ready",
               "upload %s as %s with a caption" % (ref_name, fname), r)
            ids[fname] = r.json.get("id") if r.json else None
        r = d.post("/v1/ingest", {"dir": root, "recursive": True})
        job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
        ok(job is not None and job["done"] >= 1, "ingest the folder under --allow-root", r)
        d.wait_idle()
        r = d.post("/v1/texts", {"texts": ["一只在海滩上奔跑的金毛犬", "a cat asleep on a sofa"],
                                 "wait": True})
        ok(r.status in (200, 202), "add two texts", r)
        if r.status == 202:
            d.wait_job(r.json["job_id"])
        tids = r.json.get("ids", []) if r.json else []

        def finds(query, want, what, **extra):
            r = search(d, text=query, mode="keyword", **extra)
            got = ids_of(r)
            ok(got == want, "keyword %r finds %s (%s)" % (query, want, what),
               (r, got))
            return r

        dog, cat, horse = ids["dog.jpg"], ids["cat on the sofa.png"], ids["IMG_2041.png"]
        r = finds("海滩", [dog], "a run of a Chinese caption")
        if r.status == 200 and r.json["results"]:
            x = r.json["results"][0]
            ok(r.json.get("mode") == "keyword" and x["keyword_rank"] == 1 and
               x["vector_rank"] is None and x["score"] > 0 and
               x.get("meta", {}).get("caption") == "海滩上的狗",
               "a keyword result: its rank, a positive score, the caption unmangled", x)
        finds("狗", [dog], "one Chinese character")
        finds("的狗", [dog], "a run across the caption's words")
        finds("马", [horse], "the horse's caption")
        finds("IMG_2041", [horse], "the file name's words")
        finds("\"cat on the sofa.png\"", [cat], "a quoted file name")
        finds("creme brulee", [cat], "accents folded")
        finds("沙发 AND cat", [cat], "Chinese and English with AND")
        finds("狗海", [], "a run that does not occur")

        r = search(d, text="假期", mode="keyword")
        got = r.json["results"] if r.status == 200 else []
        ok(len(got) == 1 and got[0].get("filename", "").startswith("假期/2019 海边/"),
           "keyword: a folder of the path under the root (%s)" %
           (got[0].get("filename") if got else None), r)
        sunset = got[0]["id"] if got else None
        r = search(d, text="path:海边 OR name:日落", mode="keyword")
        ok(ids_of(r) == [sunset], "keyword: path: and name: columns", r)
        r = search(d, text="海滩", mode="keyword", collection="texts")
        ok(ids_of(r) == tids[:1], "keyword in the texts collection, a Chinese text", r)
        r = d.get("/v1/search?" + urllib.parse.urlencode({"q": "海滩", "mode": "keyword"}))
        ok(ids_of(r) == [dog], "GET /v1/search?q=...&mode=keyword", r)

        # Filters, min_score and offset apply to keyword results too.
        r = search(d, text="cat OR 狗 OR 马", mode="keyword", k=10)
        all3 = ids_of(r) or []
        ok(sorted(all3) == sorted([cat, dog, horse]), "keyword OR finds three", r)
        r = search(d, text="cat OR 狗 OR 马", mode="keyword", filter={"caption": "海滩上的狗"})
        ok(ids_of(r) == [dog], "keyword with a metadata filter", r)
        r = search(d, text="cat OR 狗 OR 马", mode="keyword", k=1, offset=1)
        ok(ids_of(r) == all3[1:2], "keyword with k and offset", r)
        scores = [x["score"] for x in search(d, text="cat OR 狗 OR 马", mode="keyword",
                                             k=10).json["results"]]
        cut = scores[1] if len(scores) == 3 else 0
        r = search(d, text="cat OR 狗 OR 马", mode="keyword", min_score=cut)
        ok(ids_of(r) == all3[:2], "keyword with min_score on its score", r)

        # Hybrid = RRF of the two rankings.
        for query, k_rrf in (("狗", 60), ("沙发上的猫", 60), ("草原 OR 海滩", 1)):
            vec = ids_of(search(d, text=query, k=100))
            kw = ids_of(search(d, text=query, mode="keyword", k=100))
            body = {"text": query, "mode": "hybrid", "k": 100}
            if k_rrf != 60:
                body["rrf_k"] = k_rrf
            r = d.post("/v1/search", body)
            if not ok(r.status == 200 and vec is not None and kw is not None,
                      "hybrid %r (rrf_k %d)" % (query, k_rrf), r):
                continue
            want = rrf(vec, kw, k_rrf)
            got = [(x["id"], x["score"], x["vector_rank"], x["keyword_rank"])
                   for x in r.json["results"]]
            same = len(got) == len(want) and all(
                g[0] == w[0] and abs(g[1] - w[1]) < 1e-6 and g[2] == w[2] and g[3] == w[3]
                for g, w in zip(got, want))
            ok(same and r.json.get("mode") == "hybrid" and len(kw) >= 1,
               "hybrid %r: the RRF of vector and keyword rankings, ranks and scores" % query,
               json.dumps({"got": got[:6], "want": want[:6]}))

        # Bad requests: 400 with a message that says what was wrong.
        for body, word in (({"text": "\"unclosed", "mode": "keyword"}, "keyword query"),
                           ({"text": "beach.jpg", "mode": "keyword"}, "keyword query"),
                           ({"text": "nosuch:x", "mode": "keyword"}, "keyword query"),
                           ({"text": "x", "mode": "fuzzy"}, "mode"),
                           ({"image_id": dog, "mode": "keyword"}, "searches by words"),
                           ({"image_id": dog, "mode": "hybrid"}, "searches by words"),
                           ({"text": "x", "mode": "hybrid", "rrf_k": 0}, "rrf_k"),
                           ({"text": "x", "mode": 3}, "mode")):
            r = search(d, **body)
            ok(r.status == 400 and word in r.err_msg(),
               "400 for %s: %s" % (json.dumps(body, ensure_ascii=False), r.err_msg()), r)
        r = d.get("/v1/stats")
        ok(r.status == 200 and r.json["images"]["ready"] == 6 and r.json["texts"]["total"] == 2, "the data is untouched", r)

        # Updates and deletes are followed in the same transaction.
        r = d.request("PATCH", "/v1/images/%d" % cat, {"meta": {"caption": "晚霞"}})
        ok(r.status == 200, "PATCH the cat's metadata", r)
        finds("晚霞", [cat], "the new caption")
        finds("沙发", [], "the old caption is gone")
        finds("sofa", [cat], "the file name stays")
        r = d.delete("/v1/images/%d" % dog)
        ok(r.status in (200, 204), "delete the dog", r)
        finds("海滩", [], "a deleted image is not found")

        rc = d.stop()
        ok(rc == 0, "clean stop", rc)
        ok(d.start(), "restart on the same data")
        bad = []
        for query, want in (("晚霞", [cat]), ("sofa", [cat]), ("海滩", []), ("马", [horse]),
                            ("IMG_2041", [horse]), ("name:日落", [sunset])):
            got = ids_of(search(d, text=query, mode="keyword"))
            if got != want:
                bad.append("%r: %s, want %s" % (query, got, want))
        ok(not bad, "after a restart the keyword index answers the same", "\n".join(bad))
    finally:
        e2e.stop_checked(d, "keyword daemon")


if __name__ == "__main__":
    sys.exit(e2e.run_tests("clipd-keyword.", [test_keyword], need=[KIT]))
