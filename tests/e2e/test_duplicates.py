#!/usr/bin/env python3
"""End-to-end: near-duplicate groups (GET /v1/duplicates) and a search's
"exclude_duplicates", on the real daemon with the reference kit's model
(tiny-clip-a, f32).

Near duplicates whose embeddings are known without trusting the model:
copies of a reference photo that differ in their bytes but not in their
pixels (a PNG text chunk added), which embed to the same vector (cosine 1
up to rounding); the same bytes uploaded twice are one image (the store's
content hash). Thresholds between two distinct photos are taken from the
daemon's own image-to-image scores, so the checks hold for any model.
Groups, their order and members, pagination, exclude_duplicates (the best
member kept, with and without a filter), a delete changing the groups, and
every refused parameter (400 naming it). TAP output.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, png_chunk, multipart, Daemon, REF  # noqa: E402


def variant(png, tag):
    """png with a tEXt chunk after IHDR: other bytes, the same pixels."""
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + png_chunk(b"tEXt", b"Comment\0" + tag.encode()) + png[ihdr_end:]


def read_ref(name):
    with open(os.path.join(REF, "images", name), "rb") as fh:
        return fh.read()


def ingest(d, files):
    """files: [(name, bytes, meta or None)] in one multipart request each
    (meta needs its own upload); returns {name: id} once indexed."""
    ids = {}
    for name, data, meta in files:
        fields = [("meta", meta)] if meta else []
        body, ctype = multipart(fields, [("image", name, data, "image/png")])
        r = d.post("/v1/images?wait=true", body, ctype=ctype)
        if r.status != 200:
            ok(False, "upload %s" % name, r)
            continue
        ids[name] = r.json["id"]
    return ids


def dups(d, query=""):
    return d.get("/v1/duplicates" + query)


def group_ids(r):
    return [[it["id"] for it in g["items"]] for g in r.json["groups"]] if r.status == 200 else None


def score_between(d, a, b):
    """The daemon's cosine between stored images a and b."""
    r = d.post("/v1/search", {"image_id": a, "k": 1000})
    for it in r.json["results"] if r.status == 200 else []:
        if it["id"] == b:
            return it["score"]
    return None


def test_duplicates(tmp):
    d = Daemon("dups", os.path.join(tmp, "data"), ["--precision", "f32"])
    if not ok(d.start(), "clipd starts"):
        return
    try:
        run(d)
    finally:
        ok(d.stop() == 0, "SIGTERM exit 0")


