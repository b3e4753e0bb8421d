#!/usr/bin/env python3
"""End-to-end: weighted, negative and mixed queries (issue 11 §3).

POST /v1/search with "query": [terms]: each term (text, image_id or
image_b64, weight default 1) embedded, scaled to unit length, weighted,
summed, the sum scaled to unit length. The test does that arithmetic
itself on the embeddings /v1/embed gives, ranks the reference images (and
texts) by cosine and compares /v1/search's order and scores with it;
then every malformed query is a 4xx naming what was wrong, and nothing
changed.

The real clipd on 127.0.0.1 with the reference kit (test_e2e.py's
harness, same environment variables); TAP output. Fails on a daemon
without "query" (it answers 400 "missing query").
"""
import base64
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, diag, REF  # noqa: E402

# Scores: float32 sums of up to 16 terms against the test's float64 sums
# of /v1/embed's vectors (the stored images were encoded by the workers in
# their own batches). Order: pairs closer than TIE may swap.
TOL = 1e-4
TIE = 2e-4


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def combine(vecs_weights):
    """The issue's arithmetic: normalise(sum(w * normalise(v)))."""
    acc = None
    for v, w in vecs_weights:
        u = unit(v)
        acc = [w * x for x in u] if acc is None else [a + w * x for a, x in zip(acc, u)]
    return unit(acc)


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def ranking_problems(got, want):
    """got: [(key, score)] best first; want: {key: cosine}."""
    problems = []
    for key, score in got:
        if key not in want:
            problems.append("unexpected %r" % (key,))
        elif abs(score - want[key]) > TOL:
            problems.append("%r: score %.6f, expected %.6f" % (key, score, want[key]))
    for (a, _), (b, _) in zip(got, got[1:]):
        if a in want and b in want and want[a] < want[b] - TIE:
            problems.append("%r ranked above %r" % (a, b))
    if sorted(k for k, _ in got) != sorted(want):
        problems.append("returned %s, expected %s" % (sorted(k for k, _ in got), sorted(want)))
    return problems


