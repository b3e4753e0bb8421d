#!/usr/bin/env python3
"""End-to-end: what a search keeps and how it orders it (issue 11 §2) on
the real daemon. About forty JPEGs with distinct pixels, tagged by exiftool
with capture times over several years (with and without offsets, two pairs
of equal wall clocks, several undated), places (Paris within 5 km of its
centre and 20-50 km out, Sydney, New York, both sides of the antimeridian
near Fiji, none), cameras (make and model, make only, model only, none)
and user metadata, uploaded with POST /v1/images?wait=true.

Every expectation is computed here from what this file wrote and from the
unfiltered ranking of the same query (k = every image):
- "taken_after" / "taken_before" alone and combined, inclusive after and
  exclusive before at exact times, the camera's wall clock for zone-less
  bounds and the instant for zoned ones (a zone-less capture time counting
  as UTC), undated images excluded by any bound;
- "near" by the haversine distance (Earth radius 6371.0088 km), at radii
  just above and below a known point's distance, across the antimeridian;
- "camera": a case-insensitive substring of make, model or "make model"
  (LIKE's wildcards taken literally);
- the metadata "filter" combined with all of them; every filtered ranking
  equals the unfiltered one restricted to the kept ids (same order, same
  scores), a filter keeping the 3 worst-ranked images with k = 3 returns
  those 3, and "filtered" counts the kept images;
- "sort": "taken_desc" / "taken_asc" over the best "candidates" (undated
  last, equal times in score order), with offset and k paging, after
  min_score; "facets" year and month (with undated and total) over the
  same set, by the wall clock;
- the GET forms (q=, taken_after, camera, sort, candidates, near=lat,lon,km,
  facets=year,month); keyword and hybrid searches with a filter (hybrid =
  the reciprocal-rank fusion of the two filtered rankings);
- every malformed date, near, sort, facets or candidates, and the image
  filters on the texts collection, is a 400 whose message names the field;
  afterwards the daemon answers as before and holds the same images.

The real clipd on 127.0.0.1 through test_e2e.py's harness (same
environment variables); TAP output. Needs exiftool (deploy/setup.sh) and
mkjpeg ($CLIPD_MKJPEG).
"""
import datetime
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_e2e import ok, Daemon, MKJPEG  # noqa: E402

EARTH_KM = 6371.0088
QUERY = "a photo of a beach"
SCORE_EPS = 1e-6  # the same vectors scored by the same index: the same score

# Places.
PARIS = (48.8566, 2.3522)
EIFFEL, LOUVRE, NOTRE_DAME = (48.8584, 2.2945), (48.8606, 2.3376), (48.8530, 2.3499)
MONTMARTRE, BASTILLE = (48.8867, 2.3431), (48.8532, 2.3691)
DISNEY, CHANTILLY, RAMBOUILLET = (48.8722, 2.7758), (49.1940, 2.4710), (48.6437, 1.8299)
MEAUX, PONTOISE = (48.9601, 2.8788), (49.0507, 2.1008)
SYDNEY, BONDI = (-33.8568, 151.2153), (-33.8915, 151.2767)
LIBERTY, TIMES_SQ, CENTRAL_PARK = (40.6892, -74.0445), (40.7580, -73.9855), (40.7829, -73.9654)
SUVA, TAVEUNI = (-18.1416, 178.4419), (-16.85, -179.93)

CANON, APPLE = ("Canon", "Canon EOS R5"), ("Apple", "iPhone 12")
FUJI, PIXEL = ("FUJIFILM", None), (None, "Pixel 8")

# name, DateTimeOriginal (wall clock) or None, OffsetTimeOriginal or None,
# (lat, lon) or None, (make, model) or None, album.
FIXED = [
    ("beach_01.jpg", "2021-07-04 18:30:00", "+02:00", EIFFEL, CANON, "trip"),
    ("city_02.jpg", "2021-07-04 16:30:00", None, LOUVRE, APPLE, "trip"),  # beach_01's instant
    ("city_03.jpg", "2021-07-20 09:15:00", "+02:00", NOTRE_DAME, CANON, "trip"),
    ("forest_04.jpg", "2021-08-01 00:00:00", None, DISNEY, None, "trip"),
    ("city_05.jpg", "2021-12-31 23:30:00", "-05:00", LIBERTY, APPLE, "home"),  # 2022 in UTC
    ("city_06.jpg", "2022-01-01 00:00:00", None, TIMES_SQ, None, "home"),
    ("harbour_07.jpg", "2016-10-12 08:05:03", "+11:00", SYDNEY, CANON, "trip"),
    ("harbour_08.jpg", "2016-10-12 08:05:03", None, BONDI, None, "trip"),  # = 07's wall clock
    ("beach_09.jpg", "2020-05-01 12:00:00", None, SUVA, APPLE, "trip"),
    ("beach_10.jpg", "2020-05-01 12:00:00", "+12:00", TAVEUNI, None, "trip"),  # = 09's
    ("garden_11.jpg", "2020-02-29 10:00:00", None, MONTMARTRE, FUJI, "home"),
    ("forest_12.jpg", "2019-03-10 08:00:00", None, CHANTILLY, CANON, "home"),
    ("garden_13.jpg", None, None, BASTILLE, CANON, "home"),
    ("garden_14.jpg", None, None, None, None, "home"),
    ("mountain_15.jpg", None, None, RAMBOUILLET, APPLE, "trip"),
    ("mountain_16.jpg", None, None, None, CANON, "trip"),
    ("mountain_17.jpg", "2018-06-15 14:00:00", "+05:30", None, PIXEL, "home"),
    ("city_18.jpg", "2023-03-05 07:45:10", "-04:00", CENTRAL_PARK, APPLE, "home"),
]


