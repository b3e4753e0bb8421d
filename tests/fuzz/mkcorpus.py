#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer harnesses into tests/fuzz/corpus/.

Every seed is written here from scratch (nothing is copied from the
reference kit): small valid inputs of each format, so the fuzzer starts
from the shapes a real file or request has. fuzz_snapshot's seeds are real
snapshots written by vidx_save through the mksnap program of the fuzz
build; pass its path with --mksnap (run.sh does). Python 3 stdlib only.

    tests/fuzz/mkcorpus.py [--mksnap build-fuzz/tests/fuzz/mksnap]
"""
import argparse
import base64
import json
import os
import random
import shutil
import struct
import subprocess
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(name, seed, data):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, seed), "wb") as f:
        f.write(data)


def png(w, h, seed):
    rnd = random.Random(seed)
    raw = bytearray()
    for _ in range(h):
        raw.append(0)
        raw.extend(rnd.getrandbits(8) for _ in range(w * 3))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))


# ---- model files ---------------------------------------------------------------

def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)]."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def seeds_safetensors():
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    put("fuzz_safetensors", "f32", safetensors([("w", "F32", [2, 3], f32)], {"format": "pt"}))
    put("fuzz_safetensors", "mixed", safetensors([
        ("a.weight", "F16", [2, 2], b"\x00\x3c" * 4),
        ("a.bias", "BF16", [2], b"\x80\x3f" * 2),
        ("ids", "I64", [1], struct.pack("<q", 7)),
        ("empty", "F32", [0, 4], b""),
        ("scalar", "F32", [], struct.pack("<f", 2.5)),
    ]))
    put("fuzz_safetensors", "4d", safetensors([("conv", "F32", [1, 1, 2, 2], f32[:16])]))


def seeds_config():
    cfg = {
        "model_type": "clip", "projection_dim": 16,
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                        "num_hidden_layers": 2, "max_position_embeddings": 77,
                        "vocab_size": 49408, "hidden_act": "quick_gelu",
                        "layer_norm_eps": 1e-5, "eos_token_id": 2},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64,
                          "num_attention_heads": 2, "num_hidden_layers": 2, "image_size": 32,
                          "patch_size": 8, "num_channels": 3, "hidden_act": "gelu"},
    }
    pp = {"crop_size": {"height": 32, "width": 32}, "image_mean": [0.5, 0.5, 0.5],
          "image_std": [0.25, 0.25, 0.25], "size": {"shortest_edge": 32}}
    sep = "\n--- preprocessor_config.json ---\n"
    put("fuzz_config", "tiny", json.dumps(cfg, indent=1))
    put("fuzz_config", "tiny-pp", json.dumps(cfg) + sep + json.dumps(pp))
    put("fuzz_config", "defaults", '{"model_type": "clip", "text_config": {}, "vision_config": {}}')
    put("fuzz_config", "crop-int", json.dumps(cfg) + sep + '{"crop_size": 32}')


def byte_symbols():
    """GPT-2's byte -> symbol table, as tokenizer.c's byte_symbols."""
    out, n = [], 0
    for b in range(256):
        printable = (0x21 <= b <= 0x7E) or (0xA1 <= b <= 0xAC) or b >= 0xAE
        out.append(chr(b) if printable else chr(256 + n))
        if not printable:
            n += 1
    return out


def seeds_tok_load():
    syms = byte_symbols()
    vocab = {}
    for s in syms:
        vocab[s] = len(vocab)
    for s in syms:
        vocab[s + "</w>"] = len(vocab)
    merges = [("l", "o"), ("lo", "w</w>"), ("lo", "w"), ("e", "r</w>"), ("low", "er</w>"),
              ("c", "a"), ("ca", "t</w>"), ("a</w>", None)]
    lines = ["#version: 0.2"]
    for a, b in merges:
        if b is None:
            continue
        vocab.setdefault(a + b, len(vocab))
        lines.append(a + " " + b)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    v = json.dumps(vocab, ensure_ascii=False)
    sep = "\n--- merges.txt ---\n"
    put("fuzz_tok_load", "small", v + sep + "\n".join(lines) + "\n")
    put("fuzz_tok_load", "crlf", v + sep + "\r\n".join(lines[1:]) + "\r\n")
    put("fuzz_tok_load", "no-merges", v + sep)


def seeds_tok_encode():
    texts = [
        "a photo of a cat", "A Dog on a BEACH at sunset!!", "don't stop, we'll see",
        "caf\u00e9 \u00c9COLE \u0130stanbul \u03a3\u039f\u03a3", "&amp;lt;b&gt; &#x41;&#65; &nbsp;x",
        "1234567890 3.14", "\u4e2d\u6587 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4",
        "<start_of_text>hello<end_of_text>", "  tabs\tand\nnew\r\nlines  ",
        "emoji \U0001f600\U0001f44d\u200d", "x" * 300, "lowerlowerlower " * 20,
    ]
    for i, t in enumerate(texts):
        put("fuzz_tok_encode", "t%02d" % i, b"\x00" + t.encode())
    put("fuzz_tok_encode", "short-ctx", b"\x85" + "a long text for a short context".encode())
    put("fuzz_tok_encode", "bad-utf8", b"\x00abc\xff\xfe")


def seeds_sniff():
    p = png(3, 2, 1)
    put("fuzz_sniff", "png", p)
    jpeg = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
            b"\xff\xdb\x00\x43\x00" + bytes(64) +
            b"\xff\xc0\x00\x11\x08\x00\x20\x00\x30\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
            b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\xff\xd9")
    put("fuzz_sniff", "jpeg", jpeg)
    put("fuzz_sniff", "gif", b"GIF89a\x20\x00\x10\x00\x80\x00\x00" + bytes(8) + b";")
    vp8 = b"RIFF\x30\x00\x00\x00WEBPVP8 \x20\x00\x00\x00" + b"\x10\x02\x00\x9d\x01\x2a" + \
        struct.pack("<HH", 64, 48) + bytes(16)
    put("fuzz_sniff", "webp-vp8", vp8)
    vp8l = b"RIFF\x20\x00\x00\x00WEBPVP8L\x10\x00\x00\x00\x2f" + bytes([63, 0xC0, 0x0F, 0]) + bytes(12)
    put("fuzz_sniff", "webp-vp8l", vp8l)
    vp8x = b"RIFF\x20\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00" + bytes(4) + \
        struct.pack("<I", 99)[:3] + struct.pack("<I", 49)[:3] + bytes(6)
    put("fuzz_sniff", "webp-vp8x", vp8x)
    put("fuzz_sniff", "tiff-le", b"II*\x00\x08\x00\x00\x00" + bytes(8))
    put("fuzz_sniff", "tiff-be", b"MM\x00*\x00\x00\x00\x08" + bytes(8))
    put("fuzz_sniff", "heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    put("fuzz_sniff", "avif", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf")
    # JPEG XL: the bare codestream (FF 0A, then a SizeHeader read LSB first:
    # div8 1, ysize/8-1 = 5, ratio 3 = 4:3, so 64x48) and the same inside
    # the container (signature box, ftyp "jxl ", jxlc box).
    jxl = b"\xff\x0a\xcb\x40" + bytes(12)
    put("fuzz_sniff", "jxl", jxl)
    put("fuzz_sniff", "jxl-container",
        b"\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a" +
        b"\x00\x00\x00\x14ftypjxl \x00\x00\x00\x00jxl " +
        struct.pack(">I", 8 + len(jxl)) + b"jxlc" + jxl)
    put("fuzz_sniff", "text", b"not an image at all")


def seeds_safepath():
    # Byte 0: bit 0 opens as a directory. Then the path, then optionally
    # roots, one per line (fuzz_safepath.c builds the tree these name).
    f, d = b"\x00", b"\x01"
    put("fuzz_safepath", "file", f + b"a.png")
    put("fuzz_safepath", "deep", f + b"sub/deep/c.jpg")
    put("fuzz_safepath", "dir", d + b"sub/deep")
    put("fuzz_safepath", "root", d + b"")
    put("fuzz_safepath", "dots", f + b"./sub//deep/./c.jpg")
    put("fuzz_safepath", "dotdot", f + b"sub/../a.png")
    put("fuzz_safepath", "link-out", f + b"link_out")
    put("fuzz_safepath", "dir-link", f + b"dir_out/secret")
    put("fuzz_safepath", "up-link", f + b"sub/up/a.png")
    put("fuzz_safepath", "etc", f + b"sub/etc/passwd")
    put("fuzz_safepath", "fifo", f + b"sub/deep/pipe")
    put("fuzz_safepath", "space", f + b"name with space.jpg")
    put("fuzz_safepath", "through-file", f + b"a.png/x")
    put("fuzz_safepath", "abs", f + b"/srv/photos/deep/x/../y.jpg")
    put("fuzz_safepath", "roots", f + b"/home/u/pics/./a.jpg\n/home/u\n/home/u/pics\n/")
    put("fuzz_safepath", "root-prefix", f + b"/srv/photosx/a\n/srv/photos\n/srv")


def snap_recipe(kind, dim, main, pending, tail=b"", model=b"fuzz-model", factory=b"Flat"):
    """A fuzz_snapshot recipe: header with reserved bit 0 set (the harness
    fills in the payload length and CRC), then the choice of main and
    pending index (fuzz_snapshot.c's blobs: 0 IDMap,Flat, 1 HNSW8,Flat,
    2 IVF2,Flat trained, 3 IDMap,Flat pending, 4 IDMap,PCA2,Flat, 5 IDMap,Flat
    of dimension 8, 6 none, 7 a malformed presence byte) and the tail."""
    h = b"CLIPVIDX" + struct.pack("<IIII", 1, dim, kind, 1) + struct.pack("<QQI", 42, 0, 0)
    h += struct.pack("<H", len(model)) + model + struct.pack("<H", len(factory)) + factory
    return h + bytes([main, pending]) + tail


def seeds_snapshot(mksnap):
    d = os.path.join(CORPUS, "fuzz_snapshot")
    if not mksnap:
        print("mkcorpus: no --mksnap: fuzz_snapshot's seeds left as they are")
        return
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    subprocess.run([mksnap, d], check=True)
    slots = lambda ids: struct.pack("<Q", len(ids)) + b"".join(struct.pack("<q", i) for i in ids)
    put("fuzz_snapshot", "r-exact", snap_recipe(0, 4, 0, 6))
    put("fuzz_snapshot", "r-hnsw", snap_recipe(1, 4, 1, 6, slots([-1, 11, 12, 13, 14, 15]),
                                               factory=b"HNSW8,Flat"))
    put("fuzz_snapshot", "r-hnsw-dup", snap_recipe(1, 4, 1, 6, slots([11, 11, 12, 13, 14, 15]),
                                                   factory=b"HNSW8,Flat"))
    put("fuzz_snapshot", "r-hnsw-short", snap_recipe(1, 4, 1, 6, slots([11, 12])[:20],
                                                     factory=b"HNSW8,Flat"))
    put("fuzz_snapshot", "r-ivf", snap_recipe(2, 4, 2, 6, factory=b"IVF2,Flat"))
    put("fuzz_snapshot", "r-ivf-pending", snap_recipe(2, 4, 2, 3, factory=b"IVF2,Flat"))
    put("fuzz_snapshot", "r-other", snap_recipe(3, 4, 4, 6, factory=b"PCA2,Flat"))
    put("fuzz_snapshot", "r-dim", snap_recipe(0, 4, 5, 6))
    put("fuzz_snapshot", "r-kind", snap_recipe(0, 4, 1, 6))
    put("fuzz_snapshot", "r-none", snap_recipe(0, 4, 6, 6))


# ---- HTTP ----------------------------------------------------------------------

# fuzz_http's route numbers (its routes[] table).
R = {"search_get": 0, "search": 1, "upload": 2, "image_get": 3, "image_patch": 4,
     "image_delete": 5, "image_file": 6, "thumbnail": 7, "ingest": 8, "jobs": 9, "job": 10,
     "texts": 11, "text_get": 12, "text_delete": 13, "classify": 14, "embed": 15, "stats": 16,
     "readyz": 17, "any": 18}
CT_JSON, CT_NONE, CT_TEXT, CT_PNG = 0, 4, 5, 6


def http(name, route, body=b"", query=None, ctype=CT_JSON, key=0, ident=1):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    head = bytes([R[route], ctype | key << 3, ident - 1])
    q = (query.encode() + b"\n--\n") if query is not None else b""
    put("fuzz_http", name, head + q + body)


def exif_tiff(ifd0, gps=(), exif=()):
    """A little-endian TIFF structure: IFD0 with pointers to a GPS and an
    EXIF IFD; entries (tag, type, count, value bytes)."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))

    def ifd(entries):
        at = len(out)
        out.extend(struct.pack("<H", len(entries)) + bytes(12 * len(entries) + 4))
        slots = []
        for i, (tag, typ, count, val) in enumerate(entries):
            f = at + 2 + 12 * i
            struct.pack_into("<HHI", out, f, tag, typ, count)
            if len(val) <= 4:
                out[f + 8:f + 8 + len(val)] = val
            else:
                struct.pack_into("<I", out, f + 8, len(out))
                out.extend(val + (b"\0" if len(val) & 1 else b""))
            slots.append(f + 8)
        return at, slots

    extra = ([(0x8825, 4, 1, bytes(4))] if gps else []) + ([(0x8769, 4, 1, bytes(4))] if exif else [])
    _, slots = ifd(list(ifd0) + extra)
    k = len(ifd0)
    for sub in (gps, exif):
        if sub:
            at, _ = ifd(list(sub))
            struct.pack_into("<I", out, slots[k], at)
            k += 1
    return bytes(out)


