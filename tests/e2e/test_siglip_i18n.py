#!/usr/bin/env python3
"""End-to-end: clipd on a SigLIP checkpoint of the multilingual model's
vocabulary size (google/siglip-base-patch16-256-multilingual: 250,000
SentencePiece pieces, a token table of 250,000 rows).

The real multilingual weights and spiece.model cannot be fetched here, so
the checkpoint is the reference kit's tiny-siglip-a grown to that size: its
token table extended to 250,000 rows (the new rows random) and its
spiece.model extended to 250,000 pieces by tests/mkspm_i18n.py (pieces for
CJK, kana, Hangul, Cyrillic, Greek, Arabic, Hebrew, Devanagari and Thai; none
with a Latin letter). A text written in the kit's own scripts segments as
before, so its embedding must still be expected.json's (transformers'), and
the images still rank as its logits say: that checks the 250,000-row table
and tokenizer end to end. Texts in a dozen other scripts (ids up to 249,999)
embed to distinct unit vectors, search and classify with labels in three
scripts; keyword search finds captions in Cyrillic and Arabic.

The real clipd on 127.0.0.1 through test_e2e.py's harness; TAP output.
"""
import json
import math
import os
import random
import shutil
import struct
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, Daemon, REF, norm  # noqa: E402
import mkspm_i18n  # noqa: E402

KIT = os.path.join(REF, "tiny-siglip-a")
VOCAB = 250000
TOKENS = "text_model.embeddings.token_embedding.weight"

I18N = ["海滩上的狗", "一只在海滩上奔跑的金毛犬", "海灘上的狗", "ビーチで走る犬", "해변에서 달리는 개",
        "собака бежит по пляжу", "Ο σκύλος τρέχει στην παραλία", "كلب يركض على الشاطئ",
        "כלב רץ על החוף", "समुद्र तट पर दौड़ता कुत्ता", "สุนัขวิ่งบนชายหาด", "佈仭"]