def bulk(n, seed=2024):
    """n more images from a fixed seed: times 2017-2023 (one in five
    undated), places around Paris, New York, Sydney or none, any camera."""
    rnd = random.Random(seed)
    words = ["beach", "forest", "city", "harbour", "garden", "mountain"]
    outer = [DISNEY, CHANTILLY, RAMBOUILLET, MEAUX, PONTOISE]
    out = []
    for j in range(n):
        idx = len(FIXED) + 1 + j
        name = "%s_%02d.jpg" % (words[j % len(words)], idx)
        if rnd.random() < 0.2:
            wall, off = None, None
        else:
            wall = "%04d-%02d-%02d %02d:%02d:%02d" % (
                rnd.randint(2017, 2023), rnd.randint(1, 12), rnd.randint(1, 28),
                rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59))
            off = rnd.choice([None, None, "+01:00", "+05:30", "-07:00"])
        kind = rnd.randrange(6)
        if kind == 0:
            place = None
        elif kind in (1, 2):  # within ~2 km of Paris's centre
            place = (round(PARIS[0] + rnd.uniform(-0.015, 0.015), 5),
                     round(PARIS[1] + rnd.uniform(-0.02, 0.02), 5))
        elif kind == 3:
            place = rnd.choice(outer)
        elif kind == 4:
            place = (round(TIMES_SQ[0] + rnd.uniform(-0.05, 0.05), 5),
                     round(TIMES_SQ[1] + rnd.uniform(-0.05, 0.05), 5))
        else:
            place = (round(SYDNEY[0] + rnd.uniform(-0.05, 0.05), 5),
                     round(SYDNEY[1] + rnd.uniform(-0.05, 0.05), 5))
        camera = rnd.choice([None, None, CANON, CANON, APPLE, APPLE, FUJI, PIXEL])
        out.append((name, wall, off, place, camera, rnd.choice(["trip", "home", "work"])))
    return out


IMAGES = FIXED + bulk(20)


# ---- what the test expects, from what it wrote ------------------------------

class Img:
    def __init__(self, i, spec):
        self.i = i
        self.name, wall, self.offset, self.gps, self.camera, self.album = spec
        self.word = self.name.split("_")[0]
        self.wall = datetime.datetime.strptime(wall, "%Y-%m-%d %H:%M:%S") if wall else None
        if self.wall is None:
            self.instant = None
        else:
            tz = datetime.timezone.utc
            if self.offset:
                sign = -1 if self.offset[0] == "-" else 1
                h, m = int(self.offset[1:3]), int(self.offset[4:6])
                tz = datetime.timezone(sign * datetime.timedelta(hours=h, minutes=m))
            self.instant = self.wall.replace(tzinfo=tz)
        self.id = None

    def taken(self):
        if not self.wall:
            return None
        return self.wall.strftime("%Y-%m-%dT%H:%M:%S") + (self.offset or "")

    def meta(self):
        return {"album": self.album, "i": self.i}

    def exiftool_args(self):
        a = []
        if self.wall:
            a.append("-DateTimeOriginal=" + self.wall.strftime("%Y:%m:%d %H:%M:%S"))
        if self.offset:
            a.append("-OffsetTimeOriginal=" + self.offset)
        if self.gps:
            lat, lon = self.gps
            a += ["-GPSLatitude=%s" % abs(lat), "-GPSLatitudeRef=" + ("S" if lat < 0 else "N"),
                  "-GPSLongitude=%s" % abs(lon), "-GPSLongitudeRef=" + ("W" if lon < 0 else "E")]
        if self.camera:
            if self.camera[0]:
                a.append("-Make=" + self.camera[0])
            if self.camera[1]:
                a.append("-Model=" + self.camera[1])
        return a


def haversine(a, b):
    la1, lo1, la2, lo2 = (math.radians(x) for x in (a[0], a[1], b[0], b[1]))
    h = (math.sin((la2 - la1) / 2) ** 2 +
         math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2)
    return 2 * EARTH_KM * math.asin(math.sqrt(min(1.0, h)))


def parse_bound(s):
    """An ISO 8601 bound as (datetime, zoned): aware when it has a zone."""
    if re.fullmatch(r"\d{4}", s):
        s += "-01-01"
    elif re.fullmatch(r"\d{4}-\d{2}", s):
        s += "-01"
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    t = datetime.datetime.fromisoformat(s)
    return t, t.tzinfo is not None


def time_ok(img, after, before):
    if after is None and before is None:
        return True
    if img.wall is None:
        return False
    for bound, is_after in ((after, True), (before, False)):
        if bound is None:
            continue
        t, zoned = parse_bound(bound)
        mine = img.instant if zoned else img.wall
        if (mine < t) if is_after else (mine >= t):
            return False
    return True


def camera_ok(img, s):
    if s is None:
        return True
    if not img.camera:
        return False
    make, model = img.camera
    hay = [x for x in (make, model) if x]
    if make and model:
        hay.append(make + " " + model)
    return any(s.lower() in h.lower() for h in hay)


def meta_ok(img, f):
    for key, want in (f or {}).items():
        have = img.meta().get(key, KeyError)
        if have is KeyError:
            return False
        accepted = want if isinstance(want, list) else [want]
        if not any(type(have) is type(w) and have == w for w in accepted):
            return False
    return True


def keeps(img, body):
    """Whether the conditions of a search body keep img."""
    near = body.get("near")
    return (time_ok(img, body.get("taken_after"), body.get("taken_before")) and
            camera_ok(img, body.get("camera")) and meta_ok(img, body.get("filter")) and
            (near is None or (img.gps is not None and
                              haversine((near["lat"], near["lon"]), img.gps) <= near["km"])))


