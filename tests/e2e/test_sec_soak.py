#!/usr/bin/env python3
"""soak-smoke: bench/soak runs, and its verdict means something.

1. A few seconds of the soak against its own clipd (the tiny reference
   model): it must pass, have sent every kind of request, have every
   hostile request answered 4xx, sampled the daemon every second, counted
   its idle descriptors before and after, and stopped it cleanly.
2. The soak attached (--attach PORT) to a clipd started here, which is
   killed with SIGKILL part-way: the verdict must fail and say the daemon
   was gone. A soak that always passes would fail this case.

No figure is checked: the machine is shared, and this only keeps the
program from rotting. Environment as test_e2e.py, plus CLIPD_SOAK (the
path of build/bench/soak). Output is TAP.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402

SOAK = os.environ.get("CLIPD_SOAK", "")


def run_soak(args, timeout=240):
    p = subprocess.run([SOAK] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    out = p.stdout.decode(errors="replace")
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return p.returncode, out, p.stderr.decode(errors="replace"), lines


def figures(lines, figure):
    return [l for l in lines if l.get("figure") == figure]


def test_own_daemon(tmp):
    rc, out, err, lines = run_soak(
        ["--model", e2e.MODEL, "--clipd", e2e.BIN, "--tmp", tmp, "--seconds", "6",
         "--warmup", "2", "--connections", "16", "--every", "2", "--timeout", "30",
         "--drain", "60", "--json"])
    text = out + "\n" + err
    e2e.ok(rc == 0, "soak on its own clipd exits 0", text)
    e2e.ok("\nverdict: PASS" in out, "its verdict line says PASS", text)
    summary = figures(lines, "summary")
    kinds = figures(lines, "kind")
    samples = figures(lines, "sample")
    if not e2e.ok(len(summary) == 1 and len(kinds) >= 16, "--json prints a summary and each kind",
                  out[-3000:]):
        return
    s = summary[0]
    e2e.ok(s["verdict"] == "pass" and s["problems"] == [] and s["other_5xx"] == 0 and
           s["no_answer"] == 0 and s["unexpected"] == 0, "summary: pass, no 5xx, no unexpected",
           s)
    e2e.ok(all(k["requests"] >= 1 for k in kinds), "every kind was sent at least once",
           [(k["kind"], k["requests"]) for k in kinds])
    hostile = [k for k in kinds if k["hostile"]]
    e2e.ok(hostile and all(all(400 <= int(st) < 500 for st in k["statuses"]) for k in hostile),
           "every hostile request was answered 4xx",
           [(k["kind"], k["statuses"]) for k in hostile])
    normal = [k for k in kinds if not k["hostile"]]
    e2e.ok(all(set(k["statuses"]) <= {str(k["expect"]), "503"} for k in normal),
           "every other request got the status its kind expects",
           [(k["kind"], k["statuses"]) for k in normal])
    e2e.ok(len(samples) >= 5 and all(x["rss_kb"] > 0 and x["fds"] > 0 and x["threads"] > 0
                                     for x in samples),
           "the daemon was sampled every second (RSS, descriptors, threads)", samples[:3])
    e2e.ok(s["idle_fds_before"] > 0 and s["idle_fds_after"] > 0 and
           s["idle_fds_after"] <= s["idle_fds_before"],
           "idle descriptors counted before and after, no growth", s)
    e2e.ok(s["stopped_clean"] == 1, "the soak's clipd stopped with exit 0", s)
    lat = [k for k in kinds if k["kind"] == "search-post"]
    e2e.ok(lat and lat[0]["latencies"] > 0 and 0 < lat[0]["p50_ms"] <= lat[0]["max_ms"],
           "latencies after the warm-up are reported", lat)
    e2e.ok(not [d for d in os.listdir(tmp) if d.startswith("clipd-bench-")],
           "a passing soak removes its directory", os.listdir(tmp))


def test_attach_and_kill(tmp):
    d = e2e.Daemon("soak-attach", os.path.join(tmp, "attach"), extra=["--max-body-mb", "2"])
    if not e2e.ok(d.start(), "a clipd to attach to starts"):
        return
    # Killed a few seconds into the load (priming and the idle count come first).
    killer = threading.Timer(8.0, lambda: d.proc.send_signal(signal.SIGKILL))
    killer.start()
    try:
        rc, out, err, lines = run_soak(
            ["--attach", str(d.port), "--max-body-mb", "2", "--seconds", "20", "--warmup", "1",
             "--connections", "8", "--every", "2", "--timeout", "10", "--drain", "10",
             "--json"], timeout=120)
    finally:
        killer.cancel()
        d.proc.wait()
    text = out + "\n" + err
    summary = figures(lines, "summary")
    e2e.ok(rc == 1, "soak attached to a clipd that is killed exits 1", text)
    e2e.ok("(attached)" in out and "clipd pid %d " % d.proc.pid in out,
           "--attach found the daemon's pid from its port", out[:400])
    e2e.ok(summary and summary[0]["verdict"] == "fail" and
           any("gone" in p for p in summary[0]["problems"]) and "\nverdict: FAIL" in out,
           "the verdict fails and says the daemon was gone", text[-3000:])


def main():
    return e2e.run_tests("clipd-soak-", [test_own_daemon, test_attach_and_kill], need=[SOAK],
                         need_msg="CLIPD_SOAK, CLIPD_BIN or CLIPD_REFERENCE not set")


if __name__ == "__main__":
    sys.exit(main())
