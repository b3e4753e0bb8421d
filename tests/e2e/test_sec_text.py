#!/usr/bin/env python3
"""Bounded cost of text requests (issue 12, items 1 and 3), end to end.

The real clipd on 127.0.0.1 with the reference kit's tiny model:
  - /v1/classify: limits on labels, templates and {} per template, with a
    400 naming the limit; the 20 KB request that grew the daemon by 86 MB is
    refused and grows it by little; the prompt cache stays within its byte
    budget; a long classify gives the encoder back between its batches, so
    a search sent meanwhile is answered before it ends (one encoder);
  - search texts, /v1/embed and /v1/texts texts: a length limit with a 400
    naming it; a search text of one 1 MB word grows the daemon by little;
  - filters: bounded keys, values and value sizes, with a clear 400;
  - after every refusal the daemon answers and its data is unchanged.

Memory is the daemon's VmRSS from /proc/PID/status. Output is TAP; the
harness (Daemon, ok, png_bytes, ...) is test_e2e.py's.
"""
import base64
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402

ok = e2e.ok

# The limits the daemon documents (server/routes_*.c).
MAX_LABELS = 1000
MAX_TEMPLATES = 64
MAX_PROMPTS = 8192
MAX_LABEL_BYTES = 1024
MAX_TEMPLATE_BYTES = 256
MAX_TEMPLATE_SLOTS = 4
MAX_QUERY_TEXT_BYTES = 4096
MAX_EMBED_TEXT_BYTES = 65536
MAX_TEXT_BYTES = 65536
MAX_FILTER_KEYS = 16
MAX_FILTER_VALUES = 64
MAX_FILTER_VALUE_BYTES = 1024
PROMPT_CACHE_BYTES = 4 << 20


def rss_ok(cond, name):
    """A memory bound: a real check, except against a daemon built with ASan
    (deploy/test.sh sets CLIPD_SANITIZED=1), whose quarantine and shadow
    memory make VmRSS say nothing about clipd's own allocations."""
    if os.environ.get("CLIPD_SANITIZED") == "1":
        e2e.skip("%s: VmRSS is not clipd's under AddressSanitizer" % name)
        return True
    return ok(cond, name)


def rss_kib(d):
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def refused(r, status, *words):
    """r is status with a JSON error whose message holds every word."""
    msg = r.err_msg()
    return r.status == status and r.err_code() and all(w in msg for w in words)


def image_b64(seed=3):
    return base64.b64encode(e2e.png_bytes(16, 16, seed)).decode()


def state(d):
    s = d.get("/v1/stats").json or {}
    return (s.get("images", {}).get("total"), s.get("texts", {}).get("total"))