def grow_checkpoint(src, dst):
    """The kit's model.safetensors with its token table grown to VOCAB rows."""
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    meta = header.pop("__metadata__", None)
    r = random.Random(7)
    out_header, parts, off = {}, [], 0
    for name in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
        t = header[name]
        a, b = t["data_offsets"]
        raw = data[a:b]
        shape = list(t["shape"])
        if name == TOKENS:
            assert t["dtype"] == "F32"
            extra = VOCAB - shape[0]
            raw += struct.pack("<%df" % (extra * shape[1]),
                               *(r.gauss(0, 0.02) for _ in range(extra * shape[1])))
            shape[0] = VOCAB
        out_header[name] = {"dtype": t["dtype"], "shape": shape,
                            "data_offsets": [off, off + len(raw)]}
        parts.append(raw)
        off += len(raw)
    if meta:
        out_header["__metadata__"] = meta
    h = json.dumps(out_header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(dst, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for p in parts:
            f.write(p)
    with open(os.path.join(dst, "config.json")) as f:
        cfg = json.load(f)
    cfg["text_config"]["vocab_size"] = VOCAB
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    mkspm_i18n.build(os.path.join(src, "spiece.model"), os.path.join(dst, "spiece.model"),
                     VOCAB, latin=False)


def in_new_scripts(text):
    t = unicodedata.normalize("NFKC", text)
    return any(lo <= ord(c) <= hi for c in t for lo, hi in mkspm_i18n.RANGES)


def test_siglip_i18n(tmp):
    with open(os.path.join(KIT, "expected.json")) as fh:
        exp = json.load(fh)
    scale, bias = exp["logit_scale"], exp["logit_bias"]
    images = [im["file"] for im in exp["images"]]
    L = exp["logits_per_image"]
    model = os.path.join(tmp, "model")
    shutil.copytree(KIT, model)
    os.chmod(model, 0o755)
    for f in os.listdir(model):
        if os.path.isfile(os.path.join(model, f)):
            os.chmod(os.path.join(model, f), 0o644)
    grow_checkpoint(KIT, model)
    d = Daemon("siglip-i18n", os.path.join(tmp, "data"), ["--precision", "f32"], model=model)
    if not ok(d.start(), "clipd starts on the kit grown to 250,000 tokens"):
        return
    try:
        r = d.get("/v1/stats")
        ok(r.status == 200 and r.json["model"].get("family") == "siglip" and
           r.json["model"]["dim"] == 64, "/v1/stats: a SigLIP model of dim 64", r)
        ids = e2e.ingest_reference_images(d, images)
        names = {v: k for k, v in ids.items()}

        same = [(i, t) for i, t in enumerate(exp["texts"]) if not in_new_scripts(t["text"])]
        r = d.post("/v1/embed", {"texts": [t["text"] for _, t in same]})
        if ok(r.status == 200, "embed the %d kit texts in the kit's own scripts" % len(same), r):
            worst = max(max(abs(a - b) for a, b in zip(v, norm(t["embedding"])))
                        for v, (_, t) in zip(r.json["texts"], same))
            ok(worst <= 1e-3 and len(same) >= 18,
               "their embeddings are transformers' through the 250,000-row table (%.2e)" % worst)
        bad = []
        for t_i, t in same:
            r = d.post("/v1/search", {"text": t["text"], "k": 7})
            if r.status != 200:
                bad.append("%r: %r" % (t["text"], r))
                continue
            got = [(names.get(x["id"], "?"), x["score"]) for x in r.json["results"]]
            want = {images[i]: (L[i][t_i] - bias) / scale for i in range(len(images))}
            p = e2e.cosine_ranking_problems(got, want)
            if p:
                bad.append("%r: %s" % (t["text"][:20], "; ".join(p)))
        ok(not bad, "search: those texts rank the images as expected.json", "\n".join(bad))

        r = d.post("/v1/embed", {"texts": I18N})
        if ok(r.status == 200 and len(r.json["texts"]) == len(I18N),
              "embed %d texts in a dozen scripts (ids up to 249,999)" % len(I18N), r):
            vs = r.json["texts"]
            unit = all(abs(sum(x * x for x in v) - 1) < 1e-4 and all(map(math.isfinite, v))
                       for v in vs)
            close = max(sum(a * b for a, b in zip(vs[i], vs[j]))
                        for i in range(len(vs)) for j in range(i))
            ok(unit and close < 0.99999, "unit vectors, no two the same (closest cosine %.5f)" % close)
        bad = [t for t in I18N
               if d.post("/v1/search", {"text": t, "k": 3}).status != 200]
        ok(not bad, "search with each of them", bad)
        labels = ["狗", "собака", "كلب"]
        r = d.post("/v1/classify", {"image_id": ids.get("horse.png"), "labels": labels})
        ok(r.status == 200 and r.json.get("probabilities") == "sigmoid" and
           sorted(x["label"] for x in r.json["labels"]) == sorted(labels),
           "classify with labels in Chinese, Russian and Arabic", r)

        # Captions in other scripts through the keyword index.
        for name, caption in (("horse.png", "лошадь на лугу"), ("rocket.jpg", "صاروخ على منصة الإطلاق")):
            r = d.request("PATCH", "/v1/images/%d" % ids[name], {"meta": {"caption": caption}})
            ok(r.status == 200, "caption %s in its script" % name, r)
        for query, name in (("лугу", "horse.png"), ("صاروخ", "rocket.jpg")):
            r = d.post("/v1/search", {"text": query, "mode": "keyword"})
            got = [names.get(x["id"]) for x in r.json["results"]] if r.status == 200 else r
            ok(got == [name], "keyword %r finds %s" % (query, name), got)
    finally:
        e2e.stop_checked(d, "siglip-i18n daemon")


if __name__ == "__main__":
    sys.exit(e2e.run_tests("clipd-siglip-i18n.", [test_siglip_i18n], need=[KIT]))
