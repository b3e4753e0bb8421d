#!/usr/bin/env python3
"""tok_wp_ref.py VOCAB CTX IN.json OUT.json: the WordPiece rules of
$CLIPD_REFERENCE/README.md ("Tokenizer rules (slow BertTokenizer, v4.44.2)"),
written from that text with the standard library only, as the oracle of
test_tok_wordpiece's own cases. IN.json is a list of texts; OUT.json gets
[{"ids": [...ctx], "len": n}, ...]. Character properties are those of this
Python's unicodedata (Python 3.11: Unicode 14.0.0; printed on stderr)."""
import json
import sys
import unicodedata

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CJK = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
       (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]


def load_vocab(path):
    # split on "\n" only (line 344 is U+2028)
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return {tok: i for i, tok in enumerate(lines)}


def split_specials(text):
    """Rule 1: special-token strings split out, leftmost first."""
    out, i, start = [], 0, 0
    while i < len(text):
        hit = next((s for s in SPECIALS if text.startswith(s, i)), None)
        if hit:
            out.append((False, text[start:i]))
            out.append((True, hit))
            i += len(hit)
            start = i
        else:
            i += 1
    out.append((False, text[start:]))
    return out


def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def words(text):
    text = "".join(c.lower() for c in text)                       # rule 2
    clean = []
    for c in text:                                                 # rule 3
        if c in "\t\n\r":
            clean.append(" ")
        elif ord(c) == 0 or ord(c) == 0xFFFD or unicodedata.category(c).startswith("C"):
            continue
        elif unicodedata.category(c) == "Zs":
            clean.append(" ")
        elif any(lo <= ord(c) <= hi for lo, hi in CJK):            # rule 4
            clean.append(" " + c + " ")
        else:
            clean.append(c)
    text = unicodedata.normalize("NFC", "".join(clean))           # rule 5
    for w in text.split():                                         # rule 6
        w = w.lower()                                              # rule 7
        w = "".join(c for c in unicodedata.normalize("NFD", w)
                    if unicodedata.category(c) != "Mn")
        cur = ""
        for c in w:                                                # rule 8
            if is_punct(c):
                if cur:
                    yield cur
                yield c
                cur = ""
            else:
                cur += c
        if cur:
            yield cur


def wordpiece(vocab, w):
    """Rule 9."""
    if len(w) > 100:
        return [vocab["[UNK]"]]
    out, start = [], 0
    while start < len(w):
        end, hit = len(w), None
        while end > start:
            sub = w[start:end] if start == 0 else "##" + w[start:end]
            if sub in vocab:
                hit = vocab[sub]
                break
            end -= 1
        if hit is None:
            return [vocab["[UNK]"]]
        out.append(hit)
        start = end
    return out


def encode(vocab, text, ctx):
    pieces = []
    for special, part in split_specials(text):
        if special:
            pieces.append(vocab[part])
        else:
            for w in words(part):
                pieces.extend(wordpiece(vocab, w))
    ids = [vocab["[CLS]"]] + pieces[:ctx - 2] + [vocab["[SEP]"]]
    n = len(ids)
    return {"ids": ids + [vocab["[PAD]"]] * (ctx - n), "len": n}


def main():
    vocab = load_vocab(sys.argv[1])
    ctx = int(sys.argv[2])
    with open(sys.argv[3], encoding="utf-8") as f:
        texts = json.load(f)
    print("# tok_wp_ref: unicodedata", unicodedata.unidata_version, file=sys.stderr)
    with open(sys.argv[4], "w") as f:
        json.dump([encode(vocab, t, ctx) for t in texts], f)


if __name__ == "__main__":
    main()