def test_classify_limits(d):
    img = image_b64()
    base = state(d)
    # The request: ~20 KB of JSON whose one prompt is the label
    # written 8,000 times (32 MB), tokenized whole.
    label = "cat " * 1024
    before = rss_kib(d)
    r = d.post("/v1/classify", {"image_b64": img, "labels": [label],
                                "templates": ["{}" * 8000]})
    grew = rss_kib(d) - before
    ok(refused(r, 400, "labels[0]", "4096 bytes", str(MAX_LABEL_BYTES)),
       "classify: a 4 KB label is refused with a 400 naming the limit", r)
    r = d.post("/v1/classify", {"image_b64": img, "labels": ["cat"],
                                "templates": ["{}" * 8000]})
    ok(refused(r, 400, "templates[0]", str(MAX_TEMPLATE_BYTES)),
       "classify: a 16 KB template is refused with a 400 naming the limit", r)
    grew = max(grew, rss_kib(d) - before)
    rss_ok(grew < 16 * 1024, "classify: the 20 KB request grew the daemon by %d KiB (< 16 MiB)" % grew)
    e2e.diag("classify, 20 KB request (4 KB label, 8,000 {}): VmRSS +%d KiB" % grew)

    r = d.post("/v1/classify", {"image_b64": img, "labels": ["cat"],
                                "templates": ["{} " * (MAX_TEMPLATE_SLOTS + 1)]})
    ok(refused(r, 400, "templates[0]", "5 {}", "at most %d" % MAX_TEMPLATE_SLOTS),
       "classify: a template with 5 {} is refused", r)
    r = d.post("/v1/classify", {"image_b64": img, "labels": ["cat"], "templates": ["no slot"]})
    ok(refused(r, 400, "templates[0]", "{}"), "classify: a template without {} is refused", r)
    r = d.post("/v1/classify", {"image_b64": img,
                                "labels": ["l%d" % i for i in range(MAX_LABELS + 1)]})
    ok(refused(r, 400, "labels", str(MAX_LABELS)), "classify: 1,001 labels are refused", r)
    r = d.post("/v1/classify", {"image_b64": img, "labels": ["cat"],
                                "templates": ["t%d {}" % i for i in range(MAX_TEMPLATES + 1)]})
    ok(refused(r, 400, "templates", str(MAX_TEMPLATES)), "classify: 65 templates are refused", r)
    r = d.post("/v1/classify", {"image_b64": img, "labels": ["l%d" % i for i in range(200)],
                                "templates": ["t%d {}" % i for i in range(50)]})
    ok(refused(r, 400, "labels x templates", "10000", str(MAX_PROMPTS)),
       "classify: 200 labels x 50 templates are refused", r)
    # The same limits through a multipart form and the query string.
    body, ctype = e2e.multipart([("labels", json.dumps(["x" * (MAX_LABEL_BYTES + 1)]))],
                                [("image", "a.png", e2e.png_bytes(16, 16, 4), "image/png")])
    r = d.post("/v1/classify", body, ctype=ctype)
    ok(refused(r, 400, "labels[0]", str(MAX_LABEL_BYTES)),
       "classify: a long label in a multipart form is refused", r)
    # At the limits: accepted, labels of exactly 256 bytes in templates of
    # 256 bytes with 4 {}.
    lab = ["%03d" % i + "y" * (MAX_LABEL_BYTES - 3) for i in range(3)]
    tpl = ("{} " * MAX_TEMPLATE_SLOTS).ljust(MAX_TEMPLATE_BYTES, "z")
    r = d.post("/v1/classify", {"image_b64": img, "labels": lab, "templates": [tpl, "a {}"]})
    ok(r.status == 200 and sorted(x["label"] for x in r.json["labels"]) == sorted(lab) and
       abs(sum(x["prob"] for x in r.json["labels"]) - 1) < 1e-6,
       "classify: labels and templates at the limits are answered", r)
    r = d.get("/healthz")
    ok(r.status == 200 and state(d) == base, "classify: after the refusals the daemon answers, "
       "its data unchanged", (r, state(d), base))


def test_classify_largest(d):
    """The largest classify allowed: 1,000 labels x 8 templates, all at the
    size limits (8,000 prompts of 4,344 bytes, 35 MB), built and encoded a
    chunk at a time: the daemon grows by the prompt cache's budget and
    little more."""
    img = image_b64(8)
    # The encoders' own buffers (BLAS threads, activations) were allocated
    # by the requests before; this one is to be sure.
    d.post("/v1/classify", {"image_b64": img, "labels": ["%d" % i for i in range(64)]})
    labels = ["big-%04d" % i + "q" * (MAX_LABEL_BYTES - 8) for i in range(MAX_LABELS)]
    tpls = [("%d {} {} {} {} " % i).ljust(MAX_TEMPLATE_BYTES, "z") for i in range(8)]
    before = rss_kib(d)
    r = d.post("/v1/classify", {"image_b64": img, "labels": labels, "templates": tpls},
               timeout=600)
    grew = rss_kib(d) - before
    ok(r.status == 200 and len(r.json["labels"]) == MAX_LABELS,
       "classify: 1,000 labels x 8 templates at the size limits are answered", r)
    rss_ok(grew < PROMPT_CACHE_BYTES // 1024 + 4 * 1024, "classify: the largest request grew the "
       "daemon by %d KiB (< the cache's 4 MiB + 4 MiB)" % grew)
    e2e.diag("classify, 8,000 prompts of 4,344 bytes: VmRSS +%d KiB" % grew)


def test_classify_chunks_match(d):
    """Prompts encoded a chunk at a time give the scores of one by one."""
    img = image_b64(5)
    labels = ["thing %d" % i for i in range(150)]   # 300 prompts: several chunks
    tpls = ["a photo of a {}.", "a drawing of a {}."]
    r = d.post("/v1/classify", {"image_b64": img, "labels": labels, "templates": tpls})
    if not ok(r.status == 200, "classify: 150 labels x 2 templates", r):
        return
    got = {x["label"]: x["score"] for x in r.json["labels"]}
    worst = 0.0
    for lab in labels[::37]:
        r1 = d.post("/v1/classify", {"image_b64": img, "labels": [lab], "templates": tpls})
        worst = max(worst, abs(r1.json["labels"][0]["score"] - got[lab]))
    ok(worst < 1e-6, "classify: scores of a chunked request equal those of single labels "
       "(worst %.2g)" % worst)


