#!/usr/bin/env python3
"""End-to-end: the daemon's configuration as a whole: --config FILE and
CLIPD_CONFIG, the precedence command line > environment > config file seen
through the key in force and the allowed roots, and the start-up errors
(exit 2) that name the file and line, the variable or the option; --help.
(tests/test_config.c checks config_parse case by case.)

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, png_bytes, ConfDaemon, run_clipd, BIN, MODEL  # noqa: E402


def key_in_force(d, keys):
    """The one of keys that a write accepts (a DELETE of an unknown id
    answers 404 with the right key, 401 with a wrong one)."""
    for k in keys:
        r = d.delete("/v1/images/987654321", headers={"Authorization": "Bearer " + k})
        if r.status != 401:
            return k
    return None


def test_config_file(tmp):
    base = os.path.join(tmp, "conf")
    os.makedirs(os.path.join(base, "photos-a"))
    root_b = os.path.join(base, "photos-b")
    os.makedirs(root_b)
    for path, seed in ((os.path.join(base, "photos-a", "a.png"), 71),
                       (os.path.join(base, "photos-a", "b.png"), 72),
                       (os.path.join(base, "outside.png"), 73)):
        with open(path, "wb") as f:
            f.write(png_bytes(32, 24, seed))
    conf = os.path.join(base, "clipd.conf")
    with open(conf, "w") as f:
        f.write("# clipd test configuration\n\n"
                "model = %s\n"
                "data = data\n"
                "  listen = 127.0.0.1:0   \n"
                "api-key = file-key\n"
                "workers = 1\n"
                "log-level = \"info\"\n"
                "allow-root = photos-a\n"
                "allow-root = %s\n" % (MODEL, root_b))
    keys = ["file-key", "env-key", "cli-key", "kf-key"]

    # The file alone: model, data (relative to the file), listen, key, roots.
    d = ConfDaemon("conf-file", os.path.join(base, "data"), ["--config", conf])
    if ok(d.start(), "clipd --config FILE starts with model, data and listen from the file"):
        try:
            ok(os.path.exists(os.path.join(base, "data", "clipd.db")),
               "config file: a relative data path is taken from the file's folder")
            ok(key_in_force(d, keys) == "file-key", "config file: its api-key is in force")
            d.key = "file-key"
            r = d.post("/v1/ingest", {"paths": [os.path.join(base, "photos-a", "a.png")]})
            ok(r.status == 202 and r.json.get("accepted") == 1,
               "config file: a relative allow-root admits files under it", r)
            r = d.post("/v1/ingest", {"paths": [os.path.join(base, "outside.png")]})
            ok(r.status == 403, "config file: paths outside its allow-roots are refused", r)
        finally:
            ok(d.stop() == 0, "config file daemon: SIGTERM exit 0")

    # CLIPD_CONFIG names the file; the environment wins over the file.
    d = ConfDaemon("conf-env", os.path.join(base, "data"), [],
                   env_extra={"CLIPD_CONFIG": conf, "CLIPD_API_KEY": "env-key"})
    if ok(d.start(), "CLIPD_CONFIG=FILE starts clipd from the file"):
        try:
            ok(key_in_force(d, keys) == "env-key", "precedence: environment over config file")
        finally:
            ok(d.stop() == 0, "CLIPD_CONFIG daemon: SIGTERM exit 0")

    # The command line wins over both; --allow-root on it replaces the file's list.
    d = ConfDaemon("conf-cli", os.path.join(base, "data"),
                   ["--config", conf, "--api-key", "cli-key", "--allow-root", root_b],
                   env_extra={"CLIPD_API_KEY": "env-key"})
    if ok(d.start(), "clipd --config FILE with command-line options starts"):
        try:
            ok(key_in_force(d, keys) == "cli-key",
               "precedence: command line over environment over config file")
            d.key = "cli-key"
            r = d.post("/v1/ingest", {"paths": [os.path.join(base, "photos-a", "b.png")]})
            ok(r.status == 403, "precedence: --allow-root on the command line replaces the file's", r)
        finally:
            ok(d.stop() == 0, "command-line daemon: SIGTERM exit 0")

    # The key and the key file are one setting: a stronger key file beats the file's key.
    key_file = os.path.join(base, "key.txt")
    with open(key_file, "w") as f:
        f.write("kf-key\n")
    d = ConfDaemon("conf-keyfile", os.path.join(base, "data"),
                   ["--config", conf, "--api-key-file", key_file])
    if ok(d.start(), "clipd --config FILE --api-key-file starts"):
        try:
            ok(key_in_force(d, keys) == "kf-key",
               "precedence: --api-key-file on the command line over api-key in the file")
        finally:
            ok(d.stop() == 0, "key-file daemon: SIGTERM exit 0")

    # Errors name the file and the line.
    def bad_conf(name, text, expect, env_extra=None, args=()):
        path = os.path.join(base, name)
        with open(path, "w") as f:
            f.write(text)
        rc, err = run_clipd(["--config", path] + list(args), env_extra)
        ok(rc == 2 and expect % {"f": path} in err,
           "config error %s: exit 2 with %r" % (name, expect % {"f": "FILE"}), (rc, err))

    bad_conf("unknown.conf", "# ok\nmodel = %s\nmodle = x\n" % MODEL,
             "%(f)s:3: unknown key 'modle'")
    bad_conf("value.conf", "data = d\nworkers = lots\nmodel = m\n",
             "%(f)s:2: workers: 'lots' is not an integer")
    bad_conf("noeq.conf", "\n\nlisten 127.0.0.1:0\n", "%(f)s:3: expected \"key = value\"")
    bad_conf("twice.conf", "workers = 1\nworkers = 2\n", "%(f)s:2: workers: set twice (first on line 1)")
    bad_conf("flag.conf", "api-key-reads = maybe\n", "%(f)s:1: api-key-reads: 'maybe' is not true or false")
    bad_conf("fast.conf", "fast-decode = maybe\n", "%(f)s:1: fast-decode: 'maybe' is not true or false")
    bad_conf("root.conf", "model = m\ndata = d\nallow-root = does-not-exist\n",
             "%(f)s:3: allow-root: ")
    bad_conf("listen.conf", "model = m\ndata = d\nlisten = localhost:80\n",
             "%(f)s:3: listen: 'localhost' is not a numeric")
    rc, err = run_clipd(["--config", os.path.join(base, "missing.conf")])
    ok(rc == 2 and "--config: cannot open" in err, "a missing config file: exit 2, named", err)
    rc, err = run_clipd(["--model", "m", "--data", "d"], {"CLIPD_WORKERS": "x"})
    ok(rc == 2 and "CLIPD_WORKERS: 'x' is not an integer" in err,
       "a bad environment value is named by its variable", err)
    rc = subprocess.run([BIN, "--help"], stdout=subprocess.PIPE, timeout=30)
    out = rc.stdout.decode()
    ok(rc.returncode == 0 and "--config FILE" in out and "config file" in out,
       "--help documents --config and the precedence", out)
    ok("--fast-decode" in out, "--help documents --fast-decode", out)


def main():
    return e2e.run_tests('clipd-e2e-config-', [test_config_file])


if __name__ == "__main__":
    sys.exit(main())