def seeds_exif():
    rat = lambda *p: b"".join(struct.pack("<II", n, d) for n, d in p)  # noqa: E731
    t = exif_tiff([(0x010F, 2, 6, b"Canon\0"), (0x0110, 2, 5, b"EOS5\0"), (0x0112, 3, 1, b"\x06\0")],
                  gps=[(1, 2, 2, b"S\0"), (2, 5, 3, rat((33, 1), (51, 1), (2448, 100))),
                       (3, 2, 2, b"E\0"), (4, 5, 3, rat((151, 1), (12, 1), (5508, 100)))],
                  exif=[(0x9003, 2, 20, b"2021:07:04 18:30:00\0"), (0x9011, 2, 7, b"+02:00\0"),
                        (0xA434, 2, 8, b"EF 50mm\0")])
    jpeg = b"\xff\xd8\xff\xe1" + struct.pack(">H", len(t) + 8) + b"Exif\0\0" + t + b"\xff\xda\x00\x02\xff\xd9"
    put("fuzz_exif", "jpeg", jpeg)
    p = png(2, 2, 3)
    put("fuzz_exif", "png", p[:33] + struct.pack(">I", len(t)) + b"eXIf" + t + b"\0\0\0\0" + p[33:])
    put("fuzz_exif", "webp", b"RIFF" + struct.pack("<I", 4 + 8 + len(t)) + b"WEBPEXIF" +
        struct.pack("<I", len(t)) + t)