def date_order(ranking, by_id, desc):
    """The date sort of ranking [(id, score)]: wall clock newest (or oldest)
    first, equal times and the undated (last) in ranking order."""
    dated = [(pos, x) for pos, x in enumerate(ranking) if by_id[x[0]].wall]
    undated = [x for x in ranking if not by_id[x[0]].wall]
    dated.sort(key=lambda p: ((-1 if desc else 1) * by_id[p[1][0]].wall.timestamp(), p[0]))
    return [x for _, x in dated] + undated


def facets_of(ranking, by_id, year=True, month=True):
    out = {}
    walls = [by_id[i].wall for i, _ in ranking if by_id[i].wall]
    for key, fmt in (("year", "%Y"), ("month", "%Y-%m")):
        if (year if key == "year" else month):
            counts = {}
            for w in walls:
                counts[w.strftime(fmt)] = counts.get(w.strftime(fmt), 0) + 1
            out[key] = [{"value": v, "count": counts[v]} for v in sorted(counts)]
    out["undated"] = len(ranking) - len(walls)
    out["total"] = len(ranking)
    return out


# ---- talking to the daemon ----------------------------------------------------

def search(d, **body):
    return d.post("/v1/search", body)


def ranked(r):
    return [(x["id"], x["score"]) for x in r.json["results"]] if r.status == 200 and r.json \
        else None


def same(got, want):
    return (got is not None and len(got) == len(want) and
            all(g[0] == w[0] and abs(g[1] - w[1]) <= SCORE_EPS for g, w in zip(got, want)))


def show(got, want, by_id):
    def names(xs):
        return [(by_id[i].name if i in by_id else i, round(s, 6)) for i, s in xs or []]
    return "got  %s\nwant %s" % (json.dumps(names(got)), json.dumps(names(want)))


def make_images(tmp):
    """The JPEGs: distinct colour fields (a 6x6 seeded PNG that mkjpeg
    scales up, adding its noise), tagged by one exiftool run."""
    imgs = [Img(i, spec) for i, spec in enumerate(IMAGES)]
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    argfile = []
    for im in imgs:
        png = os.path.join(src, im.name[:-4] + ".png")
        with open(png, "wb") as f:
            f.write(e2e.png_bytes(6, 6, 1000 + im.i))
        im.path = os.path.join(src, im.name)
        subprocess.run([MKJPEG, png, im.path, "96", "96"], check=True)
        args = im.exiftool_args()
        if args:
            argfile += ["-q", "-q", "-overwrite_original"] + args + [im.path, "-execute"]
    with open(os.path.join(tmp, "exiftool.args"), "w") as f:
        f.write("\n".join(argfile) + "\n")
    subprocess.run(["exiftool", "-@", os.path.join(tmp, "exiftool.args")], check=True)
    return imgs


def upload(d, im):
    with open(im.path, "rb") as f:
        data = f.read()
    body, ctype = e2e.multipart([("meta", json.dumps(im.meta()))],
                                [("image", im.name, data, "image/jpeg")])
    return d.post("/v1/images?wait=true", body, ctype=ctype)


def as_written(r, im):
    j = r.json or {}
    gps = j.get("gps")
    if im.gps is None:
        gps_good = gps is None
    else:
        gps_good = (gps is not None and abs(gps["lat"] - im.gps[0]) < 1e-6 and
                    abs(gps["lon"] - im.gps[1]) < 1e-6)
    cam = j.get("camera")
    cam_good = (cam is None if not im.camera else
                cam is not None and (cam.get("make"), cam.get("model")) == im.camera)
    return (r.status == 200 and j.get("status") == "ready" and j.get("taken") == im.taken() and
            gps_good and cam_good and j.get("meta") == im.meta())


# ---- the cases ------------------------------------------------------------------

class Ctx:
    pass


def check_filter(c, name, body, k=1000, offset=0, **extra):
    """body's conditions against the unfiltered ranking restricted to the
    ids they keep (in order, with their scores), and "filtered"."""
    kept = [im for im in c.imgs if keeps(im, body)]
    want_all = [x for x in c.full if keeps(c.by_id[x[0]], body)]
    want = want_all[offset:offset + k]
    r = search(c.d, text=QUERY, k=k, offset=offset, **body, **extra)
    got = ranked(r)
    good = same(got, want) and r.json.get("filtered") == len(kept)
    ok(good, "%s: %d of %d kept, the restricted ranking (ids, scores)%s" %
       (name, len(kept), len(c.imgs), " [%d:%d]" % (offset, offset + k) if offset or
        k < 1000 else ""),
       "%s\nfiltered %s, want %d\n%r" % (show(got, want, c.by_id),
                                         (r.json or {}).get("filtered"), len(kept), r))
    return kept


