#!/usr/bin/env python3
"""End-to-end: what an image says about itself (EXIF, issue 11 §1) on the
real daemon. JPEGs tagged by exiftool (times with and without offsets, only
DateTimeDigitized, none; GPS in the four hemispheres; camera, lens,
orientation) come back with taken, gps, camera and orientation on
GET /v1/images/{id}, the upload's reply and search results; hostile EXIF
built here byte by byte (999 degrees, a Make of the wrong type, a value
past the block's end, a truncated TIFF) never fails the ingest and is
logged field by field. The backfill: images made unread in the database
while clipd is stopped are read again at the next start, counted in a job
of kind exif_backfill that reaches done, resumes the job an earlier run
left, and counts a missing blob as failed.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output. Needs exiftool (deploy/setup.sh).
"""
import os
import shutil
import sqlite3
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, Daemon, REF  # noqa: E402

ROCKET = os.path.join(REF, "images", "rocket.jpg")

# name: (exiftool arguments, what the API must say). Expected instants:
# Python's datetime.fromisoformat(taken).timestamp(), the zone-less one as UTC.
TAGGED = {
    "paris.jpg": (["-DateTimeOriginal=2021:07:04 18:30:00", "-OffsetTimeOriginal=+02:00",
                   "-GPSLatitude=48.8584", "-GPSLatitudeRef=N", "-GPSLongitude=2.2945",
                   "-GPSLongitudeRef=E", "-Make=Canon", "-Model=Canon EOS 5D Mark IV",
                   "-LensModel=EF24-70mm f/2.8L II USM", "-Orientation#=1"],
                  {"taken": "2021-07-04T18:30:00+02:00", "gps": (48.8584, 2.2945),
                   "camera": {"make": "Canon", "model": "Canon EOS 5D Mark IV",
                              "lens": "EF24-70mm f/2.8L II USM"}, "orientation": 1}),
    "newyork.jpg": (["-DateTimeOriginal=1999:12:31 23:59:59", "-GPSLatitude=40.6892",
                     "-GPSLatitudeRef=N", "-GPSLongitude=74.0445", "-GPSLongitudeRef=W",
                     "-Make=NIKON CORPORATION", "-Model=NIKON D850"],
                    {"taken": "1999-12-31T23:59:59", "gps": (40.6892, -74.0445),
                     "camera": {"make": "NIKON CORPORATION", "model": "NIKON D850", "lens": None},
                     "orientation": None}),
    "sydney.jpg": (["-CreateDate=2016:10:12 08:05:03", "-OffsetTimeDigitized=+11:00",
                    "-GPSLatitude=33.8568", "-GPSLatitudeRef=S", "-GPSLongitude=151.2153",
                    "-GPSLongitudeRef=E"],
                   {"taken": "2016-10-12T08:05:03+11:00", "gps": (-33.8568, 151.2153),
                    "camera": None, "orientation": None}),
    "rio.jpg": (["-DateTimeOriginal=2020:02:29 23:59:59", "-OffsetTimeOriginal=-03:00",
                 "-GPSLatitude=22.9519", "-GPSLatitudeRef=S", "-GPSLongitude=43.2105",
                 "-GPSLongitudeRef=W", "-Model=Pixel 8"],
                {"taken": "2020-02-29T23:59:59-03:00", "gps": (-22.9519, -43.2105),
                 "camera": {"make": None, "model": "Pixel 8", "lens": None}, "orientation": None}),
    "plain.jpg": ([], {"taken": None, "gps": None, "camera": None, "orientation": None}),
}
TAKEN_MS = {"paris.jpg": 1625416200000, "newyork.jpg": 946684799000,
            "sydney.jpg": 1476219903000, "rio.jpg": 1583031599000}


def stripped_rocket(tmp):
    """rocket.jpg without any metadata (a base every case tags)."""
    path = os.path.join(tmp, "base.jpg")
    shutil.copy(ROCKET, path)
    subprocess.run(["exiftool", "-q", "-q", "-overwrite_original", "-all=", path], check=True)
    return path


