#!/usr/bin/env python3
"""End-to-end: clipd on a SigLIP checkpoint ($CLIPD_REFERENCE/tiny-siglip-a,
transformers' SiglipModel; see its README).

The 7 reference images ingested, then every reference text ranks them as
expected.json's logits say (search scores are cosines: (logit - logit_bias)
/ logit_scale, within SCORE_TOL), image -> texts ranks the texts collection
the same way, classify gives each label its own sigmoid probability (not a
softmax: they need not sum to 1) and says so, embed returns the reference
embeddings normalised, and /v1/stats names the family.

The real clipd on 127.0.0.1 through test_e2e.py's harness; TAP output.
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, Daemon, REF, norm  # noqa: E402

KIT = os.path.join(REF, "tiny-siglip-a")


def load():
    with open(os.path.join(KIT, "expected.json")) as fh:
        return json.load(fh)


def test_siglip(tmp):
    exp = load()
    scale, bias = exp["logit_scale"], exp["logit_bias"]
    images = [im["file"] for im in exp["images"]]
    texts = [t["text"] for t in exp["texts"]]
    L = exp["logits_per_image"]
    P = exp["probs_per_image"]
    model = os.path.join(tmp, "model")
    shutil.copytree(KIT, model)
    d = Daemon("siglip", os.path.join(tmp, "data"), ["--precision", "f32"], model=model)
    if not ok(d.start(), "clipd starts on tiny-siglip-a"):
        return
    try:
        r = d.get("/v1/stats")
        ok(r.status == 200 and r.json["model"]["dim"] == 64 and
           r.json["model"].get("family") == "siglip" and
           abs(r.json["model"].get("logit_bias", 0) - bias) < 1e-5,
           "/v1/stats: family siglip, dim 64, the logit bias", r)
        ids = e2e.ingest_reference_images(d, images)
        names = {v: k for k, v in ids.items()}

        # Text -> images: every text's column of logits, as cosines.
        bad = []
        for t_i, text in enumerate(texts):
            r = d.post("/v1/search", {"text": text, "k": 7})
            if r.status != 200:
                bad.append("text %d: %r" % (t_i, r))
                continue
            got = [(names.get(x["id"], "?"), x["score"]) for x in r.json["results"]]
            want = {images[i]: (L[i][t_i] - bias) / scale for i in range(len(images))}
            p = e2e.cosine_ranking_problems(got, want)
            if p:
                bad.append("text %d (%r): %s" % (t_i, text[:30], "; ".join(p)))
        ok(not bad, "search: all %d texts rank the images as expected.json" % len(texts),
           "\n".join(bad))

        # Image -> texts over the texts collection.
        r = d.post("/v1/texts", {"texts": [{"text": t} for t in texts]})
        ok(r.status == 202, "POST /v1/texts with the 23 texts", r)
        tid = r.json["ids"] if r.status == 202 else []
        job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
        ok(job is not None and job["done"] == len(texts), "the texts are embedded", job)
        by_id = {i: n for n, i in zip(range(len(texts)), tid)}
        bad = []
        for i_i, f in enumerate(images):
            r = d.post("/v1/search", {"image_id": ids.get(f), "collection": "texts", "k": 23})
            if r.status != 200:
                bad.append("%s: %r" % (f, r))
                continue
            got = [(by_id.get(x["id"], -1), x["score"]) for x in r.json["results"]]
            # Equal texts (none here) would tie; ranks by the cosine.
            want = {j: (L[i_i][j] - bias) / scale for j in range(len(texts))}
            p = e2e.cosine_ranking_problems(got, want)
            if p:
                bad.append("%s: %s" % (f, "; ".join(p[:3])))
        ok(not bad, "image -> texts: every image ranks the 23 texts as expected.json",
           "\n".join(bad))

        # Classify: sigmoid per label. One template "{}" keeps the label
        # text itself, so the probabilities are expected.json's.
        labels = texts[1:8]
        i_i = images.index("horse.png")
        r = d.post("/v1/classify", {"image_id": ids.get("horse.png"), "labels": labels,
                                    "templates": ["{}"]})
        ok(r.status == 200 and r.json.get("probabilities") == "sigmoid",
           "classify on SigLIP says its probabilities are sigmoids", r)
        if r.status == 200:
            got = {x["label"]: x["prob"] for x in r.json["labels"]}
            want = {t: P[i_i][texts.index(t)] for t in labels}
            worst = max(abs(got[t] - want[t]) for t in labels)
            ok(worst <= 1e-3, "classify: each label's probability is its sigmoid (max diff %.2e)"
               % worst, json.dumps({"got": got, "want": want}, indent=1))
            total = sum(got.values())
            softmaxed = sum(want.values())
            ok(abs(total - softmaxed) < 1e-2 and abs(total - 1) > 1e-2,
               "classify: the probabilities are independent (sum %.3f, not 1)" % total)
            labs = [x["label"] for x in r.json["labels"]]
            ok(labs == sorted(labels, key=lambda t: -want[t]) or worst <= 1e-3,
               "classify: labels ordered by probability", labs)

        # Embed: the text and image embeddings, normalised.
        r = d.post("/v1/embed", {"texts": [texts[4]]})
        if ok(r.status == 200, "POST /v1/embed a text", r):
            v = r.json["texts"][0]
            w = norm(exp["texts"][4]["embedding"])
            worst = max(abs(a - b) for a, b in zip(v, w))
            ok(len(v) == 64 and worst <= 1e-3, "embed text: the reference embedding (%.2e)" % worst)
    finally:
        e2e.stop_checked(d, "siglip daemon")


if __name__ == "__main__":
    sys.exit(e2e.run_tests("clipd-siglip.", [test_siglip], need=[KIT]))
