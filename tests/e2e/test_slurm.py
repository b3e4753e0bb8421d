#!/usr/bin/env python3
"""End-to-end: deploy/slurm/embed.sbatch on a one-node Slurm cluster on this
machine (munged, slurmctld and slurmd in a temporary directory, on two free
ports), then POST /v1/import of what it wrote (docs/SHARDS.md).

- About 200 distinct JPEGs (mkjpeg) and their list; `sbatch --wait
  --array=0-3` of embed.sbatch: exit 0, the four shard directories, each
  task's output its clip-embed JSON line ("written", its share of the list),
  the shards covering the list once with the files' SHA-256s.
- A daemon imports the shards: everything imported and ready at once; a
  second daemon ingests the same files with POST /v1/ingest {"paths"}: text
  and image-by-id searches give the same files in the same order (scores
  within 1e-3, adjacent swaps of scores closer than 2e-3).
- Resubmitting the same array rewrites nothing (every task says
  "complete"; inodes, mtimes and contents unchanged), nor does --array=1-4
  (the shard number counts from the array's first index); with one shard
  deleted and a killed task's temporary directory beside it, resubmitting
  redoes that shard alone (same items and vectors) and removes the
  temporary directory; a stepped array (--array=0-6:2) is refused by the
  script.

Skipped as a whole (TAP "1..0 # SKIP") when not root, when munged,
mungekey, slurmctld, slurmd, sbatch or sinfo is missing, or when the
cluster does not come up within 30 s (the log tails are printed). The
cluster is always stopped (by its pid files) and its directory removed.

Environment: test_e2e.py's, plus CLIP_EMBED (build/clip-embed) and
CLIPD_SBATCH (deploy/slurm/embed.sbatch).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, diag, MKJPEG, MODEL  # noqa: E402
import test_import as ti  # noqa: E402  (shard readers, ranking comparison)

EMBED = os.environ.get("CLIP_EMBED", "")
SBATCH = os.environ.get("CLIPD_SBATCH", "")
N_IMAGES = 200
N_TASKS = 4
UP_TIMEOUT = 30
TEXTS = ["a photo of a cat", "a red square", "a city at night", "noise",
         "a green field under a blue sky"]


def free_ports(n):
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:]) or "(empty)"
    except OSError as ex:
        return "(%s)" % ex


class Cluster:
    """munged + slurmctld + slurmd under t, stopped by their pid files."""

    def __init__(self, t):
        self.t = t
        self.host = socket.gethostname().split(".")[0]
        self.conf = os.path.join(t, "slurm.conf")
        self.pidfiles = {"slurmd": os.path.join(t, "run", "slurmd.pid"),
                         "slurmctld": os.path.join(t, "run", "slurmctld.pid"),
                         "munged": os.path.join(t, "munge", "munged.pid")}
        self.logs = {"munged": os.path.join(t, "log", "munged.log"),
                     "slurmctld": os.path.join(t, "log", "slurmctld.log"),
                     "slurmd": os.path.join(t, "log", "slurmd.log")}
        self.pids = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = self.conf
        self.env = env

    def run(self, args, timeout=30, **kw):
        return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=self.env, timeout=timeout, **kw)

    def _pid(self, name):
        try:
            with open(self.pidfiles[name]) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        self.pids[name] = pid
        return pid

    def _wait_pid(self, name, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if self._pid(name):
                return True
            time.sleep(0.1)
        return False

    def start(self):
        """None when up, else (which, why)."""
        t = self.t
        for sub in ("munge", "log", "state", "spool", "run", "out"):
            os.makedirs(os.path.join(t, sub), exist_ok=True)
        os.chmod(t, 0o755)
        os.chmod(os.path.join(t, "munge"), 0o755)
        key = os.path.join(t, "munge.key")
        p = self.run(["mungekey", "--create", "--keyfile=" + key])
        if p.returncode != 0:
            return "mungekey", p.stderr.decode(errors="replace")
        os.chmod(key, 0o600)
        sock = os.path.join(t, "munge", "munge.sock")
        p = self.run(["munged", "--socket=" + sock, "--key-file=" + key,
                      "--log-file=" + self.logs["munged"],
                      "--pid-file=" + self.pidfiles["munged"],
                      "--seed-file=" + os.path.join(t, "munge", "seed")])
        if p.returncode != 0 or not self._wait_pid("munged", UP_TIMEOUT):
            return "munged", "exit %s: %s\n%s" % (p.returncode, p.stderr.decode(errors="replace"),
                                                  tail(self.logs["munged"]))
        ctld_port, d_port = free_ports(2)
        conf = [
            "ClusterName=clipdtest",
            "SlurmctldHost=%s(127.0.0.1)" % self.host,
            "SlurmctldPort=%d" % ctld_port,
            "SlurmdPort=%d" % d_port,
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "AuthInfo=socket=%s" % sock,
            "CredType=cred/munge",
            "StateSaveLocation=%s" % os.path.join(t, "state"),
            "SlurmdSpoolDir=%s" % os.path.join(t, "spool"),
            "SlurmctldPidFile=%s" % self.pidfiles["slurmctld"],
            "SlurmdPidFile=%s" % self.pidfiles["slurmd"],
            "SlurmctldLogFile=%s" % self.logs["slurmctld"],
            "SlurmdLogFile=%s" % self.logs["slurmd"],
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "ReturnToService=2",
            "NodeName=%s NodeAddr=127.0.0.1 CPUs=%d State=UNKNOWN" % (self.host,
                                                                     os.cpu_count() or 1),
            "PartitionName=test Nodes=%s Default=YES MaxTime=INFINITE State=UP" % self.host,
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")
        p = self.run(["slurmctld", "-f", self.conf, "-i"])
        if p.returncode != 0 or not self._wait_pid("slurmctld", UP_TIMEOUT):
            return "slurmctld", "exit %s: %s\n%s" % (p.returncode,
                                                     p.stderr.decode(errors="replace"),
                                                     tail(self.logs["slurmctld"]))
        p = self.run(["slurmd", "-f", self.conf])
        if p.returncode != 0 or not self._wait_pid("slurmd", UP_TIMEOUT):
            return "slurmd", "exit %s: %s\n%s" % (p.returncode, p.stderr.decode(errors="replace"),
                                                  tail(self.logs["slurmd"]))
        end = time.time() + UP_TIMEOUT
        state = ""
        while time.time() < end:
            try:
                p = self.run(["sinfo", "-h", "-o", "%T"], timeout=10)
                state = p.stdout.decode(errors="replace").strip()
            except subprocess.TimeoutExpired:
                state = "(sinfo timed out)"
            if state.split() and all(s.rstrip("*") == "idle" for s in state.split()):
                return None
            time.sleep(0.5)
        return "the node", "sinfo -h -o %%T says %r after %d s\nslurmctld:\n%s\nslurmd:\n%s" % (
            state, UP_TIMEOUT, tail(self.logs["slurmctld"]), tail(self.logs["slurmd"]))

    def stop(self):
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.get(name) or self._pid(name)
            if not pid:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            end = time.time() + 15
            while time.time() < end and os.path.exists("/proc/%d" % pid):
                time.sleep(0.1)
            if os.path.exists("/proc/%d" % pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def sbatch(cl, t, array, lst, out, timeout=150):
    """sbatch --wait of embed.sbatch: (exit status, job id or None, stdout+stderr)."""
    args = ["sbatch", "--wait", "--parsable", "--array=" + array, "--cpus-per-task=1",
            "--export=ALL,CLIP_MODEL=%s,CLIP_LIST=%s,CLIP_OUT=%s,CLIP_EMBED=%s,"
            "CLIP_PRECISION=f32" % (MODEL, lst, out, EMBED),
            "-o", os.path.join(t, "out", "%A_%a.out"), SBATCH]
    p = cl.run(args, timeout=timeout, cwd=t)
    text = p.stdout.decode(errors="replace")
    m = re.match(r"\s*(\d+)", text)
    return p.returncode, (int(m.group(1)) if m else None), text + p.stderr.decode(errors="replace")


def task_lines(t, job, tasks):
    """{task index: (JSON object or None, whole output)}."""
    out = {}
    for a in tasks:
        path = os.path.join(t, "out", "%d_%d.out" % (job, a))
        try:
            with open(path, "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError as ex:
            out[a] = (None, str(ex))
            continue
        obj = None
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    pass
        out[a] = (obj, text)
    return out


def test_slurm(t, cl):
    root = os.path.join(t, "root")
    t0 = time.time()
    paths = ti.make_images(t, root, N_IMAGES, 30000)
    diag("%d JPEGs in %.1f s" % (len(paths), time.time() - t0))
    shas = {p: ti.sha256_file(p) for p in paths}
    lst = os.path.join(t, "list.txt")
    ti.write_list(lst, paths)
    out = os.path.join(root, "shards")
    names = [ti.shard_name(i, N_TASKS) for i in range(N_TASKS)]

    t0 = time.time()
    rc, job, text = sbatch(cl, t, "0-%d" % (N_TASKS - 1), lst, out)
    ok(rc == 0 and job is not None, "sbatch --wait --array=0-%d embed.sbatch: exit 0 (%.1f s)" %
       (N_TASKS - 1, time.time() - t0), text + "\nslurmctld:\n" + tail(cl.logs["slurmctld"]))
    got = sorted(os.listdir(out)) if os.path.isdir(out) else None
    ok(got == names, "OUT holds exactly the %d shard directories" % N_TASKS, got)
    if job is not None:
        lines = task_lines(t, job, range(N_TASKS))
        for a in range(N_TASKS):
            obj, whole = lines[a]
            want = len(paths[a::N_TASKS])
            ok(isinstance(obj, dict) and obj.get("shard") == a and obj.get("shards") == N_TASKS and
               obj.get("state") == "written" and obj.get("embedded") == want and
               obj.get("failed") == 0 and
               os.path.realpath(obj.get("dir", "")) == os.path.realpath(os.path.join(out,
                                                                                    names[a])),
               "task %d's output: its JSON line (shard %d of %d, written, %d embedded)" %
               (a, a, N_TASKS, want), whole)
    if got != names:
        return
    covered, problems = [], []
    for i, n in enumerate(names):
        man, items, rows, failed = ti.read_shard(os.path.join(out, n))
        if man.get("shard") != i or man.get("shards") != N_TASKS or \
                man.get("count") != len(items) or man.get("precision") != "f32":
            problems.append("%s: manifest %s" % (n, json.dumps(man)))
        for name, f in (man.get("files") or {}).items():
            p = os.path.join(out, n, name)
            if f.get("bytes") != os.path.getsize(p) or f.get("sha256") != ti.sha256_file(p):
                problems.append("%s/%s: %r" % (n, name, f))
        for it in items:
            if shas.get(it.get("path")) != it.get("sha256"):
                problems.append("%s: %r" % (n, it))
        if len(rows) != len(items) or any(abs(ti.dot(r, r) - 1) > 2e-4 for r in rows):
            problems.append("%s: %d rows for %d items, or not unit length" % (n, len(rows),
                                                                              len(items)))
        covered += [it.get("path") for it in items]
    if sorted(covered) != sorted(paths):
        problems.append("the shards cover %d paths (%d distinct) of %d" %
                        (len(covered), len(set(covered)), len(paths)))
    ok(not problems, "the shards: manifests, hashes, unit rows, the list covered once",
       "\n".join(problems[:20]))

    # Resubmitting rewrites nothing.
    before = {n: ti.dir_state(os.path.join(out, n)) for n in names}
    for array, tasks in (("0-%d" % (N_TASKS - 1), range(N_TASKS)),
                         ("1-%d" % N_TASKS, range(1, N_TASKS + 1))):
        t0 = time.time()
        rc, job2, text = sbatch(cl, t, array, lst, out)
        lines = task_lines(t, job2, tasks) if job2 is not None else {}
        states = {a: (lines[a][0] or {}).get("state") for a in lines}
        shards = sorted((lines[a][0] or {}).get("shard", -1) for a in lines)
        ok(rc == 0 and states and all(s == "complete" for s in states.values()) and
           shards == list(range(N_TASKS)),
           "resubmitting --array=%s: exit 0, every task says \"complete\" (%.1f s)" %
           (array, time.time() - t0), "%s\n%s" % (text, {a: lines[a][1] for a in lines}))
        after = {n: ti.dir_state(os.path.join(out, n)) for n in names}
        ok(after == before and sorted(os.listdir(out)) == names,
           "after --array=%s: the shard directories are untouched" % array)

    # A lost shard (and the temporary directory of a killed task) is redone
    # alone when the array is resubmitted.
    lost = os.path.join(out, names[2])
    with open(os.path.join(lost, "items.jsonl"), "rb") as f:
        lost_items = f.read()
    with open(os.path.join(lost, "embeddings.f32"), "rb") as f:
        lost_emb = f.read()
    shutil.rmtree(lost)
    killed = os.path.join(out, ".%s.Ab12Cd" % names[2])
    os.makedirs(killed)
    with open(os.path.join(killed, "embeddings.f32"), "wb") as f:
        f.write(lost_emb[:1000])
    rc, job4, text = sbatch(cl, t, "0-%d" % (N_TASKS - 1), lst, out)
    lines = task_lines(t, job4, range(N_TASKS)) if job4 is not None else {}
    states = [(lines.get(a, (None,))[0] or {}).get("state") for a in range(N_TASKS)]
    ok(rc == 0 and states == ["complete", "complete", "written", "complete"],
       "after losing shard 2 (a killed task's temporary directory beside it), resubmitting "
       "redoes shard 2 alone", "%s\n%s" % (text, states))
    after = {n: ti.dir_state(os.path.join(out, n)) for n in names}
    ok(all(after[n] == before[n] for n in names if n != names[2]) and
       sorted(os.listdir(out)) == names,
       "the other shards are untouched, the killed task's temporary directory is gone",
       sorted(os.listdir(out)))
    try:
        with open(os.path.join(lost, "items.jsonl"), "rb") as f:
            same_items = f.read() == lost_items
        with open(os.path.join(lost, "embeddings.f32"), "rb") as f:
            new_emb = f.read()
        same_emb = len(new_emb) == len(lost_emb) and ti.max_row_diff(new_emb, lost_emb) < 1e-6
    except OSError:
        same_items = same_emb = False
    ok(same_items and same_emb, "shard 2 written again holds the same items and embeddings")

    rc, job3, text = sbatch(cl, t, "0-6:2", lst, os.path.join(root, "shards-step"))
    lines = task_lines(t, job3, (0, 2, 4, 6)) if job3 is not None else {}
    ok(rc != 0 and not os.path.exists(os.path.join(root, "shards-step", ti.shard_name(0, 4))),
       "a stepped array (--array=0-6:2) is refused by the script, nothing written (exit %s)" % rc,
       "%s\n%s" % (text, {a: lines[a][1] for a in lines}))

    # Import, and compare with a daemon that ingested the files itself.
    a = ti.start("slurm-a", os.path.join(t, "data-a"), root)
    b = None
    try:
        t0 = time.time()
        r = ti.post_import(a, {"dir": out})
        ok(r.status == 200 and ti.counts(r) == (N_IMAGES, 0, 0, 0) and
           r.json.get("done") is True and len(r.json.get("shards") or []) == N_TASKS,
           "POST /v1/import of the %d shards: imported %d (%.2f s)" %
           (N_TASKS, N_IMAGES, time.time() - t0), r)
        st = a.get("/v1/stats").json["images"]
        ok(st["total"] == N_IMAGES and st["ready"] == N_IMAGES, "all %d ready at once" % N_IMAGES,
           st)
        b = ti.start("slurm-b", os.path.join(t, "data-b"), root)
        t0 = time.time()
        r = b.post("/v1/ingest", {"paths": paths})
        jb = b.wait_job(r.json["job_id"]) if r.status == 202 else None
        ok(r.status == 202 and jb is not None and jb["done"] == N_IMAGES and
           b.wait_idle(120) is not None,
           "daemon B ingests the %d files by path (%.1f s)" % (N_IMAGES, time.time() - t0), r)
        ids = {}
        for d, key in ((a, "a"), (b, "b")):
            r = d.post("/v1/search", {"text": "x", "k": 1000})
            ids[key] = {x["filename"]: x["id"] for x in r.json["results"]} \
                if r.status == 200 else {}
        ok(sorted(ids["a"]) == sorted(ids["b"]) and len(ids["a"]) == N_IMAGES,
           "A and B hold the same %d file names" % N_IMAGES)
        for q in TEXTS:
            ga, ra = ti.ranking(a, {"text": q})
            gb, rb = ti.ranking(b, {"text": q})
            probs = ti.ranking_problems(ga, gb) if ga and gb else [repr(ra), repr(rb)]
            ok(not probs, "text %r: A (imported) ranks as B (ingested)" % q, "\n".join(probs))
        for i in (0, 17, 64, 111, 199):
            n = "imgs/img_%03d.jpg" % i
            ga, ra = ti.ranking(a, {"image_id": ids["a"].get(n, 0)})
            gb, rb = ti.ranking(b, {"image_id": ids["b"].get(n, 0)})
            probs = ti.ranking_problems(ga, gb) if ga and gb else [repr(ra), repr(rb)]
            ok(not probs, "image %s by id: A ranks as B" % n, "\n".join(probs))
    finally:
        e2e.stop_checked(a, "slurm-a")
        if b:
            e2e.stop_checked(b, "slurm-b")


def main():
    if os.geteuid() != 0:
        print("1..0 # SKIP not root (a Slurm cluster needs root)")
        return 0
    missing = [p for p in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo")
               if not shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]
    if missing:
        print("1..0 # SKIP not installed: %s" % ", ".join(missing))
        return 0
    if not e2e.BIN or not os.path.exists(e2e.BIN) or not os.path.isdir(MODEL) or \
            not all(p and os.path.exists(p) for p in (MKJPEG, EMBED, SBATCH)):
        print("1..0 # SKIP CLIPD_BIN, CLIPD_REFERENCE, CLIPD_MKJPEG, CLIP_EMBED or "
              "CLIPD_SBATCH not set")
        return 0
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    t = tempfile.mkdtemp(prefix="clipd-slurm-")
    cl = Cluster(t)

    def on_term(signum, frame):  # meson's timeout: still stop the cluster
        raise SystemExit("killed by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    try:
        t0 = time.time()
        why = cl.start()
        if why:
            which, text = why
            diag(text)
            first = ([x for x in text.splitlines() if x.strip()] or [""])[0]
            print("1..0 # SKIP %s did not come up within %d s (%s)" %
                  (which, UP_TIMEOUT, first[:200]))
            return 0
        diag("the cluster is up in %.1f s (node %s)" % (time.time() - t0, cl.host))
        try:
            test_slurm(t, cl)
        except Exception:
            import traceback
            ok(False, "test_slurm raised", traceback.format_exc())
        if e2e._failed:
            for name, path in cl.logs.items():
                diag("%s log:\n%s" % (name, tail(path, 20)))
    finally:
        cl.stop()
        shutil.rmtree(t, ignore_errors=True)
    print("1..%d" % e2e._n)
    return 1 if e2e._failed else 0


if __name__ == "__main__":
    sys.exit(main())
