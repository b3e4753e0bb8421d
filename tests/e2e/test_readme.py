#!/usr/bin/env python3
"""End-to-end: the curl examples of README.md's "## HTTP API" section cover
every route and each succeeds against a fresh daemon with an API key.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, skip, Daemon, MODEL, REF, SRC, router_routes, pattern_re  # noqa: E402


# -- the README's curl examples --

def readme_examples():
    """The curl commands of README.md's "## HTTP API" section, in order."""
    with open(os.path.join(SRC, "README.md")) as fh:
        text = fh.read()
    m = re.search(r"^## HTTP API\n(.*?)(?=^## )", text, re.S | re.M)
    if not m:
        return None
    cmds, cur = [], ""
    for line in m.group(1).splitlines():
        if not line.startswith("    "):
            cur = ""
            continue
        s = line[4:]
        if cur:
            cur += " " + s.strip()
        elif s.startswith("curl "):
            cur = s
        else:
            continue
        if cur.endswith("\\"):
            cur = cur[:-1].rstrip()
            continue
        cmds.append(cur)
        cur = ""
    return cmds


def curl_route(cmd):
    """(method, path) a curl command asks for."""
    url = re.search(r"localhost:8080(/[^'\"\s?]*)", cmd)
    m = re.search(r"-X\s+([A-Z]+)", cmd)
    method = m.group(1) if m else (
        "POST" if re.search(r"\s(-d|-F|--data-binary|--data)\s", cmd) else "GET")
    return method, url.group(1) if url else None


def test_readme_curl(tmp):
    examples = readme_examples()
    if not ok(examples, "README.md has a \"## HTTP API\" section with curl examples"):
        return
    routes, _ = router_routes()
    asked = [curl_route(c) for c in examples]
    uncovered = ["%s %s" % (m, p) for m, p, _ in routes
                 if not any(am == m and ap and pattern_re(p).match(ap) for am, ap in asked)]
    ok(not uncovered, "the README has a curl example for every route", uncovered)
    if not shutil.which("curl"):
        skip("curl is not installed: the examples are not run")
        return
    work = os.path.join(tmp, "readme")
    photos = os.path.join(work, "photos")
    os.makedirs(os.path.join(photos, "2024"))
    for src, dst in (("rocket.jpg", "photo.jpg"), ("horse.png", "a.png"), ("chelsea.png", "b.png"),
                     ("coffee.png", "photos/coffee.png"), ("astronaut.png", "photos/2024/astronaut.png")):
        shutil.copy(os.path.join(REF, "images", src), os.path.join(work, dst))
    # The import example's shards: the two photos embedded by clip-embed as
    # one shard under the allowed root.
    if not os.environ.get("CLIP_EMBED"):
        ok(False, "CLIP_EMBED is set (the import example needs shards)")
        return
    listing = os.path.join(work, "photos.txt")
    with open(listing, "w") as f:
        f.write(os.path.join(photos, "coffee.png") + "\n")
        f.write(os.path.join(photos, "2024", "astronaut.png") + "\n")
    os.makedirs(os.path.join(photos, "shards"))
    p = subprocess.run([os.environ["CLIP_EMBED"], "--model", MODEL, "--list", listing,
                        "--shard", "0/1", "--out", os.path.join(photos, "shards")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if not ok(p.returncode == 0, "clip-embed writes the import example's shard",
              p.stderr.decode(errors="replace")):
        return
    key = "readme-key"
    d = Daemon("readme", os.path.join(tmp, "data-readme"), ["--api-key", key, "--allow-root", photos])
    if not ok(d.start(), "clipd starts for the README examples"):
        return
    try:
        env = dict(os.environ, KEY=key)
        failed = []
        for cmd in examples:
            run = cmd.replace("localhost:8080", "127.0.0.1:%d" % d.port).replace("/srv/photos", photos)
            run = run.replace("curl ", "curl -sS -w '\\nHTTP %{http_code}' ", 1)
            p = subprocess.run(["bash", "-c", run], cwd=work, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=120)
            out = p.stdout.decode(errors="replace")
            status = re.search(r"HTTP (\d{3})$", out)
            if p.returncode != 0 or not status or not status.group(1).startswith("2"):
                failed.append("%s\n  -> exit %d, %s %s" % (cmd, p.returncode, out[-300:],
                                                          p.stderr.decode(errors="replace")[-200:]))
        ok(not failed, "every README curl example (%d) succeeds against a fresh daemon with a key" %
           len(examples), "\n".join(failed))
    finally:
        ok(d.stop() == 0, "readme daemon: SIGTERM exit 0")


def main():
    return e2e.run_tests('clipd-e2e-readme-', [test_readme_curl])


if __name__ == "__main__":
    sys.exit(main())
