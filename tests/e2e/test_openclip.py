#!/usr/bin/env python3
"""End-to-end: clipd on a copy of the open_clip kit (tiny-clip-a's weights in
open_clip's own layout, $CLIPD_REFERENCE/tiny-clip-a-openclip) gives the same
search rankings and scores as on tiny-clip-a, both as expected.json says; a
model directory with only a pickle checkpoint stops clipd at start-up with
the message to use the safetensors file.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, diag, multipart, Daemon, run_clipd, check_ranking, REF, MODEL  # noqa: E402

OPENCLIP = os.path.join(REF, "tiny-clip-a-openclip")
# The same weights through the same code: the two daemons' scores agree
# far closer than the oracle's SCORE_TOL.
SAME_TOL = 1e-6


def searches(d, ref_images, texts):
    """Ingests the reference images into d, adds the texts; returns
    ({text index: [(image name, score)]}, {image name: [(text index, score)]},
    model info of /v1/stats)."""
    files = []
    for f in ref_images:
        with open(os.path.join(REF, "images", f), "rb") as fh:
            files.append(("file", f, fh.read(), "image/jpeg" if f.endswith(".jpg") else "image/png"))
    body, ctype = multipart([], files)
    r = d.post("/v1/ingest", body, ctype=ctype)
    job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
    ok(job is not None and job["done"] == len(ref_images) and job["failed"] == 0,
       "%s: the reference images are indexed" % d.name, job or r)
    ids = {it["name"]: it["id"] for it in (r.json or {}).get("items", [])}
    names = {v: k for k, v in ids.items()}
    r = d.post("/v1/texts", {"texts": [{"text": t, "meta": {"i": i}} for i, t in enumerate(texts)]})
    job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
    ok(job is not None and job["done"] == len(texts), "%s: the reference texts are indexed" % d.name,
       job or r)
    text_of = {tid: i for i, tid in enumerate((r.json or {}).get("ids", []))}
    by_text, by_image = {}, {}
    for t_i, text in enumerate(texts):
        r = d.post("/v1/search", {"text": text, "k": len(ref_images)})
        by_text[t_i] = [(names.get(x["id"], "?"), x["score"]) for x in r.json["results"]] \
            if r.status == 200 else r
    for f in ref_images:
        r = d.post("/v1/search", {"image_id": ids.get(f), "collection": "texts", "k": len(texts)})
        by_image[f] = [(text_of.get(x["id"], -1), x["score"]) for x in r.json["results"]] \
            if r.status == 200 else r
    r = d.get("/v1/stats")
    return by_text, by_image, (r.json or {}).get("model", {})


def test_same_as_hugging_face_layout(tmp):
    expected = e2e.load_expected()
    ref_images = [im["file"] for im in expected["images"]]
    texts = [t["text"] for t in expected["texts"]]
    L = expected["logits_per_image"]
    scale = expected["logit_scale"]
    # A copy: clipd reads the model from wherever it is given, and
    # /work/shared stays untouched.
    model = os.path.join(tmp, "tiny-clip-a-openclip")
    shutil.copytree(OPENCLIP, model)

    results = {}
    for name, path in (("hf", MODEL), ("openclip", model)):
        d = Daemon(name, os.path.join(tmp, "data-" + name), ["--precision", "f32"], model=path)
        if not ok(d.start(), "clipd starts on the %s checkpoint" % name):
            return
        try:
            results[name] = searches(d, ref_images, texts)
        finally:
            ok(d.stop() == 0, "%s daemon: SIGTERM exit 0" % name)
    (hf_t, hf_i, hf_m), (oc_t, oc_i, oc_m) = results["hf"], results["openclip"]

    ok(oc_m.get("dim") == 32 and oc_m.get("dim") == hf_m.get("dim") and
       oc_m.get("id") != hf_m.get("id"),
       "GET /v1/stats: the open_clip model has the same dimension, its own fingerprint",
       "%r / %r" % (oc_m, hf_m))

    bad, diffs = [], []
    for t_i in range(len(texts)):
        got = oc_t[t_i]
        if not isinstance(got, list):
            bad.append("text %d: %r" % (t_i, got))
            continue
        want = {ref_images[i]: L[i][t_i] for i in range(len(ref_images))}
        bad += ["text %d: %s" % (t_i, p) for p in check_ranking(got, want, scale)]
        if [n for n, _ in got] != [n for n, _ in hf_t[t_i]]:
            bad.append("text %d: order %s, Hugging Face layout %s" %
                       (t_i, [n for n, _ in got], [n for n, _ in hf_t[t_i]]))
        diffs += [abs(a[1] - b[1]) for a, b in zip(got, hf_t[t_i])]
    ok(not bad, "every text ranks the images as on tiny-clip-a and as expected.json", "\n".join(bad))
    worst = max(diffs) if diffs else float("inf")
    diag("text -> image scores, open_clip vs Hugging Face layout: largest difference %.2e" % worst)
    ok(worst <= SAME_TOL, "text -> image scores equal tiny-clip-a's (within %g)" % SAME_TOL, worst)

    bad, diffs = [], []
    for f in ref_images:
        got, want = oc_i[f], hf_i[f]
        if not isinstance(got, list) or not isinstance(want, list):
            bad.append("%s: %r / %r" % (f, got, want))
            continue
        if [t for t, _ in got] != [t for t, _ in want]:
            bad.append("%s: order %s, Hugging Face layout %s" %
                       (f, [t for t, _ in got], [t for t, _ in want]))
        diffs += [abs(a[1] - b[1]) for a, b in zip(got, want)]
    worst = max(diffs) if diffs else float("inf")
    ok(not bad and worst <= SAME_TOL,
       "image -> text search ranks the texts as on tiny-clip-a, scores within %g" % SAME_TOL,
       "\n".join(bad) + " worst %.2e" % worst)


def test_pickle_only(tmp):
    d = os.path.join(tmp, "pickle")
    os.makedirs(d)
    for f in ("open_clip_config.json", "vocab.json", "merges.txt"):
        shutil.copy(os.path.join(OPENCLIP, f), d)
    with open(os.path.join(d, "open_clip_pytorch_model.bin"), "wb") as fh:
        fh.write(b"\x80\x02" + b"\0" * 64)
    rc, err = run_clipd(["--model", d, "--data", os.path.join(tmp, "data-pickle")])
    ok(rc != 0 and "only a pickle checkpoint (open_clip_pytorch_model.bin)" in err and
       "use the checkpoint's safetensors file" in err,
       "a pickle-only model directory: clipd exits naming the safetensors file to use", err)


def main():
    return e2e.run_tests("clipd-e2e-openclip-", [test_same_as_hugging_face_layout, test_pickle_only],
                         need=(OPENCLIP,), need_msg="CLIPD_BIN, CLIPD_REFERENCE or the open_clip kit missing")


if __name__ == "__main__":
    sys.exit(main())