def seeds_http():
    img_b64 = base64.b64encode(png(4, 4, 3)).decode()
    http("search-text", "search", {"text": "a photo of a cat", "k": 3})
    http("search-texts", "search", {"text": "a red car", "collection": "texts", "k": 2,
                                     "offset": 0, "min_score": -1})
    http("search-filter", "search", {"text": "cat", "filter": {"album": ["holiday", "home"],
                                                                "mime": "image/png"}})
    http("search-image-id", "search", {"image_id": 1, "k": 5})
    http("search-image-b64", "search", {"image_b64": "data:image/png;base64," + img_b64})
    http("search-terms", "search", {"query": [{"text": "a dog", "weight": 2}, {"image_id": 1},
                                              {"image_b64": img_b64}, {"text": "grass", "weight": -1}],
                                    "k": 4})
    http("search-get", "search_get", query="q=a dog&k=2&collection=images")
    http("search-get-bytes", "search_get", query="text=caf\xe9&min_score=0.1")
    http("upload-raw", "upload", png(5, 4, 9), query="filename=x.png&meta={\"a\":1}",
         ctype=CT_PNG)
    http("upload-wait", "upload", png(4, 5, 10), query="wait=true", ctype=CT_PNG)
    http("upload-json", "upload", {"image_b64": img_b64})
    http("image-get", "image_get", query="")
    http("image-patch", "image_patch", {"meta": {"album": "x", "n": [1, 2, {"d": None}]}})
    http("image-delete", "image_delete", query="", ident=3)
    http("image-file", "image_file", query="")
    http("thumbnail", "thumbnail", query="size=64")
    http("ingest-paths", "ingest", {"paths": ["p0.png", "p1.png"]})
    http("ingest-dir", "ingest", {"dir": ".", "recursive": True, "meta": {"src": "fuzz"}})
    http("jobs", "jobs", query="limit=5")
    http("job", "job", query="")
    http("texts", "texts", {"texts": [{"text": "a rocket", "meta": {"src": "c"}}, "a horse"]})
    http("text-get", "text_get", query="", ident=2)
    http("text-delete", "text_delete", query="", ident=2)
    http("classify", "classify", {"image_id": 1, "labels": ["cat", "dog", "car"],
                                  "templates": ["a photo of a {}.", "a {} and a {}"]})
    http("classify-query", "classify", {"image_id": 1}, query="labels=cat,dog&templates={}")
    http("embed", "embed", {"texts": ["a cat", "a dog"]})
    http("embed-image", "embed", {"image_b64": img_b64})
    http("stats", "stats", query="")
    http("readyz", "readyz", query="")
    http("no-key", "texts", {"texts": ["x"]}, key=3)
    http("wrong-key", "image_delete", query="", key=2)
    http("text-plain", "search", "{\"text\": \"cat\"}", ctype=CT_TEXT)
    http("no-type", "embed", "{\"texts\": [\"x\"]}", ctype=CT_NONE)
    http("any-openapi", "any", b"", query="\x00openapi.json")
    http("any-metrics", "any", b"", query="\x00metrics")
    http("any-put", "any", b"{}", query="\x04v1/images/1?x=1")
    http("any-web", "any", b"", query="\x00")


