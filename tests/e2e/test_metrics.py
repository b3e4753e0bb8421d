#!/usr/bin/env python3
"""End-to-end: GET /metrics: the Prometheus exposition parses, every family
is there with its type, counters and histograms move by the requests made,
and label values stay bounded (router patterns, known methods).

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import base64
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, png_bytes, Daemon, REF, router_routes  # noqa: E402


# -- metrics --

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
BUCKETS = ["0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
           "+Inf"]


def parse_metrics(text):
    """Exposition text -> ({(name, ((label, value), ...)): value}, {family: type}, problems)."""
    samples, types, helps, problems = {}, {}, set(), []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(" ", 3)
            types[fam] = typ
        elif line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
        elif line.startswith("#") or not line.strip():
            continue
        else:
            m = SAMPLE.match(line)
            if not m:
                problems.append("malformed line: %r" % line)
                continue
            labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
            key = (m.group(1), labels)
            if key in samples:
                problems.append("duplicate series: %r" % line)
            try:
                samples[key] = float(m.group(3))
            except ValueError:
                problems.append("bad value: %r" % line)
    for fam in types:
        if fam not in helps:
            problems.append("no HELP for %s" % fam)
    for name, _ in samples:
        fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        if fam not in types:
            problems.append("no TYPE for %s" % name)
    return samples, types, problems


def mval(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def hist_problems(samples, fam):
    """Checks every series of histogram fam: the bucket bounds, cumulative
    counts, +Inf == _count, a _sum."""
    problems, series = [], {}
    for (name, labels), v in samples.items():
        if name == fam + "_bucket":
            rest = tuple(kv for kv in labels if kv[0] != "le")
            le = dict(labels).get("le")
            series.setdefault(rest, {})[le] = v
    for rest, b in series.items():
        if sorted(b, key=lambda x: float(x)) != [x for x in BUCKETS]:
            problems.append("%s%s: buckets %s" % (fam, rest, sorted(b)))
            continue
        counts = [b[x] for x in BUCKETS]
        if counts != sorted(counts):
            problems.append("%s%s: buckets not cumulative %s" % (fam, rest, counts))
        cnt = samples.get((fam + "_count", rest))
        if cnt is None or cnt != counts[-1]:
            problems.append("%s%s: _count %s != +Inf %s" % (fam, rest, cnt, counts[-1]))
        if samples.get((fam + "_sum", rest)) is None or samples[(fam + "_sum", rest)] < 0:
            problems.append("%s%s: no _sum" % (fam, rest))
    return problems, series


def test_metrics(tmp):
    routes, _ = router_routes()
    patterns = {p for _, p, _ in routes}
    d = Daemon("metrics", os.path.join(tmp, "data-metrics"))
    if not ok(d.start(), "clipd starts for the metrics checks"):
        return
    try:
        def scrape():
            r = d.get("/metrics")
            s, t, p = parse_metrics(r.body.decode(errors="replace"))
            return r, s, t, p
        r, m0, types, problems = scrape()
        ok(r.status == 200 and r.headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
           "GET /metrics: 200, text/plain; version=0.0.4", (r.status, r.headers.get("Content-Type")))
        ok(not problems, "the exposition parses: every sample has a TYPE and HELP, no duplicates",
           "\n".join(problems))
        want_types = {"clipd_http_requests_total": "counter",
                      "clipd_http_request_duration_seconds": "histogram",
                      "clipd_queue_depth": "gauge", "clipd_items": "gauge",
                      "clipd_index_vectors": "gauge", "clipd_encode_seconds": "histogram",
                      "clipd_encoded_items_total": "counter"}
        ok(all(types.get(k) == v for k, v in want_types.items()), "every metric family is there",
           types)
        ok(("clipd_queue_depth", ()) in m0 and m0[("clipd_queue_depth", ())] == 0,
           "clipd_queue_depth is 0 on an idle daemon", m0.get(("clipd_queue_depth", ())))
        ok(all(("clipd_index_vectors", (("collection", c),)) in m0 for c in ("images", "texts")) and
           all(("clipd_items", (("collection", c),)) in m0 for c in ("images", "texts")),
           "clipd_items and clipd_index_vectors for both collections")

        for _ in range(3):
            d.get("/v1/stats")
        d.get("/v1/images/99999")
        d.get("/v1/images/99998")
        d.get("/no/such/route")
        d.post("/v1/search", {"text": "a dog"})
        with open(os.path.join(REF, "images", "horse.png"), "rb") as fh:
            horse = fh.read()
        d.post("/v1/search", {"image_b64": base64.b64encode(horse).decode()})
        r = d.post("/v1/images?wait=true", png_bytes(32, 32, 77), ctype="image/png")
        ok(r.status == 200, "an upload is indexed", r)
        r, m1, _, problems = scrape()
        ok(not problems, "the exposition still parses", "\n".join(problems))

        def delta(route, method, code):
            k = dict(route=route, method=method, code=str(code))
            return mval(m1, "clipd_http_requests_total", **k) - mval(m0, "clipd_http_requests_total", **k)
        moves = [("/v1/stats", "GET", 200, 3), ("/v1/images/{id}", "GET", 404, 2),
                 ("unmatched", "GET", 404, 1), ("/v1/search", "POST", 200, 2),
                 ("/v1/images", "POST", 200, 1), ("/metrics", "GET", 200, 1)]
        got = [(rt, mt, c, delta(rt, mt, c)) for rt, mt, c, _ in moves]
        ok(all(g[3] == w[3] for g, w in zip(got, moves)),
           "request counters move by the requests made, keyed by route pattern", got)
        hp, series = hist_problems(m1, "clipd_http_request_duration_seconds")
        ok(not hp and (("route", "/v1/stats"),) in series, "latency histograms are well-formed",
           "\n".join(hp))
        ok(mval(m1, "clipd_http_request_duration_seconds_count", route="/v1/stats") -
           mval(m0, "clipd_http_request_duration_seconds_count", route="/v1/stats") == 3,
           "the /v1/stats histogram counted its 3 requests")
        hp, series = hist_problems(m1, "clipd_encode_seconds")
        ok(not hp and set(series) == {(("tower", "image"),), (("tower", "text"),)},
           "encode histograms are well-formed, one per tower", "\n".join(hp) or series)
        enc = {t: mval(m1, "clipd_encoded_items_total", tower=t) -
               mval(m0, "clipd_encoded_items_total", tower=t) for t in ("image", "text")}
        cnt = {t: mval(m1, "clipd_encode_seconds_count", tower=t) -
               mval(m0, "clipd_encode_seconds_count", tower=t) for t in ("image", "text")}
        ok(enc["text"] >= 1 and cnt["text"] >= 1 and enc["image"] >= 2 and cnt["image"] >= 2,
           "encode counters move: a text query, an image query and a worker batch", (enc, cnt))
        ok(mval(m1, "clipd_items", collection="images") == 1 and
           mval(m1, "clipd_index_vectors", collection="images") == 1,
           "item and index gauges follow the upload")

        # Bounded labels: many distinct URLs and odd methods add no series.
        before = len([k for k in m1 if k[0] == "clipd_http_requests_total"])
        for i in range(25):
            d.get("/v1/images/%d" % (500000 + i))
            d.get("/junk/%d" % i)
            d.request("BREW", "/v1/coffee/%d" % i)
        d.request("PUT", "/v1/images")
        r, m2, _, _ = scrape()
        series = [dict(k[1]) for k in m2 if k[0] == "clipd_http_requests_total"]
        bad = [s for s in series if s.get("route") not in patterns | {"unmatched"} or
               s.get("method") not in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                                       "OTHER") or not re.match(r"^\d{1,3}$", s.get("code", ""))]
        ok(not bad, "label values are bounded: router patterns or 'unmatched', known methods, codes",
           bad)
        ok(len(series) <= before + 4, "75 distinct URLs add at most a few series (%d -> %d)" %
           (before, len(series)), series)
        ok(mval(m2, "clipd_http_requests_total", route="unmatched", method="OTHER", code="404") == 25,
           "unknown methods on unknown routes count as method OTHER, route unmatched")
    finally:
        ok(d.stop() == 0, "metrics daemon: SIGTERM exit 0")


def main():
    return e2e.run_tests('clipd-e2e-metrics-', [test_metrics])


if __name__ == "__main__":
    sys.exit(main())