def case_each_and_combined(c):
    for name, body in (
            ("taken_after 2021", {"taken_after": "2021"}),
            ("taken_before 2019-06", {"taken_before": "2019-06"}),
            ("near Paris 5 km", {"near": {"lat": PARIS[0], "lon": PARIS[1], "km": 5}}),
            ("near Paris 50 km", {"near": {"lat": PARIS[0], "lon": PARIS[1], "km": 50}}),
            ("camera canon", {"camera": "canon"}),
            ("filter album home", {"filter": {"album": "home"}}),
            ("filter album [home, work]", {"filter": {"album": ["home", "work"]}}),
            ("taken_after 2018 + taken_before 2021-07-05",
             {"taken_after": "2018", "taken_before": "2021-07-05"}),
            ("taken_after 2020 + near Paris 50 km",
             {"taken_after": "2020", "near": {"lat": PARIS[0], "lon": PARIS[1], "km": 50}}),
            ("camera apple + filter album trip", {"camera": "apple", "filter": {"album": "trip"}}),
            ("near New York 30 km + camera apple",
             {"near": {"lat": 40.75, "lon": -74.0, "km": 30}, "camera": "apple"}),
            ("dates + near + camera + filter",
             {"taken_after": "2016-01-01", "taken_before": "2022-01-01T00:00:00Z",
              "near": {"lat": PARIS[0], "lon": PARIS[1], "km": 60}, "camera": "CANON",
              "filter": {"album": ["trip", "home"]}}),
            ("a zone-less after with a zoned before",
             {"taken_after": "2020-05-01T12:00", "taken_before": "2021-12-31T23:59:59-05:00"}),
            ("taken_before 2100: every dated image, no undated one", {"taken_before": "2100"}),
            ("the leap day 2020-02-29 is a date", {"taken_after": "2020-02-29",
                                                   "taken_before": "2020-03-01"}),
            ("a filter keeping nothing", {"camera": "Hasselblad"})):
        check_filter(c, name, body)
    # Paging counts filtered results; k smaller than the kept set.
    check_filter(c, "camera canon, k 4 offset 2", {"camera": "canon"}, k=4, offset=2)
    check_filter(c, "near Paris 50 km, k 3", {"near": {"lat": PARIS[0], "lon": PARIS[1],
                                                       "km": 50}}, k=3)
    r = search(c.d, text=QUERY, k=5)
    ok(r.status == 200 and "filtered" not in r.json,
       "without a filter the response has no 'filtered'", r)


def case_three_of_all(c):
    worst = c.full[-3:]
    body = {"filter": {"i": [c.by_id[i].i for i, _ in worst]}}
    r = search(c.d, text=QUERY, k=3, **body)
    got = ranked(r)
    ok(same(got, worst) and r.json.get("filtered") == 3,
       "a filter keeping the 3 worst-ranked of %d with k=3 returns exactly those 3, in order"
       % len(c.imgs), show(got, worst, c.by_id) + "\n%r" % r)
    # The 3 photos before 2018 by the table (a date filter inside the search).
    body = {"taken_before": "2018"}
    want = [x for x in c.full if keeps(c.by_id[x[0]], body)]
    r = search(c.d, text=QUERY, k=3, **body)
    ok(len(want) == 3 and same(ranked(r), want) and r.json.get("filtered") == 3,
       "taken_before 2018 keeps %d, k=3 returns them all in ranking order" % len(want),
       show(ranked(r), want, c.by_id))


def case_bounds(c):
    """Exact times. beach_01: 2021-07-04T18:30:00+02:00 (16:30Z); city_02:
    2021-07-04T16:30:00 without a zone (16:30 as UTC)."""
    b01, c02 = c.by_name["beach_01.jpg"], c.by_name["city_02.jpg"]
    for im, bound, value, kept in (
            (b01, "taken_after", "2021-07-04T18:30", True),
            (b01, "taken_after", "2021-07-04T18:30:00", True),
            (b01, "taken_after", "2021-07-04 18:30:00", True),
            (b01, "taken_before", "2021-07-04T18:30", False),
            (b01, "taken_before", "2021-07-04T18:30:01", True),
            (b01, "taken_after", "2021-07-04T18:30:00.250", False),
            (b01, "taken_before", "2021-07-04T18:30:00.250", True),
            (b01, "taken_after", "2021-07-04T17:00:00Z", False),
            (b01, "taken_before", "2021-07-04T17:00:00Z", True),
            (b01, "taken_after", "2021-07-04T16:30:00Z", True),
            (b01, "taken_before", "2021-07-04T16:30:00Z", False),
            (b01, "taken_after", "2021-07-04T18:30:00+02:00", True),
            (b01, "taken_before", "2021-07-04T18:30:00+02:00", False),
            (b01, "taken_after", "2021-07-04T19:30+03:00", True),
            (b01, "taken_after", "2021-07-04T16:30:00.001Z", False),
            (b01, "taken_after", "2021-07-04", True),
            (b01, "taken_before", "2021-07-04", False),
            (b01, "taken_before", "2021-07-05", True),
            (b01, "taken_after", "2021-07", True),
            (b01, "taken_before", "2021-07", False),
            (b01, "taken_before", "2022", True),
            (c02, "taken_after", "2021-07-04T16:30:00Z", True),
            (c02, "taken_before", "2021-07-04T18:30:00+02:00", False),
            (c02, "taken_after", "2021-07-04T17:30+01:00", True),
            (c02, "taken_after", "2021-07-04T16:30:01Z", False),
            (c02, "taken_after", "2021-07-04T16:30", True),
            (c02, "taken_before", "2021-07-04T16:30", False)):
        body = {bound: value}
        want = [x for x in c.full if keeps(c.by_id[x[0]], body)]
        r = search(c.d, text=QUERY, k=1000, **body)
        got = ranked(r)
        ok(got is not None and (im.id in [i for i, _ in got]) == kept and
           keeps(im, body) == kept and same(got, want),
           "%s %s: %s %s it (and the rest as computed)" %
           (bound, value, im.name, "keeps" if kept else "drops"), show(got, want, c.by_id))
    # The wall clock against the instant: city_05 is 2021-12-31T23:30-05:00.
    c05 = c.by_name["city_05.jpg"]
    for body, kept in (({"taken_after": "2022"}, False),
                       ({"taken_after": "2022-01-01T00:00:00Z"}, True),
                       ({"taken_before": "2022"}, True),
                       ({"taken_before": "2022-01-01T04:30:00Z"}, False),
                       ({"taken_before": "2022-01-01T04:30:00.001Z"}, True)):
        r = search(c.d, text=QUERY, k=1000, **body)
        got = ranked(r)
        want = [x for x in c.full if keeps(c.by_id[x[0]], body)]
        ok(got is not None and (c05.id in [i for i, _ in got]) == kept and same(got, want),
           "%s: city_05 (23:30-05:00 on New Year's Eve) %s" %
           (json.dumps(body), "kept" if kept else "dropped"), show(got, want, c.by_id))