def test_query_terms(tmp):
    try:
        s = e2e.reference_daemon(tmp, "query")
    except e2e.SetupError as ex:
        ok(False, "set-up: %s" % ex)
        return
    d, ids, texts = s.d, s.ids, s.texts
    names = {v: k for k, v in ids.items()}
    b64 = {}
    for f in s.ref_images:
        with open(os.path.join(REF, "images", f), "rb") as fh:
            b64[f] = base64.b64encode(fh.read()).decode()
    try:
        # The embeddings the test does its arithmetic on.
        words = ["a photo of a cat", "a horse", "a cup of coffee", "A Rocket Launch!!", "grass",
                 "an astronaut in a space suit", "page of printed text", "fruit"]
        r = d.post("/v1/embed", {"texts": words})
        ok(r.status == 200 and len(r.json["texts"]) == len(words), "POST /v1/embed the words", r)
        tvec = dict(zip(words, r.json["texts"]))
        ivec = {}
        for f in s.ref_images:
            r = d.post("/v1/embed", {"images_b64": [b64[f]]})
            ivec[f] = r.json["images"][0] if r.status == 200 else None
        ok(all(ivec.values()), "POST /v1/embed each reference image", ivec)
        r = d.post("/v1/embed", {"texts": texts})
        ok(r.status == 200, "POST /v1/embed the reference texts (the texts collection)", r)
        text_vec = dict(zip(s.text_ids, r.json["texts"]))

        def vec_of(term):
            if "text" in term:
                return tvec[term["text"]]
            if "image_id" in term:
                return ivec[names[term["image_id"]]]
            return ivec[next(f for f in s.ref_images if b64[f] == term["image_b64"])]

        def check(label, query, collection="images"):
            q = combine([(vec_of(t), t.get("weight", 1)) for t in query])
            body = {"query": query, "k": 50}
            if collection == "texts":
                body["collection"] = "texts"
                want = {i: dot(q, v) for i, v in text_vec.items()}
            else:
                want = {f: dot(q, v) for f, v in ivec.items()}
            r = d.post("/v1/search", body)
            if r.status != 200:
                ok(False, label, r)
                return None
            key = (lambda x: x["id"]) if collection == "texts" else \
                (lambda x: names.get(x["id"], "?"))
            got = [(key(x), x["score"]) for x in r.json["results"]]
            ok(r.json["collection"] == collection and not ranking_problems(got, want), label,
               "\n".join(ranking_problems(got, want)) + "\ngot %r" % got)
            return got

        # One term is the single-term form.
        one = d.post("/v1/search", {"text": "a horse", "k": 7})
        got = d.post("/v1/search", {"query": [{"text": "a horse"}], "k": 7})
        ok(one.status == 200 and got.status == 200 and
           [x["id"] for x in one.json["results"]] == [x["id"] for x in got.json["results"]] and
           all(abs(a["score"] - b["score"]) < 1e-6
               for a, b in zip(one.json["results"], got.json["results"])),
           "one text term ranks as 'text' does, the same scores", (one, got))
        got = d.post("/v1/search", {"query": [{"image_id": s.hid, "weight": 3}], "k": 7})
        one = d.post("/v1/search", {"image_id": s.hid, "k": 7})
        ok(one.status == 200 and got.status == 200 and
           [x["id"] for x in one.json["results"]] == [x["id"] for x in got.json["results"]] and
           all(abs(a["score"] - b["score"]) < 1e-6
               for a, b in zip(one.json["results"], got.json["results"])),
           "one image_id term of weight 3 ranks as 'image_id' does (the sum is normalised)",
           (one, got))

        check("weighted texts: 2 x 'a photo of a cat' + 'a cup of coffee'",
              [{"text": "a photo of a cat", "weight": 2}, {"text": "a cup of coffee"}])
        got = check("a negative term: 'a horse' - 'grass'",
                    [{"text": "a horse"}, {"text": "grass", "weight": -1}])
        check("a negative weight that flips the order: 'A Rocket Launch!!' - 3 x 'a horse'",
              [{"text": "A Rocket Launch!!"}, {"text": "a horse", "weight": -3}])
        check("an image_id term minus a text: horse.png - 0.5 x 'a horse'",
              [{"image_id": s.hid}, {"text": "a horse", "weight": -0.5}])
        check("an image_b64 term plus a text: chelsea.png + 1.5 x 'a cup of coffee'",
              [{"image_b64": b64["chelsea.png"]}, {"text": "a cup of coffee", "weight": 1.5}])
        check("the issue's mixed query: text x2, image_id, image_b64, text x-1",
              [{"text": "an astronaut in a space suit", "weight": 2}, {"image_id": ids["rocket.jpg"]},
               {"image_b64": b64["coffee.png"]}, {"text": "fruit", "weight": -1}])
        check("mixed terms against the texts collection",
              [{"image_id": ids["astronaut.png"]}, {"text": "page of printed text", "weight": 0.5},
               {"image_b64": b64["horse.png"], "weight": -0.25}], collection="texts")
        check("16 terms, 4 of them image_b64 (the limits)",
              [{"text": words[i % len(words)], "weight": (i % 5) - 2 or 1} for i in range(12)] +
              [{"image_b64": b64[f], "weight": 0.5} for f in s.ref_images[:4]])
        r = d.post("/v1/search", {"query": [{"text": "a horse"}, {"text": "grass", "weight": -1}],
                                  "k": 2, "offset": 1, "min_score": -1})
        ok(r.status == 200 and got and [x["id"] for x in r.json["results"]] ==
           [ids[n] for n, _ in got[1:3]], "k and offset apply to a terms query", r)
        r = d.post("/v1/search", {"query": [{"text": "a horse"}], "mode": "vector", "k": 7})
        ok(r.status == 200 and len(r.json["results"]) == 7,
           "'query' in mode vector (the default) is served", r)
        r = d.post("/v1/search", {"query": None, "text": "a horse", "k": 1})
        ok(r.status == 200 and len(r.json["results"]) == 1, "\"query\": null is no query", r)

        # ---- bad queries: a 4xx naming what was wrong ----------------------------
        before = d.get("/v1/stats").json
        cases = [
            ("an empty array", {"query": []}, 400, "empty"),
            ("not an array", {"query": "a dog"}, 400, "array"),
            ("a term that is not an object", {"query": ["a dog"]}, 400, "query[0]"),
            ("a term with no source", {"query": [{"text": "a"}, {"weight": 2}]}, 400,
             "query[1]: give exactly one"),
            ("a term with two sources", {"query": [{"text": "a", "image_id": s.hid}]}, 400,
             "several"),
            ("a term with text and image_b64", {"query": [{"text": "a", "image_b64": b64["page.png"]}]},
             400, "several"),
            ("an unknown key in a term", {"query": [{"text": "a", "wieght": 2}]}, 400, "'wieght'"),
            ("a weight that is a string", {"query": [{"text": "a", "weight": "2"}]}, 400,
             "'weight' must be a number"),
            ("a weight that is a boolean", {"query": [{"text": "a", "weight": True}]}, 400,
             "'weight' must be a number"),
            ("a weight of 0", {"query": [{"text": "a", "weight": 0}]}, 400, "'weight' is 0"),
            ("a weight over 100", {"query": [{"text": "a", "weight": 100.5}]}, 400, "100"),
            ("a weight under -100", {"query": [{"text": "a", "weight": -1e6}]}, 400, "-100"),
            ("a text that is not a string", {"query": [{"text": 3}]}, 400, "'text' must be"),
            ("a text over 4,096 bytes", {"query": [{"text": "a" * 4097}]}, 400, "4096"),
            ("image_id 0", {"query": [{"image_id": 0}]}, 400, "query[0]: 'image_id'"),
            ("image_id a string", {"query": [{"image_id": "1"}]}, 400, "query[0]: 'image_id'"),
            ("an unknown image_id: 404 as the single form", {"query": [{"text": "a"},
                                                                      {"image_id": 999999}]},
             404, "query[1]: no image 999999"),
            ("image_b64 that is not base64", {"query": [{"image_b64": "%%%"}]}, 400, "query[0]"),
            ("image_b64 that is not an image", {"query": [{"image_b64": base64.b64encode(
                b"hello there").decode()}]}, 415, "query[0]"),
            ("5 image_b64 terms (checked before any decode)",
             {"query": [{"image_b64": "not base64!"}] * 5}, 400, "at most 4"),
            ("17 terms", {"query": [{"text": "t%d" % i} for i in range(17)]}, 400, "at most 16"),
            ("terms that cancel out", {"query": [{"text": "a horse"},
                                                 {"text": "a horse", "weight": -1}]}, 400, "cancel"),
            ("weighted terms that cancel out", {"query": [{"text": "a horse", "weight": 2},
                                                          {"text": "a horse", "weight": -1},
                                                          {"text": "a horse", "weight": -1}]},
             400, "cancel"),
            ("'query' with 'text'", {"query": [{"text": "a"}], "text": "b"}, 400, "not both"),
            ("'query' with 'image_id'", {"query": [{"text": "a"}], "image_id": s.hid}, 400,
             "not both"),
            ("'query' with 'image_b64'", {"query": [{"text": "a"}], "image_b64": b64["page.png"]},
             400, "not both"),
            ("'query' in mode keyword", {"query": [{"text": "a"}], "mode": "keyword"}, 400,
             "vector search"),
            ("'query' in mode hybrid", {"query": [{"text": "a"}], "mode": "hybrid"}, 400,
             "vector search"),
        ]
        for label, body, status, needle in cases:
            r = d.post("/v1/search", body)
            ok(r.status == status and needle in r.err_msg(),
               "%s: %d naming it (%r)" % (label, status, r.err_msg()[:90]), r)
        # JSON cannot carry NaN or infinity; a number too large for a
        # double is refused as malformed JSON before a term is read.
        r = d.post("/v1/search", b'{"query": [{"text": "a", "weight": 1e999}]}',
                   ctype="application/json")
        ok(r.status == 400, "a weight of 1e999: 400 (%r)" % r.err_msg()[:80], r)
        r = d.post("/v1/search", b'{"query": [{"text": "a", "weight": NaN}]}',
                   ctype="application/json")
        ok(r.status == 400, "a weight of NaN: 400 (%r)" % r.err_msg()[:80], r)
        after = d.get("/v1/stats").json
        ok(before["images"] == after["images"] and before["texts"] == after["texts"],
           "the refused queries changed nothing", (before, after))
        r = d.post("/v1/search", {"query": [{"text": "a horse"}, {"text": "grass", "weight": -1}],
                                  "k": 7})
        ok(r.status == 200 and len(r.json["results"]) == 7, "the daemon still answers", r)
    finally:
        e2e.stop_checked(d, "query daemon")


def main():
    return e2e.run_tests('clipd-e2e-query-', [test_query_terms])


if __name__ == "__main__":
    sys.exit(main())