def tagged(tmp, base, name, args):
    path = os.path.join(tmp, name)
    shutil.copy(base, path)
    if args:
        subprocess.run(["exiftool", "-q", "-q", "-overwrite_original"] + args + [path], check=True)
    with open(path, "rb") as f:
        return f.read()


# ---- hostile EXIF, byte by byte (exiftool refuses to write it) ---------------

def tiff(ifd0, gps=None, exif=None):
    """A little-endian TIFF: entries (tag, type, count, value bytes[, forced
    offset]); pointers to the GPS and EXIF IFDs appended to IFD0."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))

    def put_ifd(entries):
        at = len(out)
        out.extend(struct.pack("<H", len(entries)))
        fields = len(out)
        out.extend(b"\0" * (12 * len(entries) + 4))
        where = []
        for i, e in enumerate(entries):
            tag, typ, count, val = e[:4]
            f = fields + 12 * i
            struct.pack_into("<HHI", out, f, tag, typ, count)
            if len(val) <= 4:
                out[f + 8:f + 8 + len(val)] = val
            else:
                struct.pack_into("<I", out, f + 8, e[4] if len(e) > 4 else len(out))
                out.extend(val + (b"\0" if len(val) & 1 else b""))
            where.append(f + 8)
        return at, where

    extra = []
    if gps:
        extra.append((0x8825, 4, 1, b"\0\0\0\0"))
    if exif:
        extra.append((0x8769, 4, 1, b"\0\0\0\0"))
    _, where = put_ifd(list(ifd0) + extra)
    k = len(ifd0)
    if gps:
        at, _ = put_ifd(gps)
        struct.pack_into("<I", out, where[k], at)
        k += 1
    if exif:
        at, _ = put_ifd(exif)
        struct.pack_into("<I", out, where[k], at)
    return bytes(out)


def with_app1(jpeg, block):
    seg = b"Exif\0\0" + block
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(seg) + 2) + seg + jpeg[2:]


def rat(*pairs):
    return b"".join(struct.pack("<II", n, d) for n, d in pairs)


def hostile_files(base):
    with open(base, "rb") as f:
        jpeg = f.read()
    dto = b"2021:07:04 18:30:00\0"
    return {
        # 999 degrees north; the longitude alone is not a position. The
        # time still comes through.
        "gps999.jpg": (with_app1(jpeg, tiff(
            [(0x010F, 2, 6, b"Canon\0")],
            gps=[(1, 2, 2, b"N\0"), (2, 5, 3, rat((999, 1), (0, 1), (0, 1))),
                 (3, 2, 2, b"E\0"), (4, 5, 3, rat((2, 1), (17, 1), (40, 1)))],
            exif=[(0x9003, 2, 20, dto)])),
            {"taken": "2021-07-04T18:30:00", "gps": None,
             "camera": {"make": "Canon", "model": None, "lens": None}},
            "GPSLatitude: 999 degrees"),
        # Make as a SHORT, Orientation 9, Model fine.
        "types.jpg": (with_app1(jpeg, tiff(
            [(0x010F, 3, 1, b"\x07\0"), (0x0112, 3, 1, b"\x09\0"), (0x0110, 2, 5, b"GR3x\0")])),
            {"taken": None, "gps": None, "orientation": None,
             "camera": {"make": None, "model": "GR3x", "lens": None}},
            "Make: of type Short"),
        # DateTimeOriginal's value 4 GB into a block of a hundred bytes.
        "pastend.jpg": (with_app1(jpeg, tiff(
            [(0x010F, 2, 5, b"Sony\0")], exif=[(0x9003, 2, 20, dto, 0xFFFFF000)])),
            {"taken": None, "camera": {"make": "Sony", "model": None, "lens": None}},
            "past end"),
        # The TIFF cut short inside its (consistent) segment.
        "cut.jpg": (with_app1(jpeg, tiff([(0x010F, 2, 6, b"Canon\0")],
                                         exif=[(0x9003, 2, 20, dto)])[:-12]),
                    {"taken": None, "camera": {"make": "Canon", "model": None, "lens": None}},
                    "past end"),
        # A 60 KB Make: over the 256-byte bound, the rest still read.
        "bigmake.jpg": (with_app1(jpeg, tiff([(0x010F, 2, 60001, b"M" * 60000 + b"\0"),
                                              (0x0110, 2, 4, b"X1D\0")])),
                        {"camera": {"make": None, "model": "X1D", "lens": None}},
                        "Make: 60000 bytes"),
    }


def upload(d, name, data):
    body, ctype = e2e.multipart([], [("image", name, data, "image/jpeg")])
    return d.post("/v1/images?wait=true", body, ctype=ctype)


def gps_close(got, want):
    if want is None:
        return got is None
    return (got is not None and abs(got["lat"] - want[0]) < 1e-6 and
            abs(got["lon"] - want[1]) < 1e-6)


def matches(img, want):
    for k, v in want.items():
        if k == "gps":
            if not gps_close(img.get("gps", "missing"), v):
                return False
        elif img.get(k, "missing") != v:
            return False
    return True


def ingest_tagged(d, tmp):
    base = stripped_rocket(tmp)
    ids = {}
    for name, (args, want) in TAGGED.items():
        r = upload(d, name, tagged(tmp, base, name, args))
        ok(r.status == 200 and r.json["status"] == "ready" and matches(r.json, want),
           "%s: taken, gps, camera and orientation as exiftool wrote them" % name, r)
        if r.status == 200:
            ids[name] = r.json["id"]
    return base, ids


def test_fields(tmp):
    data = os.path.join(tmp, "data-fields")
    d = Daemon("fields", data)
    if not ok(d.start(), "clipd starts"):
        return
    try:
        base, ids = ingest_tagged(d, tmp)
        r = d.get("/v1/images/%d" % ids["paris.jpg"])
        ok(r.status == 200 and matches(r.json, TAGGED["paris.jpg"][1]),
           "GET /v1/images/{id} carries the EXIF fields", r)
        r = d.post("/v1/search", {"text": "a rocket", "k": 10})
        res = r.json["results"] if r.status == 200 else []
        ok(r.status == 200 and len(res) == len(TAGGED) and
           all(matches(x, TAGGED[n][1]) for n in TAGGED for x in res if x["id"] == ids.get(n)),
           "search results carry them, as GET does", r)
        # The instants the filters compare, as stored.
        con = sqlite3.connect(os.path.join(data, "clipd.db"))
        got = {row[0]: row[1] for row in con.execute("SELECT id, taken_ms FROM images")}
        con.close()
        ok(all(got.get(ids[n]) == ms for n, ms in TAKEN_MS.items()) and
           got.get(ids["plain.jpg"]) is None,
           "taken_ms is the instant (a time without a zone read as UTC)", got)

        log_before = len(d.log())
        for name, (blob, want, reason) in hostile_files(base).items():
            r = upload(d, name, blob)
            ok(r.status == 200 and r.json["status"] == "ready" and matches(r.json, want),
               "%s: hostile EXIF never fails the ingest; the good fields are read" % name, r)
            ok(e2e.wait_until(lambda: reason in d.log()[log_before:], 5),
               "%s: the ignored field is logged with its reason (%s)" % (name, reason),
               d.log()[log_before:][-2000:])
    finally:
        e2e.stop_checked(d, "fields")


def clear_exif(db, where="1"):
    con = sqlite3.connect(db)
    con.execute("UPDATE images SET exif_read = 0, taken = NULL, taken_ms = NULL, gps_lat = NULL, "
                "gps_lon = NULL, camera_make = NULL, camera_model = NULL, lens = NULL, "
                "orientation = NULL WHERE " + where)
    con.commit()
    con.close()


def backfill_jobs(d):
    r = d.get("/v1/jobs?limit=100")
    jobs = r.json.get("jobs", []) if r.status == 200 else []
    return [j for j in jobs if j["kind"] == "exif_backfill"]


def test_backfill(tmp):
    data = os.path.join(tmp, "data-backfill")
    db = os.path.join(data, "clipd.db")
    d = Daemon("backfill", data)
    if not ok(d.start(), "clipd starts"):
        return
    try:
        _, ids = ingest_tagged(d, tmp)
    finally:
        e2e.stop_checked(d, "backfill ingest")
    ok(not backfill_jobs_offline(db), "no backfill job while every image was read at ingest")

    # As if stored by a clipd before migration 005: every image unread.
    clear_exif(db)
    if not ok(d.start(), "clipd restarts on the data with every image unread"):
        return
    try:
        job = e2e.wait_until(lambda: [j for j in backfill_jobs(d) if j["state"] == "done"], 30)
        ok(job and job[0]["total"] == len(TAGGED) and job[0]["done"] == len(TAGGED) and
           job[0]["failed"] == 0, "GET /v1/jobs: the exif_backfill job reaches done, %d of %d" %
           (len(TAGGED), len(TAGGED)), backfill_jobs(d))
        bad = [n for n, i in ids.items() if not matches(d.get("/v1/images/%d" % i).json, TAGGED[n][1])]
        ok(not bad, "the backfill brings every field back", bad)
    finally:
        e2e.stop_checked(d, "backfill")

    # Resumed: a job an earlier run left half-way (3 read, its kv key set),
    # the rest unread, and one blob gone.
    con = sqlite3.connect(db)
    first = con.execute("SELECT id FROM jobs WHERE kind = 'exif_backfill'").fetchone()[0]
    con.execute("UPDATE jobs SET state = 1, total = 5, done = 3, failed = 0 WHERE id = ?", (first,))
    con.execute("INSERT INTO kv (key, value) VALUES ('exif_backfill.job', ?)", (str(first),))
    con.commit()
    sha = con.execute("SELECT sha256 FROM images WHERE id = ?", (ids["plain.jpg"],)).fetchone()[0]
    con.close()
    clear_exif(db, "id IN (%d, %d)" % (ids["rio.jpg"], ids["plain.jpg"]))
    os.unlink(os.path.join(data, "blobs", sha[:2], sha))
    if not ok(d.start(), "clipd restarts with a backfill left half-way"):
        return
    try:
        job = e2e.wait_until(lambda: [j for j in backfill_jobs(d) if j["state"] == "done"], 30)
        ok(len(backfill_jobs(d)) == 1 and job and job[0]["id"] == first and
           job[0]["total"] == 5 and job[0]["done"] == 4 and job[0]["failed"] == 1,
           "the same job resumes and ends: 3 earlier, 1 more read, the missing blob failed",
           backfill_jobs(d))
        r = d.get("/v1/images/%d" % ids["rio.jpg"])
        ok(matches(r.json, TAGGED["rio.jpg"][1]), "the resumed backfill reads the rest", r)
        ok("its file cannot be read" in d.log(), "the missing blob is logged", d.log()[-2000:])
    finally:
        e2e.stop_checked(d, "backfill resume")
    con = sqlite3.connect(db)
    left = con.execute("SELECT count(*) FROM images WHERE exif_read = 0").fetchone()[0]
    key = con.execute("SELECT count(*) FROM kv WHERE key = 'exif_backfill.job'").fetchone()[0]
    con.close()
    ok(left == 0 and key == 0, "nothing is left unread and the job's key is gone", (left, key))


def backfill_jobs_offline(db):
    con = sqlite3.connect(db)
    n = con.execute("SELECT count(*) FROM jobs WHERE kind = 'exif_backfill'").fetchone()[0]
    con.close()
    return n


if __name__ == "__main__":
    if not shutil.which("exiftool"):
        print("Bail out! exiftool is missing (Debian's libimage-exiftool-perl, deploy/setup.sh)")
        sys.exit(1)
    sys.exit(e2e.run_tests("clipd-e2e-exif-", [test_fields, test_backfill]))