def case_near(c):
    for point, name in ((DISNEY, "forest_04.jpg"), (EIFFEL, "beach_01.jpg")):
        dist = haversine(PARIS, point)
        for km, kept in ((dist + 0.01, True), (dist - 0.01, False)):
            body = {"near": {"lat": PARIS[0], "lon": PARIS[1], "km": km}}
            want = [x for x in c.full if keeps(c.by_id[x[0]], body)]
            r = search(c.d, text=QUERY, k=1000, **body)
            got = ranked(r)
            ok(got is not None and (c.by_name[name].id in [i for i, _ in got]) == kept and
               same(got, want) and r.json.get("filtered") == len(want),
               "near Paris %.3f km (%s at %.3f km) %s it" %
               (km, name, dist, "keeps" if kept else "drops"), show(got, want, c.by_id))
    # Across the antimeridian: Suva (178.4 E) and Taveuni (179.95 W).
    body = {"near": {"lat": -17.5, "lon": 179.9, "km": 200}}
    want = [x for x in c.full if keeps(c.by_id[x[0]], body)]
    r = search(c.d, text=QUERY, k=1000, **body)
    ok(sorted(i for i, _ in want) == sorted([c.by_name["beach_09.jpg"].id,
                                             c.by_name["beach_10.jpg"].id]) and
       same(ranked(r), want),
       "near Fiji 200 km: both sides of the antimeridian (%.1f and %.1f km)" %
       (haversine((-17.5, 179.9), SUVA), haversine((-17.5, 179.9), TAVEUNI)),
       show(ranked(r), want, c.by_id))
    check_filter(c, "near Sydney 10 km", {"near": {"lat": SYDNEY[0], "lon": SYDNEY[1], "km": 10}})
    check_filter(c, "near the North Pole 1000 km (nothing)",
                 {"near": {"lat": 90, "lon": 0, "km": 1000}})
    check_filter(c, "near 0,0 20000 km (every placed image)",
                 {"near": {"lat": 0, "lon": 0, "km": 20040}})


def case_camera(c):
    for value in ("canon", "CANON", "eos r5", "Apple iPhone", "iphone 12", "fujifilm",
                  "pixel", "canon eos", "EOS_R5", "%", "Apple iPhone 12 Pro"):
        check_filter(c, "camera %r" % value, {"camera": value})
    apple = {im.id for im in c.imgs if im.camera == APPLE}
    r = search(c.d, text=QUERY, k=1000, camera="apple IPHONE 1")
    ok(r.status == 200 and {x["id"] for x in r.json["results"]} == apple and apple,
       "camera 'apple IPHONE 1' matches \"make model\" case-insensitively", r)


def case_sorts(c):
    n = len(c.imgs)
    by_id = c.by_id
    for sort, desc in (("taken_desc", True), ("taken_asc", False)):
        for cand in (n, 15, 1):
            want = date_order(c.full[:cand], by_id, desc)
            r = search(c.d, text=QUERY, k=1000, sort=sort, candidates=cand)
            got = ranked(r)
            ok(same(got, want) and r.json.get("sort") == sort and
               r.json.get("candidates") == cand,
               "sort %s candidates %d: the best %d by wall clock, undated last, ties in "
               "score order" % (sort, cand, cand), show(got, want, by_id) + "\n%r" % r)
    # The test data has what the order must get right within the best n.
    allw = date_order(c.full, by_id, True)
    pos = {x[0]: p for p, x in enumerate(allw)}
    ties = [("harbour_07.jpg", "harbour_08.jpg"), ("beach_09.jpg", "beach_10.jpg")]
    rank = {x[0]: p for p, x in enumerate(c.full)}
    good = all(abs(pos[c.by_name[a].id] - pos[c.by_name[b].id]) == 1 for a, b in ties)
    r = search(c.d, text=QUERY, k=1000, sort="taken_desc")
    got = [i for i, _ in ranked(r) or []]
    for a, b in ties:
        ia, ib = c.by_name[a].id, c.by_name[b].id
        first, second = (ia, ib) if rank[ia] < rank[ib] else (ib, ia)
        good = good and first in got and second in got and got.index(second) == \
            got.index(first) + 1
    undated = [im.id for im in c.imgs if not im.wall]
    good = good and set(got[-len(undated):]) == set(undated) and \
        got[-len(undated):] == [x[0] for x in c.full if x[0] in set(undated)]
    ok(good and r.json.get("sort") == "taken_desc" and r.json.get("candidates") == n,
       "taken_desc (default candidates): equal wall clocks (one with an offset) in score "
       "order, the %d undated last in score order" % len(undated),
       show(ranked(r), allw, by_id))
    # Paging through the date order.
    want = date_order(c.full[:20], by_id, True)
    for k, off in ((5, 0), (5, 5), (5, 15), (5, 18), (5, 20)):
        r = search(c.d, text=QUERY, k=k, offset=off, sort="taken_desc", candidates=20)
        got = ranked(r)
        ok(same(got, want[off:off + k]) and r.json.get("candidates") == 20,
           "taken_desc candidates 20, k %d offset %d: that page of the date order" % (k, off),
           show(got, want[off:off + k], by_id))
    # Filtered, then sorted.
    body = {"near": {"lat": PARIS[0], "lon": PARIS[1], "km": 50}}
    filt = [x for x in c.full if keeps(by_id[x[0]], body)]
    for cand in (len(filt), 4):
        want = date_order(filt[:cand], by_id, False)
        r = search(c.d, text=QUERY, k=1000, sort="taken_asc", candidates=cand, **body)
        got = ranked(r)
        ok(same(got, want) and r.json.get("candidates") == min(cand, len(filt)) and
           r.json.get("filtered") == len(filt),
           "near Paris 50 km + taken_asc candidates %d: the filtered best %d by date" %
           (cand, cand), show(got, want, by_id) + "\n%r" % r)
    # candidates larger than what the filter keeps: every kept one.
    body = {"camera": "apple"}
    filt = [x for x in c.full if keeps(by_id[x[0]], body)]
    want = date_order(filt, by_id, True)
    r = search(c.d, text=QUERY, k=1000, sort="taken_desc", candidates=10000, **body)
    ok(same(ranked(r), want) and r.json.get("candidates") == len(filt),
       "camera apple + taken_desc candidates 10000: candidates = the %d kept" % len(filt),
       show(ranked(r), want, by_id) + "\n%r" % r)
    # min_score first, then the date order over what passes.
    cut = (c.full[11][1] + c.full[12][1]) / 2
    above = [x for x in c.full if x[1] >= cut]
    for cand, k, off in ((n, 1000, 0), (5, 1000, 0), (n, 4, 3)):
        best = above[:cand]
        want = date_order(best, by_id, True)[off:off + k]
        r = search(c.d, text=QUERY, k=k, offset=off, sort="taken_desc", candidates=cand,
                   min_score=cut)
        got = ranked(r)
        ok(len(above) == 12 and same(got, want) and r.json.get("candidates") == len(best),
           "min_score (12 pass) + taken_desc candidates %d, k %d offset %d" % (cand, k, off),
           show(got, want, by_id) + "\n%r" % r)
    r = search(c.d, text=QUERY, k=3, sort="score")
    ok(same(ranked(r), c.full[:3]) and r.json.get("sort") == "score",
       "sort score is the ranking", r)


