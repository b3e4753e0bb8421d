#!/usr/bin/env python3
"""End-to-end: --precision bf16 and int8 rank the reference kit's images as
expected.json within their own bounds (the unit tests measure the
embeddings' cosines); a CPU that cannot run one skips it with the reason.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, skip, diag, multipart, Daemon, run_clipd, REF, MODEL  # noqa: E402


# ---- --precision: bf16 and int8 against the reference kit -------------------------

# Score bounds for the low precisions: the model tests measure cosine >= 0.999
# (bf16) and >= 0.995 (int8) between their embeddings and float32's; a score
# is a cosine of two such embeddings.
PRECISION_TOL = {"bf16": 0.01, "int8": 0.03}


def test_precisions(tmp):
    expected = e2e.load_expected()
    ref_images = [im["file"] for im in expected["images"]]
    texts = [t["text"] for t in expected["texts"]]
    L = expected["logits_per_image"]
    scale = expected["logit_scale"]

    rc, err = run_clipd(["--model", MODEL, "--data", os.path.join(tmp, "p-bad"),
                         "--precision", "fp16"])
    ok(rc == 2 and "--precision: 'fp16' is not auto, f32, bf16 or int8" in err,
       "--precision fp16: exit 2 naming the allowed values", err)

    files = []
    for f in ref_images:
        with open(os.path.join(REF, "images", f), "rb") as fh:
            files.append(("file", f, fh.read(), "image/jpeg" if f.endswith(".jpg") else "image/png"))
    body, ctype = multipart([], files)
    for prec, tol in sorted(PRECISION_TOL.items()):
        d = Daemon("prec-" + prec, os.path.join(tmp, "data-" + prec), ["--precision", prec])
        if not d.start(expect_fail=True):
            if "cannot run here" in d.log():
                skip("--precision %s: this CPU cannot run it (%s)" %
                     (prec, d.log().strip().splitlines()[-1]))
            else:
                ok(False, "clipd --precision %s starts" % prec, d.log())
            continue
        try:
            r = d.get("/v1/stats")
            ok(r.status == 200 and r.json["model"]["precision"] == prec,
               "--precision %s: GET /v1/stats reports it" % prec, r)
            r = d.post("/v1/ingest", body, ctype=ctype)
            job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
            names = {it["id"]: it["name"] for it in (r.json or {}).get("items", [])}
            ok(job is not None and job["done"] == len(ref_images),
               "--precision %s: the reference images are indexed" % prec, job)
            worst, bad = 0.0, []
            for t_i, text in enumerate(texts):
                r = d.post("/v1/search", {"text": text, "k": len(ref_images)})
                if r.status != 200:
                    bad.append("text %d: HTTP %d" % (t_i, r.status))
                    continue
                got = [(names.get(x["id"], "?"), x["score"]) for x in r.json["results"]]
                want = {ref_images[i]: L[i][t_i] / scale for i in range(len(ref_images))}
                for name, score in got:
                    worst = max(worst, abs(score - want[name]))
                    if abs(score - want[name]) > tol:
                        bad.append("text %d %r: score %.4f, expected %.4f" %
                                   (t_i, name, score, want[name]))
                for (a, _), (b, _) in zip(got, got[1:]):
                    if want[a] < want[b] - 2 * tol:
                        bad.append("text %d: %r ranked above %r" % (t_i, a, b))
            diag("--precision %s: largest score error %.4f" % (prec, worst))
            ok(not bad, "--precision %s: every text ranks the images as expected.json "
               "(scores within %g)" % (prec, tol), "\n".join(bad))
        finally:
            ok(d.stop() == 0, "--precision %s daemon: SIGTERM exit 0" % prec)


def main():
    return e2e.run_tests('clipd-e2e-precision-', [test_precisions])


if __name__ == "__main__":
    sys.exit(main())
