#!/usr/bin/env python3
"""End-to-end: server/openapi.json against the daemon: served as it is in
the repository, every route of server/router.c documented and every
documented operation routed and reached live, responses, security and
request bodies, every error code of server/errors.c named, and each
documented size limit probed at and one past its maximum.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, png_bytes, Daemon, SRC, HTTP_METHODS, router_routes  # noqa: E402


def resolve(doc, node):
    """Follows a local $ref (one level is all this document uses)."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return None
        node = doc
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
    return node


def dangling_refs(doc, node=None, where="#"):
    node = doc if node is None else node
    bad = []
    if isinstance(node, dict):
        if "$ref" in node and resolve(doc, {"$ref": node["$ref"]}) is None:
            bad.append("%s -> %s" % (where, node["$ref"]))
        for k, v in node.items():
            bad += dangling_refs(doc, v, where + "/" + str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            bad += dangling_refs(doc, v, "%s/%d" % (where, i))
    return bad


def schema_at(doc, name, *path):
    """components.schemas[name] followed down path (property names; "[]"
    for an array's items, an int for oneOf's branch)."""
    node = resolve(doc, {"$ref": "#/components/schemas/" + name}) or {}
    for k in path:
        node = resolve(doc, node) or {}
        if k == "[]":
            node = node.get("items", {})
        elif isinstance(k, int):
            node = node.get("oneOf", [{}] * (k + 1))[k]
        else:
            node = node.get("properties", {}).get(k, {})
    return resolve(doc, node) or {}


def test_openapi_limits(d, doc):
    """The documented limits are the daemon's: at each maximum the request
    is served, one past it is refused with a status the operation lists and
    a message naming the number."""
    img = d.post("/v1/images?wait=true", png_bytes(20, 20, 4343), ctype="image/png")
    iid = img.json["id"] if img.status == 200 else 1
    ops = doc["paths"]

    def probe(name, method, path, make, n):
        if not isinstance(n, int):
            ok(False, "%s: the document gives a number" % name, n)
            return
        listed = ops[path][method.lower()]["responses"]
        at = d.request(method, path, make(n))
        over = d.request(method, path, make(n + 1))
        ok(at.status < 300 and str(over.status) in listed and 400 <= over.status < 500 and
           (str(n) in over.err_msg() or format(n, ",") in over.err_msg()),
           "%s: %d is served, %d is refused (%d, listed) naming the limit" %
           (name, n, n + 1, over.status), (at, over))

    probe("search text maxLength", "POST", "/v1/search", lambda n: {"text": "a" * n, "k": 1},
          schema_at(doc, "SearchRequest", "text").get("maxLength"))
    probe("search filter maxProperties", "POST", "/v1/search",
          lambda n: {"text": "a", "filter": {"k%d" % i: "v" for i in range(n)}},
          schema_at(doc, "SearchRequest", "filter").get("maxProperties"))
    probe("search query maxItems", "POST", "/v1/search",
          lambda n: {"query": [{"text": "q%d" % i} for i in range(n)], "k": 1},
          schema_at(doc, "SearchRequest", "query").get("maxItems"))
    probe("search query weight maximum", "POST", "/v1/search",
          lambda n: {"query": [{"text": "a", "weight": n}], "k": 1},
          schema_at(doc, "SearchRequest", "query", "[]", "weight").get("maximum"))
    probe("search query text maxLength", "POST", "/v1/search",
          lambda n: {"query": [{"text": "a" * n}], "k": 1},
          schema_at(doc, "SearchRequest", "query", "[]", "text").get("maxLength"))
    n = next((p["schema"].get("maxLength") for p in ops["/v1/search"]["get"]["parameters"]
              if p["name"] == "q"), None)
    if isinstance(n, int):
        at = d.get("/v1/search?k=1&q=" + "a" * n)
        over = d.get("/v1/search?k=1&q=" + "a" * (n + 1))
        ok(at.status == 200 and 400 <= over.status < 500 and
           (format(n, ",") in over.err_msg() or str(n) in over.err_msg()), "GET /v1/search q maxLength %d: served at it, refused past it" % n,
           (at, over))
    else:
        ok(False, "GET /v1/search q has a maxLength", n)
    params = {p["name"]: p["schema"] for p in ops["/v1/duplicates"]["get"]["parameters"]}
    n = params.get("limit", {}).get("maximum")
    lo = params.get("threshold", {}).get("minimum")
    if isinstance(n, int) and isinstance(lo, (int, float)):
        at = d.get("/v1/duplicates?limit=%d&threshold=%s" % (n, lo))
        over = d.get("/v1/duplicates?limit=%d" % (n + 1))
        under = d.get("/v1/duplicates?threshold=%s" % (lo - 0.01))
        ok(at.status == 200 and over.status == 400 and str(n) in over.err_msg() and
           under.status == 400 and str(lo) in under.err_msg(),
           "GET /v1/duplicates limit maximum %d and threshold minimum %s: served at them, refused "
           "past them naming the limit" % (n, lo), (at, over, under))
    else:
        ok(False, "GET /v1/duplicates documents limit's maximum and threshold's minimum", params)
    probe("classify labels maxItems", "POST", "/v1/classify",
          lambda n: {"image_id": iid, "labels": ["l%d" % i for i in range(n)]},
          schema_at(doc, "ClassifyRequest", "labels").get("maxItems"))
    probe("classify label maxLength", "POST", "/v1/classify",
          lambda n: {"image_id": iid, "labels": ["b" * n, "c"]},
          schema_at(doc, "ClassifyRequest", "labels", "[]").get("maxLength"))
    probe("classify templates maxItems", "POST", "/v1/classify",
          lambda n: {"image_id": iid, "labels": ["x"], "templates": ["t%d {}" % i for i in range(n)]},
          schema_at(doc, "ClassifyRequest", "templates").get("maxItems"))
    probe("classify template maxLength", "POST", "/v1/classify",
          lambda n: {"image_id": iid, "labels": ["x"], "templates": ["{}" + "t" * (n - 2)]},
          schema_at(doc, "ClassifyRequest", "templates", "[]").get("maxLength"))
    probe("embed texts maxItems", "POST", "/v1/embed", lambda n: {"texts": ["e"] * n},
          schema_at(doc, "EmbedRequest", "texts").get("maxItems"))
    probe("embed text maxLength", "POST", "/v1/embed", lambda n: {"texts": ["e" * n]},
          schema_at(doc, "EmbedRequest", "texts", "[]").get("maxLength"))
    probe("texts text maxLength", "POST", "/v1/texts", lambda n: {"texts": ["t" * n]},
          schema_at(doc, "TextsRequest", "texts", "[]", 0).get("maxLength"))
    probe("texts maxItems", "POST", "/v1/texts", lambda n: {"texts": ["s%d" % i for i in range(n)]},
          schema_at(doc, "TextsRequest", "texts").get("maxItems"))


def test_openapi(tmp):
    routes, odd = router_routes()
    ok(routes and not odd, "server/router.c: every line of the route table parses (%d routes)" %
       len(routes), "\n".join(odd))
    d = Daemon("openapi", os.path.join(tmp, "data-openapi"))
    if not ok(d.start(), "clipd starts for the OpenAPI checks"):
        return
    try:
        r = d.get("/openapi.json")
        doc = r.json
        ok(r.status == 200 and r.headers.get("Content-Type", "").startswith("application/json") and
           isinstance(doc, dict), "GET /openapi.json: 200, JSON", r)
        if not isinstance(doc, dict):
            return
        with open(os.path.join(SRC, "server", "openapi.json"), "rb") as fh:
            ok(fh.read() == r.body, "the served document is server/openapi.json as it is in the repo")
        ok(re.match(r"^3\.\d+\.\d+$", str(doc.get("openapi"))) and doc.get("info", {}).get("title")
           and isinstance(doc.get("paths"), dict), "an OpenAPI 3.x document with info and paths",
           doc.get("openapi"))
        bad = dangling_refs(doc)
        ok(not bad, "every $ref of the document resolves", "\n".join(bad))

        documented = {}
        for path, item in doc.get("paths", {}).items():
            for m, o in item.items():
                if m in HTTP_METHODS:
                    documented[(m.upper(), path)] = (item, o)
        served = {(m, p): w for m, p, w in routes}
        missing = sorted(set(served) - set(documented))
        extra = sorted(set(documented) - set(served))
        ok(not missing, "every route of router.c is in the OpenAPI document",
           "undocumented: %s" % missing)
        ok(not extra, "every route of the OpenAPI document is in router.c",
           "documented, not routed: %s" % extra)

        schemes = doc.get("components", {}).get("securitySchemes", {})
        bearer = [n for n, s in schemes.items() if s.get("type") == "http" and
                  str(s.get("scheme", "")).lower() == "bearer"]
        ok(bearer, "a bearer security scheme is defined", schemes)
        err = resolve(doc, {"$ref": "#/components/schemas/Error"}) or {}
        inner = err.get("properties", {}).get("error", {})
        ok(set(inner.get("properties", {})) >= {"code", "message"} and
           set(inner.get("required", [])) >= {"code", "message"} and "error" in err.get("required", []),
           "the Error schema is {\"error\": {\"code\", \"message\"}}", err)

        problems = []
        for (m, path), (item, o) in sorted(documented.items()):
            name = "%s %s" % (m, path)
            params = [resolve(doc, p) or {} for p in item.get("parameters", []) + o.get("parameters", [])]
            for var in re.findall(r"\{(\w+)\}", path):
                if not any(p.get("in") == "path" and p.get("name") == var and p.get("required")
                           for p in params):
                    problems.append("%s: path parameter {%s} is not declared" % (name, var))
            responses = o.get("responses", {})
            if not any(str(c).startswith("2") for c in responses):
                problems.append("%s: no 2xx response" % name)
            if path.startswith("/v1/"):
                errs = [c for c in responses if str(c)[0] in "45"]
                if not errs:
                    problems.append("%s: no error response" % name)
                for c in errs:
                    resp = resolve(doc, responses[c]) or {}
                    schema = resp.get("content", {}).get("application/json", {}).get("schema", {})
                    if schema.get("$ref") != "#/components/schemas/Error":
                        problems.append("%s: response %s is not the Error schema" % (name, c))
            sec = o.get("security", doc.get("security"))
            if served.get((m, path)):
                if not sec or any(not s for s in sec) or not all(set(s) <= set(bearer) for s in sec):
                    problems.append("%s: writes, but its security does not require the bearer key" % name)
            if (m in ("POST", "PATCH") and "requestBody" not in o):
                problems.append("%s: no requestBody" % name)
        ok(not problems, "every operation: path parameters, 2xx and Error responses, security, bodies",
           "\n".join(problems))

        # Every error code the daemon can send (server/errors.c's table) is
        # named in the Error schema, and every route behind the Host check
        # documents its 403.
        with open(os.path.join(SRC, "server", "errors.c")) as fh:
            codes = set(re.findall(r'^\s*\{ERR_\w+, \w+, \d+, "(\w+)"\}', fh.read(), re.M))
        listed = set(re.findall(r"\w+", inner.get("properties", {}).get("code", {})
                                .get("description", "")))
        ok(codes and codes <= listed, "every code of server/errors.c is in the Error schema",
           sorted(codes - listed))
        no403 = ["%s %s" % k for k, (item, o) in sorted(documented.items())
                 if k[1] not in ("/healthz", "/readyz") and "403" not in o.get("responses", {})]
        ok(not no403, "every operation behind the Host check documents 403", no403)
        test_openapi_limits(d, doc)

        # Live: every documented operation reaches a handler (never 404 for
        # the path or 405), with ids that exist; deletes go last.
        img = png_bytes(24, 24, 4242)
        r = d.post("/v1/images?wait=true", img, ctype="image/png")
        image_id = r.json["id"] if r.status == 200 else 1
        r = d.post("/v1/texts", {"texts": ["a caption"]})
        text_id = r.json["ids"][0] if r.status == 202 else 1
        job_id = r.json["job_id"] if r.status == 202 else 1
        ids = {"/v1/images/": image_id, "/v1/texts/": text_id, "/v1/jobs/": job_id}
        unreached = []
        for (m, path) in sorted(documented, key=lambda k: (k[0] == "DELETE", k[1], k[0])):
            url = path
            for prefix, v in ids.items():
                if path.startswith(prefix):
                    url = path.replace("{id}", str(v))
            body = {} if m in ("POST", "PATCH", "PUT") else None
            resp = d.request(m, url, body)
            if resp.status in (404, 405):  # the ids exist: a 404 is the route's
                unreached.append("%s %s -> %r" % (m, url, resp))
        ok(not unreached, "every documented operation is served by the live daemon (no 404/405)",
           "\n".join(unreached))
    finally:
        ok(d.stop() == 0, "openapi daemon: SIGTERM exit 0")


def main():
    return e2e.run_tests('clipd-e2e-openapi-', [test_openapi])


if __name__ == "__main__":
    sys.exit(main())