def case_facets(c):
    n = len(c.imgs)
    for name, body, cand, kinds in (
            ("facets year, month over every image", {}, None, ["year", "month"]),
            ("facets year over the best 10", {}, 10, ["year"]),
            ("facets month over the best 7", {}, 7, ["month"]),
            ("facets with a filter (album trip)", {"filter": {"album": "trip"}}, None,
             ["year", "month"]),
            ("facets with near Paris 50 km, best 6", {"near": {"lat": PARIS[0], "lon": PARIS[1],
                                                                "km": 50}}, 6, ["month", "year"])):
        filt = [x for x in c.full if keeps(c.by_id[x[0]], body)]
        seen = filt[:cand or 500]
        want = facets_of(seen, c.by_id, "year" in kinds, "month" in kinds)
        extra = {"candidates": cand} if cand else {}
        r = search(c.d, text=QUERY, k=5, facets=kinds, **body, **extra)
        ok(r.status == 200 and r.json.get("facets") == want and
           r.json.get("candidates") == len(seen) and same(ranked(r), filt[:5]),
           "%s: %d seen, counts by the wall clock, the results unchanged" % (name, len(seen)),
           "got  %s\nwant %s" % (json.dumps((r.json or {}).get("facets")), json.dumps(want)))
    # The wall clock decides: city_05 (2021-12-31T23:30-05:00) counts in 2021-12.
    want = facets_of(c.full, c.by_id)
    ok(any(b == {"value": "2021-12", "count": b["count"]} for b in want["month"]) and
       want["undated"] > 0 and len(want["year"]) >= 6,
       "the test data spans %d years with %d undated" % (len(want["year"]), want["undated"]),
       want)
    # With a date sort: the same set as the sort.
    want_f = facets_of(c.full[:12], c.by_id)
    want_r = date_order(c.full[:12], c.by_id, False)[:4]
    r = search(c.d, text=QUERY, k=4, sort="taken_asc", candidates=12, facets=["year", "month"])
    ok(r.status == 200 and r.json.get("facets") == want_f and same(ranked(r), want_r),
       "taken_asc candidates 12 + facets: facets of the same 12", r)
    r = search(c.d, text=QUERY, k=5)
    ok(r.status == 200 and "facets" not in r.json, "no facets unless asked", r)
    del n