def run(d):
    astro, chelsea = read_ref("astronaut.png"), read_ref("chelsea.png")
    distinct = ["coffee.png", "horse.png", "page.png", "000000039769.png"]
    files = [("astronaut.png", astro, None), ("astronaut-b.png", variant(astro, "b"), None),
             ("astronaut-c.png", variant(astro, "c"), '{"album": "c"}'),
             ("chelsea.png", chelsea, None), ("chelsea-b.png", variant(chelsea, "b"), None)]
    files += [(n, read_ref(n), None) for n in distinct]
    ids = ingest(d, files)
    if not ok(len(ids) == len(files), "%d images uploaded and indexed" % len(files), ids):
        return
    again = ingest(d, [("astronaut-again.png", astro, None)])
    ok(again.get("astronaut-again.png") == ids["astronaut.png"],
       "the same bytes again are the same image: byte duplicates are merged by the store", again)

    A = [ids["astronaut.png"], ids["astronaut-b.png"], ids["astronaut-c.png"]]
    C = [ids["chelsea.png"], ids["chelsea-b.png"]]
    # The highest cosine between two distinct photos: above it they stay
    # apart, just below it they join.
    photos = [ids[n] for n in distinct] + [A[0], C[0]]
    pairs = [(score_between(d, x, y), x, y) for i, x in enumerate(photos) for y in photos[i + 1:]]
    ok(all(p[0] is not None for p in pairs), "image-to-image scores of the distinct photos", pairs)
    top, px, py = max(pairs)
    e2e.diag("highest cosine between distinct photos: %.4f (%d, %d)" % (top, px, py))
    strict = min(1.0, max(0.5, top + 0.002))
    ok(top < 0.999, "distinct photos are below 0.999 (copies are at 1)", top)

    r = dups(d, "?threshold=0.999")
    ok(r.status == 200 and group_ids(r) == [A, C] and r.json["total_groups"] == 2 and
       r.json["grouped_images"] == 5 and r.json["images"] == len(files) and
       r.json["threshold"] == 0.999,
       "threshold 0.999: the three astronaut copies, then the two chelsea copies; ids ascending",
       r)
    items = r.json["groups"][0]["items"] if r.status == 200 else []
    ok(all("thumbnail_url" in it and "sha256" in it for it in items) and
       r.json["groups"][0]["size"] == 3 and r.json["groups"][0]["items_truncated"] is False,
       "each member is the image's JSON (thumbnail, hash); size and items_truncated", items)
    r1 = dups(d, "?threshold=0.999")
    ok(r1.status == 200 and group_ids(r1) == [A, C] and
       r1.json["compute_ms"] == r.json["compute_ms"], "asked again: the cached grouping", r1)
    r = dups(d, "?threshold=1")
    ok(r.status == 200 and group_ids(r) == [A, C], "threshold 1 still joins identical pixels", r)
    r = dups(d)
    ok(r.status == 200 and r.json["threshold"] == 0.95, "the default threshold is 0.95", r)

    # Pagination.
    p0, p1, p2 = (dups(d, "?threshold=0.999&limit=1&offset=%d" % o) for o in (0, 1, 2))
    ok(group_ids(p0) == [A] and group_ids(p1) == [C] and group_ids(p2) == [] and
       all(p.json["total_groups"] == 2 and p.json["limit"] == 1 for p in (p0, p1, p2)),
       "limit=1: one group a page, largest first; past the end an empty page", (p0, p1, p2))

    # The threshold decides: two distinct photos at cosine `top` join just
    # below it (a chain through their copies when they have some).
    if top - 0.002 >= 0.5:
        loose = top - 0.002
        r = dups(d, "?threshold=%.6f" % loose)
        g = group_ids(r) or []
        joined = [x for x in g if px in x and py in x]
        ok(r.status == 200 and joined, "threshold %.4f: the two closest photos share a group" %
           loose, r)
        r = dups(d, "?threshold=%.6f" % strict)
        g = group_ids(r) or []
        ok(r.status == 200 and not [x for x in g if px in x and py in x] and A in g and C in g,
           "threshold %.4f: they do not, the copies still do" % strict, r)
    else:
        e2e.skip("the closest distinct photos are below cosine 0.502 with this model")
        e2e.skip("(idem)")

    # exclude_duplicates: one image per group, the best-scoring.
    q = {"image_id": A[0], "k": 20}
    full = d.post("/v1/search", q)
    ex = d.post("/v1/search", dict(q, exclude_duplicates=True, duplicate_threshold=0.999))
    got = [it["id"] for it in ex.json["results"]] if ex.status == 200 else []
    all_ids = [it["id"] for it in full.json["results"]] if full.status == 200 else []
    ok(full.status == 200 and len(all_ids) == len(files), "search without exclusion: every image",
       full)
    ok(ex.status == 200 and len([x for x in got if x in A]) == 1 and
       len([x for x in got if x in C]) == 1 and len(got) == len(files) - 3,
       "exclude_duplicates: one astronaut, one chelsea, every other image", ex)
    # Walking the full ranking, best first, keeping each group's first.
    want, seen = [], set()
    for x in all_ids:
        g = "A" if x in A else "C" if x in C else x
        if g not in seen:
            seen.add(g)
            want.append(x)
    ok(got == want, "the member kept is the best-scoring one, in its place in the ranking",
       (got, all_ids))
    ex = d.post("/v1/search", dict(q, exclude_duplicates=True, duplicate_threshold=0.999,
                                   filter={"album": "c"}))
    ok(ex.status == 200 and [it["id"] for it in ex.json["results"]] == [A[2]],
       "with a filter: the group's member that passes it is kept", ex)
    ex = d.post("/v1/search", dict(q, exclude_duplicates=True, duplicate_threshold=0.999, k=2,
                                   offset=1))
    ok(ex.status == 200 and len(ex.json["results"]) == 2 and
       [it["id"] for it in ex.json["results"]] == got[1:3],
       "with offset and k: the pages of the collapsed ranking", ex)
    if top - 0.002 >= 0.5:
        ex = d.post("/v1/search", dict(q, k=50, exclude_duplicates=True,
                                       duplicate_threshold=top - 0.002))
        got2 = [it["id"] for it in ex.json["results"]] if ex.status == 200 else []
        ok(ex.status == 200 and not (px in got2 and py in got2),
           "duplicate_threshold below the closest photos: only one of them is kept", ex)
    # At the default threshold (0.95) this model joins some distinct photos
    # too: one result per group of GET /v1/duplicates, every image covered.
    ex = d.post("/v1/search", {"text": "a photo", "k": 20, "exclude_duplicates": True})
    groups = group_ids(dups(d, "?limit=100")) or []
    group_of = {x: i for i, g in enumerate(groups) for x in g}
    got = [it["id"] for it in ex.json["results"]] if ex.status == 200 else []
    keys = [group_of.get(x, "own%d" % x) for x in got]
    ok(ex.status == 200 and len(set(keys)) == len(keys) and
       set(keys) == {group_of.get(x, "own%d" % x) for x in all_ids},
       "text search, exclude_duplicates at the default threshold: one image of each of the %d "
       "groups, every other image" % len(groups), (got, groups))

    # A delete changes the groups at once.
    r = d.delete("/v1/images/%d" % A[1])
    ok(r.status in (200, 204), "delete one astronaut copy", r)
    r = dups(d, "?threshold=0.999")
    ok(r.status == 200 and group_ids(r) == [[A[0], A[2]], C] and
       r.json["images"] == len(files) - 1, "after the delete: the astronaut group has two", r)
    r = d.delete("/v1/images/%d" % C[1])
    r = dups(d, "?threshold=0.999")
    ok(r.status == 200 and group_ids(r) == [[A[0], A[2]]] and r.json["total_groups"] == 1,
       "a group left with one image is no group", r)

    # Bad input: 400 naming the parameter; nothing changes.
    for query, name in [("?threshold=0.4", "threshold"), ("?threshold=1.01", "threshold"),
                        ("?threshold=abc", "threshold"), ("?threshold=nan", "threshold"),
                        ("?threshold=", "threshold"), ("?threshold=0.9x", "threshold"),
                        ("?limit=0", "limit"), ("?limit=101", "limit"), ("?limit=x", "limit"),
                        ("?offset=-1", "offset"), ("?offset=1.5", "offset")]:
        r = dups(d, query)
        ok(r.status == 400 and r.err_code() == "bad_request" and name in r.err_msg(),
           "GET /v1/duplicates%s: 400 naming '%s'" % (query, name), r)
    r = dups(d, "?limit=100")
    ok(r.status == 200, "limit=100 is served", r)
    for body, name in [({"exclude_duplicates": "yes"}, "exclude_duplicates"),
                       ({"exclude_duplicates": True, "duplicate_threshold": 0.3},
                        "duplicate_threshold"),
                       ({"exclude_duplicates": True, "duplicate_threshold": "high"},
                        "duplicate_threshold"),
                       ({"duplicate_threshold": 2}, "duplicate_threshold"),
                       ({"exclude_duplicates": True, "collection": "texts"}, "exclude_duplicates")]:
        r = d.post("/v1/search", dict({"text": "a photo"}, **body))
        ok(r.status == 400 and name in r.err_msg(), "search %s: 400 naming '%s'" % (body, name), r)
    r = dups(d, "?threshold=0.999")
    ok(r.status == 200 and group_ids(r) == [[A[0], A[2]]], "the refused requests changed nothing",
       r)


def main():
    return e2e.run_tests("clipd-e2e-dups-", [test_duplicates])


if __name__ == "__main__":
    sys.exit(main())