def form(parts, boundary="fuzzb"):
    """parts: [(name, filename or None, content_type or None, bytes)]."""
    out = b""
    for name, filename, ctype, data in parts:
        if isinstance(data, str):
            data = data.encode()
        out += b"--" + boundary.encode() + b"\r\n"
        disp = 'Content-Disposition: form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out += disp.encode("latin-1") + b"\r\n"  # raw bytes, as a Latin-1 client sends
        if ctype:
            out += b"Content-Type: " + ctype.encode() + b"\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


def seeds_multipart():
    T = {"images": 0, "ingest": 1, "search": 2, "classify": 3, "embed": 4, "texts": 5,
         "patch": 6}

    def mp(name, target, parts, ctype=0, wait=False):
        put("fuzz_multipart", name, bytes([T[target], ctype | (8 if wait else 0)]) + form(parts))

    a, b = png(4, 4, 21), png(3, 5, 22)
    mp("upload", "images", [("image", "a.png", "image/png", a), ("meta", None, None, '{"x": 1}')])
    mp("upload-wait", "images", [("image", "b.png", "image/png", b)], wait=True)
    mp("upload-quoted", "images", [("image", "q.png", None, a)], ctype=3)
    mp("ingest", "ingest", [("file", "a.png", "image/png", a), ("file", "b.png", "image/png", b),
                            ("meta", None, "application/json", '{"album": "f"}')])
    mp("ingest-latin1", "ingest", [("file", "caf\xe9.png", "image/png", a),
                                   ("file", "na\xefve.png", "image/png", b)])
    mp("search", "search", [("image", "q.png", "image/png", a), ("k", None, None, "3"),
                            ("min_score", None, None, "0.0")])
    mp("search-text", "search", [("text", None, None, "a cat"), ("collection", None, None, "texts")])
    mp("classify", "classify", [("image", "c.png", "image/png", b),
                                ("labels", None, None, '["cat", "dog"]'),
                                ("templates", None, None, '["a photo of a {}"]')])
    mp("embed", "embed", [("image", "e.png", "image/png", a)])
    mp("texts", "texts", [("texts", None, None, '["x"]')])
    mp("patch", "patch", [("meta", None, None, '{"y": 2}')])
    mp("charset", "images", [("image", "c.png", "image/png", a)], ctype=4)
    mp("no-boundary", "images", [("image", "c.png", "image/png", a)], ctype=6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mksnap", help="build-fuzz/tests/fuzz/mksnap, for fuzz_snapshot's seeds")
    args = ap.parse_args()
    for name in ["fuzz_safetensors", "fuzz_config", "fuzz_tok_load", "fuzz_tok_encode",
                 "fuzz_sniff", "fuzz_safepath", "fuzz_http", "fuzz_multipart"]:
        shutil.rmtree(os.path.join(CORPUS, name), ignore_errors=True)
    seeds_safetensors()
    seeds_config()
    seeds_tok_load()
    seeds_tok_encode()
    seeds_sniff()
    seeds_exif()
    seeds_safepath()
    seeds_snapshot(args.mksnap)
    seeds_http()
    seeds_multipart()


if __name__ == "__main__":
    main()