def test_prompt_cache_bytes(d):
    img = image_b64(6)
    LABEL = 256   # 1,000 prompts of 1,272 bytes fit the budget, 4,000 do not
    tpl = ("{} " * MAX_TEMPLATE_SLOTS).ljust(MAX_TEMPLATE_BYTES, "z")
    dim = d.get("/v1/stats").json["model"]["dim"]
    plen = MAX_TEMPLATE_SLOTS * LABEL + MAX_TEMPLATE_BYTES - 2 * MAX_TEMPLATE_SLOTS
    worst = 0
    problems = []
    for k in range(4):
        labels = ["c%d-%04d" % (k, i) + "w" * (LABEL - 7) for i in range(MAX_LABELS)]
        r = d.post("/v1/classify", {"image_b64": img, "labels": labels, "templates": [tpl]})
        if r.status != 200:
            problems.append("request %d: %r" % (k, r))
            break
        s = d.get("/v1/stats").json
        n, b = s.get("prompt_cache"), s.get("prompt_cache_bytes")
        if n is None or b is None:
            problems.append("no prompt_cache_bytes in /v1/stats")
            break
        worst = max(worst, b)
        if b > PROMPT_CACHE_BYTES:
            problems.append("after %d requests: %d bytes in the cache" % (k + 1, b))
        if b < n * (1 + 4 * dim):
            problems.append("%d prompts counted for %d bytes" % (n, b))
        # The first 1,000 fit: their texts are counted too.
        if k == 0 and b < MAX_LABELS * (plen + 1 + 4 * dim):
            problems.append("%d prompts, 1,000 of %d bytes, counted for %d bytes" % (n, plen, b))
    ok(not problems, "prompt cache: 4,000 prompts of %d bytes keep it within %d bytes "
       "(at most %d seen)" % (plen, PROMPT_CACHE_BYTES, worst), "\n".join(problems))


