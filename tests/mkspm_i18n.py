#!/usr/bin/env python3
"""mkspm_i18n: a SentencePiece Unigram model of google/siglip-base-patch16-256-
multilingual's size (250,000 pieces), for tests.

Usage: mkspm_i18n.py BASE.model OUT.model [PIECES]

The real multilingual spiece.model cannot be fetched here. This one is the
reference kit's SigLIP model (BASE: its normalizer, nmt_nfkc with the
precompiled character map, its special pieces, byte fallback and trainer
settings) with pieces appended until there are PIECES (default 250,000):
every CJK ideograph, kana, Hangul syllable and the letters of Cyrillic,
Greek, Arabic, Hebrew, Devanagari and Thai, each alone and after U+2581 (a
word start), then Latin, Cyrillic and CJK pairs and Latin triples, scored
below every piece of BASE, the shorter the better. Real multilingual text
then segments into real pieces with ids up to PIECES - 1, which is what the
tests need: the tokenizer and the model's token table at that size.

Written in the protobuf wire format by hand (the standard library only):
ModelProto field 1 is a repeated SentencePiece {1: piece, 2: score,
3: type}; every other field of BASE is kept byte for byte, and
trainer_spec.vocab_size (TrainerSpec field 4) is rewritten.
"""
import struct
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


def fields(buf):
    """(field number, wire type, value bytes or int, raw bytes) of a message."""
    i = 0
    while i < len(buf):
        start = i
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        yield num, wt, v, buf[start:i]


def ld(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def piece_msg(text, score):
    p = ld(1, text.encode("utf-8")) + varint(2 << 3 | 5) + struct.pack("<f", score)
    return ld(1, p)  # type NORMAL is the default: left out


# The scripts of the appended pieces (besides Latin's pairs and triples).
RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x3041, 0x3096), (0x30A1, 0x30FA),
          (0xAC00, 0xD7A3), (0x0410, 0x044F), (0x0391, 0x03C9), (0x0621, 0x064A),
          (0x05D0, 0x05EA), (0x0905, 0x0939), (0x0E01, 0x0E2E)]


def candidates(latin):
    singles = [chr(c) for lo, hi in RANGES for c in range(lo, hi + 1)]
    for ch in singles:
        yield "\u2581" + ch
        yield ch
    latin_letters = "abcdefghijklmnopqrstuvwxyz" if latin else ""
    cyr = [chr(c) for c in range(0x0430, 0x0450)]
    for group in (latin_letters, cyr):
        for a in group:
            for b in group:
                yield "\u2581" + a + b
                yield a + b
    for a in latin_letters:
        for b in latin_letters:
            for c in latin_letters:
                yield "\u2581" + a + b + c
                yield a + b + c
    common = [chr(c) for c in range(0x4E00, 0x4E00 + 500)]
    for a in common:
        for b in common:
            yield a + b


def build(base_path, out_path, total=250000, latin=True):
    """Writes the model of total pieces to out_path. Without latin, no piece
    holds a Latin letter, so a text in BASE's own scripts (and outside
    RANGES) segments exactly as BASE segments it."""
    base = open(base_path, "rb").read()
    pieces, rest, seen, low = [], [], set(), 0.0
    for num, wt, v, raw in fields(base):
        if num == 1:
            pieces.append(raw)
            for n2, _, v2, _ in fields(v):
                if n2 == 1:
                    seen.add(v2.decode("utf-8"))
                elif n2 == 2:
                    low = min(low, struct.unpack("<f", v2)[0])
        elif num == 2:  # trainer_spec: vocab_size rewritten
            spec = b"".join(r for n2, _, _, r in fields(v) if n2 != 4)
            rest.append(ld(2, spec + varint(4 << 3) + varint(total)))
        else:
            rest.append(raw)
    out = list(pieces)
    for text in candidates(latin):
        if len(out) >= total:
            break
        if text in seen:
            continue
        seen.add(text)
        out.append(piece_msg(text, low - 1.0 - len(text) - len(out) * 1e-6))
    if len(out) != total:
        raise ValueError("only %d pieces" % len(out))
    with open(out_path, "wb") as f:
        f.write(b"".join(out) + b"".join(rest))


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: mkspm_i18n.py BASE.model OUT.model [PIECES]")
    build(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 250000)


if __name__ == "__main__":
    main()