def case_get(c):
    by_id = c.by_id

    def get(params):
        return c.d.get("/v1/search?" + urllib.parse.urlencode(params))

    body = {"taken_after": "2020"}
    want = [x for x in c.full if keeps(by_id[x[0]], body)]
    r = get({"q": QUERY, "k": 1000, "taken_after": "2020"})
    ok(same(ranked(r), want) and r.json.get("filtered") == len(want),
       "GET q=&taken_after=2020", show(ranked(r), want, by_id))
    body = {"taken_after": "2019-03-10T08:00:00", "taken_before": "2021-07-04T16:30:00Z"}
    want = [x for x in c.full if keeps(by_id[x[0]], body)]
    r = get(dict(q=QUERY, k=1000, **body))
    ok(same(ranked(r), want), "GET taken_after + taken_before (zoned)",
       show(ranked(r), want, by_id))
    body = {"near": {"lat": PARIS[0], "lon": PARIS[1], "km": 5}}
    want = [x for x in c.full if keeps(by_id[x[0]], body)]
    r = get({"q": QUERY, "k": 1000, "near": "%s,%s,5" % PARIS})
    ok(same(ranked(r), want) and len(want) >= 5, "GET near=48.8566,2.3522,5",
       show(ranked(r), want, by_id))
    body = {"near": {"lat": 40.75, "lon": -74.0, "km": 30}}
    want = [x for x in c.full if keeps(by_id[x[0]], body)]
    r = get({"q": QUERY, "k": 1000, "near": "40.75,-74.0,30"})
    ok(same(ranked(r), want) and want, "GET near=40.75,-74.0,30 (western hemisphere)",
       show(ranked(r), want, by_id))
    body = {"camera": "IPHONE"}
    want = [x for x in c.full if keeps(by_id[x[0]], body)]
    r = get({"q": QUERY, "k": 1000, "camera": "IPHONE"})
    ok(same(ranked(r), want), "GET camera=IPHONE", show(ranked(r), want, by_id))
    want = date_order(c.full[:15], by_id, True)[2:8]
    r = get({"q": QUERY, "k": 6, "offset": 2, "sort": "taken_desc", "candidates": 15})
    ok(same(ranked(r), want) and r.json.get("sort") == "taken_desc" and
       r.json.get("candidates") == 15, "GET sort=taken_desc&candidates=15&k=6&offset=2",
       show(ranked(r), want, by_id))
    body = {"camera": "canon"}
    filt = [x for x in c.full if keeps(by_id[x[0]], body)]
    want = facets_of(filt, by_id)
    r = get({"q": QUERY, "k": 3, "camera": "canon", "facets": "year,month"})
    ok(r.status == 200 and r.json.get("facets") == want and same(ranked(r), filt[:3]),
       "GET camera=canon&facets=year,month",
       "got  %s\nwant %s" % (json.dumps((r.json or {}).get("facets")), json.dumps(want)))
    body = {"taken_after": "2017", "near": {"lat": PARIS[0], "lon": PARIS[1], "km": 50}}
    filt = [x for x in c.full if keeps(by_id[x[0]], body)]
    want = date_order(filt, by_id, False)
    r = get({"q": QUERY, "k": 1000, "taken_after": "2017", "near": "%s,%s,50" % PARIS,
             "sort": "taken_asc", "facets": "year"})
    ok(same(ranked(r), want) and r.json.get("facets") == facets_of(filt, by_id, True, False),
       "GET taken_after + near + sort=taken_asc + facets=year", show(ranked(r), want, by_id))


def case_keyword_hybrid(c):
    by_id = c.by_id
    words = "beach OR harbour"
    r = search(c.d, text=words, mode="keyword", k=100)
    kw_all = ranked(r) or []
    named = {im.id for im in c.imgs if im.word in ("beach", "harbour")}
    ok({i for i, _ in kw_all} == named and named,
       "keyword %r finds the %d images of those file names" % (words, len(named)), r)
    for body in ({"camera": "canon"}, {"taken_after": "2020"},
                 {"near": {"lat": PARIS[0], "lon": PARIS[1], "km": 50},
                  "filter": {"album": ["trip", "home"]}}):
        want = [x for x in kw_all if keeps(by_id[x[0]], body)]
        r = search(c.d, text=words, mode="keyword", k=100, **body)
        got = ranked(r)
        ok(same(got, want) and r.json.get("mode") == "keyword" and
           r.json.get("filtered") == len([im for im in c.imgs if keeps(im, body)]),
           "keyword %r + %s: the keyword ranking restricted (%d)" %
           (words, json.dumps(body), len(want)), show(got, want, by_id))
    body = {"taken_before": "2022"}
    want = date_order([x for x in kw_all if keeps(by_id[x[0]], body)], by_id, True)
    r = search(c.d, text=words, mode="keyword", k=100, sort="taken_desc", **body)
    ok(same(ranked(r), want), "keyword + taken_before + taken_desc",
       show(ranked(r), want, by_id))
    # Hybrid: the RRF (k 60) of the two filtered rankings, computed here.
    r = search(c.d, text=words, k=1000)
    vec_all = ranked(r) or []
    for body in ({"camera": "canon"}, {"taken_after": "2019", "taken_before": "2022"}):
        vec = [i for i, _ in vec_all if keeps(by_id[i], body)]
        kw = [i for i, _ in kw_all if keeps(by_id[i], body)]
        rank = {}
        for p, i in enumerate(vec):
            rank.setdefault(i, [None, None])[0] = p + 1
        for p, i in enumerate(kw):
            rank.setdefault(i, [None, None])[1] = p + 1
        want = []
        for i, (v, k) in rank.items():
            s = (1.0 / (60 + v) if v else 0.0) + (1.0 / (60 + k) if k else 0.0)
            want.append((i, s, v, k))
        inf = float("inf")
        want.sort(key=lambda t: (-t[1], t[2] or inf, t[3] or inf, t[0]))
        want = want[:20]
        r = search(c.d, text=words, mode="hybrid", **body)
        got = [(x["id"], x["score"], x["vector_rank"], x["keyword_rank"])
               for x in r.json["results"]] if r.status == 200 else None
        good = got is not None and len(got) == len(want) and all(
            g[0] == w[0] and abs(g[1] - w[1]) < 1e-6 and g[2] == w[2] and g[3] == w[3]
            for g, w in zip(got, want))
        ok(good and all(keeps(by_id[g[0]], body) for g in got),
           "hybrid %r + %s: the RRF of the filtered vector and keyword rankings" %
           (words, json.dumps(body)),
           "got  %s\nwant %s" % (json.dumps((got or [])[:8]), json.dumps(want[:8])))