def metric(d, name, tower):
    text = d.get("/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith('%s{tower="%s"}' % (name, tower)):
            return float(line.split()[-1])
    return 0.0


def test_encoder_turns(tmp):
    """One encoder: a classify of 8,000 uncached prompts borrows it a batch
    at a time, so a search sent while it runs is encoded before the
    classify's remaining batches (it used to wait for all of them)."""
    # Batches of one: the turns are many and the requests long enough
    # (~1 s for the embed) that a busy machine's scheduling does not decide.
    d = e2e.Daemon("turns", os.path.join(tmp, "data-turns"), ["--encoders", "1", "--batch", "1"])
    if not ok(d.start(), "clipd starts with one encoder and batches of one"):
        return
    try:
        img = image_b64(7)
        labels = ["turn label %d" % i for i in range(1000)]
        tpls = ["a photo of a %d {}." % i for i in range(8)]
        done = {}

        def classify():
            done["classify"] = d.post("/v1/classify", {"image_b64": img, "labels": labels,
                                                      "templates": tpls}, timeout=600)

        items = "clipd_encoded_items_total"
        start = metric(d, items, "text")
        th = threading.Thread(target=classify)
        th.start()
        # Until its first batches are encoded: then it is under way.
        end = time.monotonic() + 60
        while (metric(d, items, "text") < start + 64 and time.monotonic() < end and
               "classify" not in done):
            time.sleep(0.005)
        running = "classify" not in done
        r = d.get("/v1/search?q=a+photo+of+a+dog&k=3")
        at_search = metric(d, items, "text") - start
        th.join()
        rc = done["classify"]
        total = metric(d, items, "text") - start
        ok(running, "the classify was under way when the search was sent")
        ok(rc.status == 200 and len(rc.json["labels"]) == 1000 and total == 8001,
           "the classify of 8,000 prompts is answered", (rc, total))
        ok(r.status == 200 and at_search < 8000, "a search sent during the classify is "
           "encoded before the classify's last batches (%d of 8,001 texts encoded when it "
           "was answered)" % at_search, r)

        # /v1/embed of 1,024 texts: one call to the encoder, a batch at a time.
        texts = ["embed text number %d of many" % i for i in range(1024)]

        def embed():
            done["embed"] = d.post("/v1/embed", {"texts": texts}, timeout=600)

        start = metric(d, items, "text")
        th = threading.Thread(target=embed)
        th.start()
        end = time.monotonic() + 60
        while (metric(d, items, "text") < start + 16 and time.monotonic() < end and
               "embed" not in done):
            time.sleep(0.002)
        running = "embed" not in done
        r = d.get("/v1/search?q=a+photo+of+a+cat&k=3")
        at_search = metric(d, items, "text") - start
        th.join()
        re_ = done["embed"]
        ok(running and re_.status == 200 and len(re_.json["texts"]) == 1024,
           "an embed of 1,024 texts, under way when a search is sent, is answered", re_)
        ok(r.status == 200 and at_search < 1024, "the search is encoded before the embed's last "
           "batches (%d of 1,025 texts encoded when it was answered)" % at_search, r)
    finally:
        d.stop()


def test_text_limits(d):
    base = state(d)
    word = "a" * (1 << 20)
    before = rss_kib(d)
    r = d.post("/v1/search", {"text": word})
    grew = rss_kib(d) - before
    ok(refused(r, 400, "query text", str(1 << 20), str(MAX_QUERY_TEXT_BYTES)),
       "search: a 1 MB text is refused with a 400 naming the limit", r)
    rss_ok(grew < 16 * 1024, "search: the 1 MB one-word text grew the daemon by %d KiB (< 16 MiB)"
       % grew)
    e2e.diag("search, 1 MB one-word text: VmRSS +%d KiB" % grew)
    r = d.post("/v1/search", {"text": "b" * MAX_QUERY_TEXT_BYTES, "k": 3})
    ok(r.status == 200, "search: a one-word text of exactly %d bytes is answered"
       % MAX_QUERY_TEXT_BYTES, r)
    r = d.get("/v1/search?q=" + "c" * (MAX_QUERY_TEXT_BYTES + 1))
    ok(refused(r, 400, "query text", str(MAX_QUERY_TEXT_BYTES)),
       "search: q= over the limit in the URL is refused", r)
    body, ctype = e2e.multipart([("text", "d" * (MAX_QUERY_TEXT_BYTES + 1))], [])
    r = d.post("/v1/search", body, ctype=ctype)
    ok(refused(r, 400, "query text", str(MAX_QUERY_TEXT_BYTES)),
       "search: a form text over the limit is refused", r)

    r = d.post("/v1/embed", {"texts": ["ok", "e" * (MAX_EMBED_TEXT_BYTES + 1)]})
    ok(refused(r, 400, "texts[1]", str(MAX_EMBED_TEXT_BYTES)),
       "embed: a text over the limit is refused with a 400 naming it", r)
    before = rss_kib(d)
    r = d.post("/v1/embed", {"texts": ["f" * MAX_EMBED_TEXT_BYTES] * 16})
    grew = rss_kib(d) - before
    ok(r.status == 200 and len(r.json["texts"]) == 16, "embed: 16 one-word texts of %d bytes "
       "are answered" % MAX_EMBED_TEXT_BYTES, r)
    rss_ok(grew < 16 * 1024, "embed: 16 one-word texts of 64 KB grew the daemon by %d KiB" % grew)

    r = d.post("/v1/texts", {"texts": ["fine", {"text": "g" * (MAX_TEXT_BYTES + 1)}]})
    ok(refused(r, 400, "texts[1]", str(MAX_TEXT_BYTES)),
       "texts: a text over the limit is refused with a 400 naming it", r)
    ok(state(d) == base and d.get("/healthz").status == 200,
       "after the refusals the daemon answers, nothing was stored", (state(d), base))


def test_filter_limits(d):
    meta = {"f%d" % i: i for i in range(MAX_FILTER_KEYS - 1)}
    meta["tag"] = "v7"
    r = d.post("/v1/texts", {"texts": [{"text": "a red kite", "meta": meta},
                                       {"text": "a blue boat", "meta": {"tag": "v9"}}]})
    job = d.wait_job(r.json["job_id"]) if r.status == 202 else None
    ok(job is not None and job["failed"] == 0, "two texts with meta are stored", r)
    q = {"text": "kite", "collection": "texts"}

    def search(flt):
        return d.post("/v1/search", dict(q, filter=flt))

    r = search({"k%d" % i: 1 for i in range(MAX_FILTER_KEYS + 1)})
    ok(refused(r, 400, "filter", "17 fields", str(MAX_FILTER_KEYS)),
       "filter: 17 fields are refused with a 400 naming the limit", r)
    r = search({"tag": ["v%d" % i for i in range(MAX_FILTER_VALUES + 1)]})
    ok(refused(r, 400, "filter 'tag'", "65 values", str(MAX_FILTER_VALUES)),
       "filter: 65 values of one field are refused", r)
    r = search({"tag": ["v7", "x" * (MAX_FILTER_VALUE_BYTES + 1)]})
    ok(refused(r, 400, "filter 'tag'", str(MAX_FILTER_VALUE_BYTES)),
       "filter: a value over %d bytes is refused" % MAX_FILTER_VALUE_BYTES, r)
    r = search({"tag": "x" * (MAX_FILTER_VALUE_BYTES + 1)})
    ok(refused(r, 400, "filter 'tag'", str(MAX_FILTER_VALUE_BYTES)),
       "filter: a single value over the limit is refused", r)
    r = search({"k" * 257: 1})
    ok(refused(r, 400, "field name", "257 bytes"), "filter: a field name over 256 bytes is "
       "refused", r)
    # At the limits: 16 fields of 64 values each; only the text that
    # matches them all.
    flt = {k: [v] + ["w%d" % i for i in range(MAX_FILTER_VALUES - 1)] for k, v in meta.items()}
    flt["tag"][-1] = "y" * MAX_FILTER_VALUE_BYTES
    r = search(flt)
    ok(r.status == 200 and [x["text"] for x in r.json["results"]] == ["a red kite"],
       "filter: fields and values at the limits are answered", r)


def test_with_daemon(tmp):
    d = e2e.Daemon("sec-text", os.path.join(tmp, "data"))
    if ok(d.start(), "clipd starts"):
        try:
            test_prompt_cache_bytes(d)
            test_classify_largest(d)
            test_classify_limits(d)
            test_classify_chunks_match(d)
            test_text_limits(d)
            test_filter_limits(d)
        finally:
            d.stop()


def test_decode_slots(tmp):
    """Request-time decodes are bounded (issue 12, item 4): with one decode
    slot and no wait, image searches sent together get 503 queue_full with
    Retry-After for those that find it taken; with a wait, all are served."""
    bad = e2e.Daemon("decodes0", os.path.join(tmp, "data-decodes0"), ["--max-decodes", "0"])
    started = bad.start(expect_fail=True)
    rc = bad.proc.wait(timeout=60) if not started else bad.stop()
    ok(not started and rc == 2 and "max-decodes" in bad.log(),
       "--max-decodes 0 is a usage error naming the option (exit 2)", (rc, bad.log()[-300:]))
    img = e2e.png_bytes(800, 800, 9700)
    for wait_ms, name in ((0, "decodes-nowait"), (20000, "decodes-wait")):
        d = e2e.Daemon(name, os.path.join(tmp, "data-" + name),
                       ["--max-decodes", "1", "--decode-wait-ms", str(wait_ms)])
        if not ok(d.start(), "clipd starts with --max-decodes 1 --decode-wait-ms %d" % wait_ms):
            continue
        try:
            for _ in range(4):
                results = []
                lock = threading.Lock()

                def search():
                    r = d.post("/v1/search?k=2", img, ctype="image/png", timeout=120)
                    with lock:
                        results.append(r)
                threads = [threading.Thread(target=search) for _ in range(6)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                busy = [r for r in results if r.status == 503]
                if busy or wait_ms:
                    break
            if wait_ms == 0:
                ok(busy and all(r.err_code() == "queue_full" and r.headers.get("Retry-After") and
                                "retry later" in r.err_msg() and "decoded" in r.err_msg()
                                for r in busy),
                   "with the one decode slot taken, an image search gets 503 queue_full with "
                   "Retry-After at once (%d of 6)" % len(busy), busy[:1] or results[:1])
                ok(all(r.status in (200, 503) for r in results), "the others are served",
                   [r.status for r in results])
                r = d.post("/v1/search?k=2", img, ctype="image/png")
                ok(r.status == 200, "once the slot is free, the same search is served", r)
            else:
                ok(len(results) == 6 and all(r.status == 200 for r in results),
                   "with a wait, six image searches sent together on one decode slot are all "
                   "served", [r.status for r in results])
            r = d.get("/v1/search?q=a+cat&k=1")
            ok(r.status == 200, "text searches need no decode slot", r)
        finally:
            ok(d.stop() == 0, "%s daemon: SIGTERM exit 0" % name)


def main():
    return e2e.run_tests("clipd-sec-text-", [test_with_daemon, test_encoder_turns,
                                             test_decode_slots])


if __name__ == "__main__":
    sys.exit(main())
