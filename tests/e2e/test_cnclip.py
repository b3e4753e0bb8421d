#!/usr/bin/env python3
"""End-to-end: clipd on a Chinese-CLIP checkpoint ($CLIPD_REFERENCE/tiny-cn-clip-a,
transformers' ChineseCLIPModel with the real 21,128-entry vocabulary; see its
README).

The 7 reference images ingested, then every reference text (Chinese,
traditional and simplified, mixed scripts, full-width forms, emoji, ...)
ranks them as expected.json's logits say (scores = logits / logit_scale
within SCORE_TOL); classify with Chinese labels gives the softmax of
expected.json's logits over them; without templates, classify uses the
model's own prompt ("{}的照片"), checked against /v1/embed of the filled
prompts; embed returns the reference text embeddings normalised.

The real clipd on 127.0.0.1 through test_e2e.py's harness; TAP output.
"""
import base64
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, Daemon, REF, softmax, norm  # noqa: E402

KIT = os.path.join(REF, "tiny-cn-clip-a")


def test_cnclip(tmp):
    with open(os.path.join(KIT, "expected.json")) as fh:
        exp = json.load(fh)
    scale = exp["logit_scale"]
    images = [im["file"] for im in exp["images"]]
    texts = [t["text"] for t in exp["texts"]]
    L = exp["logits_per_image"]
    model = os.path.join(tmp, "model")
    shutil.copytree(KIT, model)
    d = Daemon("cnclip", os.path.join(tmp, "data"), ["--precision", "f32"], model=model)
    if not ok(d.start(), "clipd starts on tiny-cn-clip-a"):
        return
    try:
        r = d.get("/v1/stats")
        ok(r.status == 200 and r.json["model"]["dim"] == 32 and
           r.json["model"].get("family") == "clip", "/v1/stats: dim 32, family clip", r)
        ids = e2e.ingest_reference_images(d, images)
        names = {v: k for k, v in ids.items()}

        bad = []
        for t_i, text in enumerate(texts):
            r = d.post("/v1/search", {"text": text, "k": 7})
            if r.status != 200:
                bad.append("text %d: %r" % (t_i, r))
                continue
            got = [(names.get(x["id"], "?"), x["score"]) for x in r.json["results"]]
            want = {images[i]: L[i][t_i] / scale for i in range(len(images))}
            p = e2e.cosine_ranking_problems(got, want)
            if p:
                bad.append("text %d (%r): %s" % (t_i, text[:20], "; ".join(p)))
        ok(not bad, "search: all %d texts rank the images as expected.json" % len(texts),
           "\n".join(bad))

        # Classify with Chinese labels, one template "{}": the label is the text.
        labels = [t for t in texts if t in ("杰尼龟", "妙蛙种子", "小火龙", "皮卡丘")]
        i_i = images.index("horse.png")
        r = d.post("/v1/classify", {"image_id": ids.get("horse.png"), "labels": labels,
                                    "templates": ["{}"]})
        if ok(r.status == 200 and r.json.get("probabilities") == "softmax" and len(labels) == 4,
              "classify with Chinese labels", r):
            got = {x["label"]: x["prob"] for x in r.json["labels"]}
            want = dict(zip(labels, softmax([L[i_i][texts.index(t)] for t in labels])))
            worst = max(abs(got[t] - want[t]) for t in labels)
            ok(worst <= 1e-3, "classify: softmax of expected.json's logits (max diff %.2e)" % worst,
               json.dumps({"got": got, "want": want}, ensure_ascii=False))

        # No templates: the model's own prompt, 的照片.
        r = d.post("/v1/classify", {"image_id": ids.get("horse.png"), "labels": labels})
        e = d.post("/v1/embed", {"texts": [t + "的照片" for t in labels]})
        with open(os.path.join(REF, "images", "horse.png"), "rb") as fh:
            horse = base64.b64encode(fh.read()).decode()
        im = d.post("/v1/embed", {"images_b64": [horse]})
        if ok(r.status == 200 and e.status == 200, "classify without templates; embed the prompts",
              (r, e)):
            got = {x["label"]: x["score"] for x in r.json["labels"]}
            iv = im.json["images"][0] if im.status == 200 else []
            want = {t: sum(a * b for a, b in zip(iv, v)) for t, v in zip(labels, e.json["texts"])}
            worst = max(abs(got[t] - want[t]) for t in labels)
            ok(im.status == 200 and worst <= 1e-4,
               "classify's default template is 的照片 (max diff %.2e)" % worst, im)

        r = d.post("/v1/embed", {"texts": [texts[0]]})
        if ok(r.status == 200, "POST /v1/embed a Chinese text", r):
            v = r.json["texts"][0]
            w = norm(exp["texts"][0]["embedding"])
            worst = max(abs(a - b) for a, b in zip(v, w))
            ok(len(v) == 32 and worst <= 1e-3, "embed text: the reference embedding (%.2e)" % worst)
    finally:
        e2e.stop_checked(d, "cnclip daemon")


if __name__ == "__main__":
    sys.exit(e2e.run_tests("clipd-cnclip.", [test_cnclip], need=[KIT]))