def case_errors(c):
    def bad(name, r, field):
        ok(r.status == 400 and r.err_code() == "bad_request" and
           field.lower() in r.err_msg().lower(),
           "%s: 400, the message names %s" % (name, field), r)

    s = c.d
    for field in ("taken_after", "taken_before"):
        for value in ("2021-13-01", "2021-02-30", "2021-02-29", "yesterday", "2021-07-04T24:00",
                      "2021-07-04T18:30:00+02:00x", "", 2021):
            bad("%s %s" % (field, json.dumps(value)),
                search(s, text=QUERY, **{field: value}), field)
    for value in ({"lat": 48.8, "lon": 2.3}, {"lat": 48.8, "km": 5}, {"lon": 2.3, "km": 5},
                  {"lat": 91, "lon": 2.3, "km": 5}, {"lat": -90.5, "lon": 2.3, "km": 5},
                  {"lat": 48.8, "lon": 181, "km": 5}, {"lat": 48.8, "lon": 2.3, "km": -1},
                  {"lat": "48.8", "lon": 2.3, "km": 5}, "48.8,2.3,5", [48.8, 2.3, 5]):
        bad("near %s" % json.dumps(value), search(s, text=QUERY, near=value), "near")
    bad("sort newest", search(s, text=QUERY, sort="newest"), "sort")
    bad("sort 1", search(s, text=QUERY, sort=1), "sort")
    bad("facets [day]", search(s, text=QUERY, facets=["day"]), "facets")
    bad("facets [year, 3]", search(s, text=QUERY, facets=["year", 3]), "facets")
    bad("facets \"year\" (not an array)", search(s, text=QUERY, facets="year"), "facets")
    for value in (0, 10001, -5, "many"):
        bad("candidates %s" % json.dumps(value),
            search(s, text=QUERY, sort="taken_desc", candidates=value), "candidates")
    bad("camera 5", search(s, text=QUERY, camera=5), "camera")
    for field, value in (("taken_after", "2021"), ("taken_before", "2021"),
                         ("near", {"lat": 1, "lon": 2, "km": 3}), ("camera", "canon"),
                         ("sort", "taken_desc"), ("facets", ["year"])):
        bad("%s on the texts collection" % field,
            search(s, text=QUERY, collection="texts", **{field: value}), field)
    for params, field in (([("taken_after", "yesterday")], "taken_after"),
                          ([("taken_before", "2021-02-30")], "taken_before"),
                          ([("near", "48.8,2.3")], "near"),
                          ([("near", "48.8,2.3,5,1")], "near"),
                          ([("near", "91,2.3,5")], "near"),
                          ([("near", "a,b,c")], "near"),
                          ([("sort", "newest")], "sort"),
                          ([("facets", "year,day")], "facets"),
                          ([("candidates", "0")], "candidates"),
                          ([("collection", "texts"), ("camera", "canon")], "camera")):
        q = urllib.parse.urlencode([("q", QUERY)] + params)
        bad("GET %s" % q, s.get("/v1/search?" + q), field)


def test_filters(tmp):
    imgs = make_images(tmp)
    d = Daemon("filters", os.path.join(tmp, "data"))
    if not ok(d.start(), "clipd starts"):
        return
    try:
        bad = []
        for im in imgs:
            r = upload(d, im)
            if r.status == 200:
                im.id = r.json["id"]
            if not as_written(r, im):
                bad.append((im.name, im.taken(), im.gps, im.camera, r))
        ok(not bad and len({im.id for im in imgs}) == len(imgs),
           "%d uploads ready, with the capture time, place, camera and meta written" %
           len(imgs), "\n".join(map(repr, bad)))
        if bad:
            return
        c = Ctx()
        c.d, c.imgs = d, imgs
        c.by_id = {im.id: im for im in imgs}
        c.by_name = {im.name: im for im in imgs}
        r = search(d, text=QUERY, k=1000)
        c.full = ranked(r) or []
        ok(sorted(i for i, _ in c.full) == sorted(c.by_id) and
           all(a[1] >= b[1] for a, b in zip(c.full, c.full[1:])) and
           len({s for _, s in c.full}) == len(c.full),
           "the unfiltered ranking holds every image once, best first, no equal scores", r)
        stats = d.get("/v1/stats")
        before = stats.json["images"] if stats.status == 200 else None

        for case in (case_each_and_combined, case_three_of_all, case_bounds, case_near,
                     case_camera, case_sorts, case_facets, case_get, case_keyword_hybrid,
                     case_errors):
            try:
                case(c)
            except Exception:
                import traceback
                ok(False, "%s raised" % case.__name__, traceback.format_exc())

        r = search(d, text=QUERY, k=1000)
        ok(same(ranked(r), c.full), "after the errors the same search gives the same ranking",
           show(ranked(r), c.full, c.by_id))
        stats = d.get("/v1/stats")
        ok(stats.status == 200 and before == {"total": len(imgs), "ready": len(imgs)} and
           stats.json["images"] == before and
           stats.json["index"]["images"]["count"] == len(imgs),
           "GET /v1/stats: still %d images, all indexed" % len(imgs), stats)
    finally:
        e2e.stop_checked(d, "filters")


if __name__ == "__main__":
    if not shutil.which("exiftool"):
        print("Bail out! exiftool is missing (Debian's libimage-exiftool-perl, deploy/setup.sh)")
        sys.exit(1)
    sys.exit(e2e.run_tests("clipd-e2e-filters-", [test_filters], need=(MKJPEG,),
                           need_msg="CLIPD_BIN, CLIPD_REFERENCE or CLIPD_MKJPEG not set"))
