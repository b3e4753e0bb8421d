#!/usr/bin/env python3
"""tok_spm_diff: the SentencePiece tokenizers (model/tok_spm.c) against the
real library, id for id.

Usage: tok_spm_diff.py TOK_SPM_DUMP
Environment: CLIPD_REFERENCE (the reference kit, read-only). Writes only into
a temporary directory under the current directory (meson's build dir).

A few thousand strings are generated from a fixed seed (random code points
of every plane, unassigned and private use included; runs of every Unicode
space; CJK; emoji with ZWJ, skin tones and flags; combining marks;
full-width forms, ligatures and other NFKC cases; case-mapping traps;
special-token strings; punctuation; long and very long texts). Each goes
through tests/tok_spm_dump (the C tokenizer) and through Debian's
python3-sentencepiece on the same model file with the rules of the
reference kit's README ("SigLIP tokenizer rules", "SigLIP2 (Gemma
tokenizer) conventions"):
    ids = sp.encode(canon(text.lower()))[:63] + [eos], padded to 64
(special-token strings split out first). SigLIP style runs on the kit's
spiece.model (Unigram, nmt_nfkc); Gemma style on a BPE model with byte
fallback trained here, seeded, with Gemma's options.

SigLIP style runs a third time on a model of the multilingual SigLIP's size
(250,000 pieces: tests/mkspm_i18n.py, the kit's model with pieces for
many scripts appended), on generated texts and sentences in a dozen scripts,
so that ids up to 249,999 are produced and compared.

Every id of every text must match. Where the C side read only a prefix
(cut at a space), the text is run again with ctx one more than the pieces of
that prefix, so the pieces next to the cut are kept and compared too; where
a bound cut it, its ids are compared with those of the prefix it kept (and
the count of those that differ from the whole text's is printed). The
script prints TAP.
"""
import os
import random
import re
import shutil
import string
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkspm_i18n  # noqa: E402

CTX = 64

# Sentences in the scripts the multilingual model is chosen for (and the
# last piece of the 250,000, 佈仭).
I18N = ["海滩上的狗", "一只在海滩上奔跑的金毛犬", "海灘上的狗", "ビーチで走る犬", "해변에서 달리는 개",
        "собака бежит по пляжу", "Ο σκύλος τρέχει στην παραλία", "كلب يركض على الشاطئ",
        "כלב רץ על החוף", "समुद्र तट पर दौड़ता कुत्ता", "สุนัขวิ่งบนชายหาด",
        "Un chien qui court sur la plage", "佈仭", "一丁七万丈三上下", "ＦＵＬＬ　ｗｉｄｔｈ　１２３"]


def tap_fail_all(msg):
    print("1..1")
    print("not ok 1 - " + msg)
    sys.exit(1)


try:
    import sentencepiece as spm
except ImportError:
    # python3-sentencepiece is a declared test dependency (deploy/setup.sh):
    # its absence fails the test rather than skipping it.
    tap_fail_all("python3-sentencepiece is not installed (import sentencepiece failed; "
                 "run deploy/setup.sh)")

# ---- the reference rules ------------------------------------------------

PUNCT = str.maketrans("", "", string.punctuation)


def siglip_canon(s):
    """SiglipTokenizer.canonicalize_text after tokenize()'s U+2581 -> ' '."""
    s = s.replace("\u2581", " ")
    s = s.translate(PUNCT)
    s = re.sub(r"\s+", " ", s)
    return s.strip()


def split_specials(text, specials):
    """[(chunk, None) | (None, id)]: the special-token strings split out."""
    if not specials:
        return [(text, None)]
    pat = re.compile("|".join(re.escape(s) for s in specials))
    out, pos = [], 0
    for m in pat.finditer(text):
        out.append((text[pos:m.start()], None))
        out.append((None, specials[m.group(0)]))
        pos = m.end()
    out.append((text[pos:], None))
    return out


def special_ids(sp, style):
    """The special-token strings split out of a text, EOS, pad."""
    if style == "siglip":
        specials = {"</s>": sp.piece_to_id("</s>"), "<unk>": sp.piece_to_id("<unk>")}
        return specials, specials["</s>"], specials["</s>"]
    specials = {s: sp.piece_to_id(s) for s in ("<pad>", "<eos>", "<bos>", "<unk>")}
    return specials, specials["<eos>"], specials["<pad>"]


def reference_pieces(sp, style, text):
    """The ids of text by the README's rules, before truncation and EOS."""
    specials = special_ids(sp, style)[0]
    ids = []
    # SigLIP: transformers lower-cases each character alone (no final
    # sigma); SigLIP2's convention is str.lower().
    low = "".join(c.lower() for c in text) if style == "siglip" else text.lower()
    for chunk, sid in split_specials(low, specials):
        if sid is not None:
            ids.append(sid)
            continue
        if style == "siglip":
            chunk = siglip_canon(chunk)
        if chunk:
            ids += sp.encode(chunk)
    return ids


def reference_ids(sp, style, text, ctx=CTX):
    """ids[ctx]: the pieces truncated to ctx-1, EOS, padding."""
    _, eos, pad = special_ids(sp, style)
    ids = reference_pieces(sp, style, text)[:ctx - 1] + [eos]
    return ids + [pad] * (ctx - len(ids))


# ---- the generated texts ------------------------------------------------

WORDS = ("a photo of the cat dog on in with two small large red blue green man woman child "
         "street city mountain river tree house car bicycle people playing running sitting "
         "standing looking near under over black white dark light water beach snow field "
         "café naïve résumé zürich straße ΟΔΥΣΣΕΥΣ İstanbul ǅemal ﬁne ＡＢＣ１２３").split()

# every character Python's str.isspace() accepts, and others the normaliser
# treats as space or deletes
SPACES = ([chr(c) for c in range(0x110000) if chr(c).isspace()] +
          ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\ufeff", "\u2581", "\u180e",
           "\u00ad", "\ufffd", "\x7f", "\x01", "\x1b"])

EMOJI = ["\U0001F431", "\U0001F436", "\U0001F469\u200d\U0001F469\u200d\U0001F467",
         "\U0001F44D\U0001F3FD", "\U0001F44B\U0001F3FF", "\U0001F1EF\U0001F1F5",
         "\u2764\ufe0f", "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F9D1\u200d\U0001F4BB",
         "#\ufe0f\u20e3", "\U0001FAE0"]

NFKC = ("\uff21\uff22\uff23\uff11\uff12\uff13\uff01\uff1f\uff08\uff09\u3000\ufb00\ufb01\ufb02"
        "\ufb03\ufb04\ufb05\ufb06\u2460\u2461\u2474\u00b2\u00b3\u00b9\u2070\u2071\u2160\u2161"
        "\u216b\u2170\u3371\u337f\u33a1\u00bd\u2153\u00a8\u00b4\u02dc\u2126\u212b\u1e9b"
        "\u0385\u03d3\u1fed\u2024\u2025\u2026\u00aa\u00ba\u017f\u1d43\u24b6\u24d0\u2122")

CASE = ("\u0130\u0131\u03a3\u03c3\u03c2\u1e9e\u00df\u01c5\u01c8\u01cb\u1f88\u1fbc\u2c6f"
        "\u0345\u1f80\ua7ae\U00010400\U0001e900\u0149\u1e96\ufb00")

SPECIALS = ["</s>", "<unk>", "</S>", "<UNK>", "<eos>", "<pad>", "<bos>", "<EOS>", "<s>",
            "<start_of_turn>", "<table>", "<0x41>", "</s>x", "<</s>>"]


def rand_cp(r):
    """A code point of any plane, surrogates and NUL left out (UTF-8 cannot
    carry a lone surrogate; the driver's texts are NUL-terminated)."""
    while True:
        plane = r.choice([0, 0, 0, 1, 2, 3, 14, 15, 16, r.randrange(17)])
        c = plane << 16 | r.randrange(0x10000)
        if c != 0 and not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def rand_range(r, lo, hi, n):
    return "".join(chr(r.randrange(lo, hi + 1)) for _ in range(n))


def words(r, n, seps=(" ",)):
    return "".join(r.choice(WORDS) + r.choice(seps) for _ in range(n)).strip()


def gen_texts(seed, n):
    r = random.Random(seed)
    kinds = []

    def k_random(r):
        return "".join(rand_cp(r) for _ in range(r.randrange(1, 40)))

    def k_spaces(r):
        parts = []
        for _ in range(r.randrange(1, 12)):
            parts.append("".join(r.choice(SPACES) for _ in range(r.randrange(0, 6))))
            parts.append(r.choice(WORDS) if r.random() < 0.8 else "")
        return "".join(parts)

    def k_cjk(r):
        lo, hi = r.choice([(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3),
                           (0x20000, 0x2A6DF), (0x3400, 0x4DBF), (0xF900, 0xFAFF)])
        s = rand_range(r, lo, hi, r.randrange(1, 30))
        return s if r.random() < 0.5 else words(r, 2) + " " + s + "\u3002" + words(r, 2)

    def k_emoji(r):
        return "".join(r.choice(EMOJI + [" ", "a", "\u200d", "\U0001F3FB", "\ufe0f"])
                       for _ in range(r.randrange(1, 12)))

    def k_combining(r):
        out = []
        for _ in range(r.randrange(1, 10)):
            out.append(r.choice("aeiouAEIOU\u03b1\u0430 \u05d0"))
            for _ in range(r.randrange(0, 5)):
                out.append(chr(r.choice([r.randrange(0x300, 0x370), r.randrange(0x1AB0, 0x1AC0),
                                         r.randrange(0x20D0, 0x20F1), 0x0345, 0x0338])))
        return "".join(out)

    def k_nfkc(r):
        return "".join(r.choice(NFKC + " abc") for _ in range(r.randrange(1, 25)))

    def k_case(r):
        return "".join(r.choice(CASE + "ABCΟΔΥ ΣΣ. '\u00ad\u200b") for _ in range(r.randrange(1, 20)))

    def k_specials(r):
        out = []
        for _ in range(r.randrange(1, 8)):
            out.append(r.choice(SPECIALS + WORDS))
            out.append(r.choice(["", " ", "  ", "\t", "\u3000", " . "]))
        return "".join(out)

    def k_punct(r):
        pool = string.punctuation + "\u00a1\u00bf\u2018\u2019\u201c\u201d\u2014\u2013\u2026\u3001\u3002\uff01\u00b7\u2022 "
        return "".join(r.choice(pool) for _ in range(r.randrange(1, 40)))

    def k_invalidish(r):
        # valid UTF-8 that looks like trouble: noncharacters, the last code
        # point, U+FFFD, mojibake of overlong and invalid sequences
        pool = ["\ufffe", "\uffff", "\U0010ffff", "\U0010fffe", "\ufffd", "\u00c0\u00af",
                "\u00ed\u00a0\u0080", "\u00c3\u00a9", "\u00e2\u0080\u0099", "\U000e0001",
                "\U000e0041", "\ufdd0", "\U0001fffe", "\U000f0000", "\U00100000"]
        return "".join(r.choice(pool + WORDS + [" "]) for _ in range(r.randrange(1, 10)))

    def k_mixed(r):
        gens = [k_random, k_spaces, k_cjk, k_emoji, k_combining, k_nfkc, k_case, k_punct, k_specials]
        return r.choice(["", " ", "\n"]).join(r.choice(gens)(r) for _ in range(r.randrange(2, 6)))

    def k_long(r):
        kind = r.randrange(8)
        if kind == 0:   # a long caption, truncated
            return words(r, r.randrange(40, 400), (" ", " ", ", ", "  ", "\n"))
        if kind == 1:   # longer than the first prefix, cut at a space (not
            # after '.' or '\n': the Gemma-style model has pieces ".\u2581"
            # and "\n\u2581\u2581" that would span such a cut)
            return words(r, r.randrange(800, 3000), (" ", " ", " ", ". ", "\n  ", ".  "))
        if kind == 2:   # white space before the words
            return r.choice(SPACES) * r.randrange(3000, 20000) + words(r, 100)
        if kind == 3:   # punctuation before the words
            return "".join(r.choice(string.punctuation) for _ in range(r.randrange(3000, 9000))) + " " + words(r, 100)
        if kind == 4:   # CJK without spaces, longer than a prefix
            return rand_range(r, 0x4E00, 0x9FFF, r.randrange(2000, 6000))
        if kind == 5:   # one very long word
            return r.choice("ab\u00e9\u03c3") * r.randrange(3000, 30000)
        if kind == 6:   # random code points, long
            return "".join(rand_cp(r) for _ in range(r.randrange(1000, 4000)))
        return " ".join(k_mixed(r) for _ in range(r.randrange(50, 300)))

    table = [(k_random, 6), (k_spaces, 4), (k_cjk, 3), (k_emoji, 3), (k_combining, 3),
             (k_nfkc, 3), (k_case, 3), (k_specials, 3), (k_punct, 2), (k_invalidish, 2),
             (k_mixed, 5), (k_long, 1)]
    kinds = [f for f, w in table for _ in range(w)]
    texts = ["", " ", "a", "A", "\u03a3", "a\u03a3", "a\u03a3 b", "\u03a3a", "hi</s>", "hi",
             "a </s> b", "<unk>", "\u2581", "\u2581\u2581a", "a  b", "  a", "a  ", "\t\n",
             "1234567", "don't", "black-and-white"]
    while len(texts) < n:
        texts.append(r.choice(kinds)(r))
    # the very long ones: one of each kind at 1-10 MB would cost the
    # reference minutes; a few hundred KB each is past every bound of the C side
    for kind in range(8):
        rr = random.Random(seed * 100 + kind)
        texts.append({0: lambda: words(rr, 60000),
                      1: lambda: " " * 300000 + words(rr, 10),
                      2: lambda: rand_range(rr, 0x4E00, 0x9FFF, 100000),
                      3: lambda: "a" * 300000,
                      4: lambda: (words(rr, 30) + " ") * 3000,
                      5: lambda: "\u200b " * 150000 + words(rr, 70),
                      6: lambda: "".join(rand_cp(rr) for _ in range(100000)),
                      7: lambda: "\U0001F469\u200d\U0001F469\u200d\U0001F467" * 20000}[kind]())
    return texts


def long_texts(seed):
    """Texts longer than the C side's first prefix with a space after '.'
    and after a newline, where the Gemma-style model's pieces would span a
    cut."""
    r = random.Random(seed)
    return [words(r, r.randrange(500, 2500), (" ", " ", ". ", ".  ", "\n  ", "\n", ", "))
            for _ in range(60)]


INVALID = [b"\xff", b"a\xc0\xafb", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"abc\xe2\x82",
           b"\x80", b"\xf8\x88\x80\x80\x80", b"ok \xc3"]


# ---- the Gemma-style model ----------------------------------------------

def train_gemma_model(dirname):
    """A BPE model with Gemma's options (byte fallback, identity, no dummy
    prefix, spaces kept, digits split, Gemma's special pieces), trained on
    generated lower-cased text: deterministic for a given seed. Its
    user-defined pieces include white-space runs, as Gemma's do, and two with
    U+2581 after another character, which the C side's cuts must avoid."""
    r = random.Random(20240611)
    corpus = os.path.join(dirname, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for _ in range(4000):
            s = words(r, r.randrange(3, 15), (" ", " ", "  ", ", ", ". ", "\t"))
            if r.random() < 0.2:
                s += " " + rand_range(r, 0x4E00, 0x4E80, r.randrange(1, 8))
            if r.random() < 0.1:
                s += " " + r.choice(EMOJI) + " " + str(r.randrange(100000))
            f.write(s.lower() + "\n")
    prefix = os.path.join(dirname, "gemma")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, model_type="bpe", vocab_size=1200,
        byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        add_dummy_prefix=False, remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, character_coverage=0.9995,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["\u2581\u2581", "\u2581\u2581\u2581", "\u2581\u2581\u2581\u2581",
                              "<start_of_turn>", "<end_of_turn>", "<table>",
                              ".\u2581", "\n\u2581\u2581"],
        num_threads=1, shuffle_input_sentence=False, minloglevel=2)
    return prefix + ".model"


# ---- the comparison -----------------------------------------------------

def run_dump(dump, model, style, ctx, texts):
    """tok_spm_dump's lines for texts (str or, for invalid UTF-8, bytes)."""
    blob = b"".join((t if isinstance(t, bytes) else t.encode("utf-8")) + b"\0" for t in texts)
    res = subprocess.run([dump, model, style, str(ctx)], input=blob, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, check=False)
    if res.returncode != 0:
        raise RuntimeError("tok_spm_dump failed (%d): %s" %
                           (res.returncode, res.stderr.decode(errors="replace")))
    lines = res.stdout.decode().split("\n")[:-1]
    if len(lines) != len(texts):
        raise RuntimeError("tok_spm_dump: %d lines for %d texts" % (len(lines), len(texts)))
    return lines


def run_style(dump, model, style, texts, case_no):
    """Every text, ctx 64: the ids of the whole text, or where the C side
    says a bound cut it, those of the prefix it kept."""
    sp = spm.SentencePieceProcessor(model_file=model)
    try:
        lines = run_dump(dump, model, style, CTX, texts + INVALID)
    except RuntimeError as e:
        print("not ok %d - %s: %s" % (case_no, style, e))
        return False, []
    bad = cut = cut_differs = 0
    prefixed = []
    for i, text in enumerate(texts):
        got = lines[i]
        m = re.fullmatch(r"(.*) (cut|prefix) (\d+)", got)
        if m and m.group(2) == "prefix":
            got = m.group(1)
            prefixed.append((text, int(m.group(3))))
        elif m:
            # A bound cut the text (tok_spm.c, "The bound"): the ids must be
            # those of the prefix it kept, and only a long text may be cut.
            cut += 1
            got, n = m.group(1), int(m.group(3))
            raw = text.encode("utf-8")
            whole = " ".join(map(str, reference_ids(sp, style, text)))
            cut_differs += got != whole   # told, not failed: the bound's documented cases
            if len(raw) <= 4096 or n >= len(raw):
                got = "a text of %d bytes cut at %d" % (len(raw), n)
            text = raw[:n].decode("utf-8")
        want = " ".join(map(str, reference_ids(sp, style, text)))
        if got != want:
            bad += 1
            if bad <= 10:
                print("# %s text %d %r (%d chars)" % (style, i, text[:60], len(text)))
                print("#   want %s" % want)
                print("#   got  %s" % got)
    for j, b in enumerate(INVALID):
        try:
            b.decode("utf-8")
            ok_invalid = False   # the list must hold invalid UTF-8 only
        except UnicodeDecodeError:
            ok_invalid = True
        if not ok_invalid or lines[len(texts) + j] != "error 6":   # CLIP_ETEXT
            bad += 1
            print("# %s invalid %r: got %s" % (style, b, lines[len(texts) + j]))
    ok = bad == 0
    print("%s %d - %s: %d texts (%d read to a cut point only, %d cut by a bound and compared "
          "as cut, %d of those unlike the whole text) and %d invalid ones, %d differ" %
          ("ok" if ok else "not ok", case_no, style, len(texts), len(prefixed), cut, cut_differs,
           len(INVALID), bad))
    return ok, prefixed


def run_cut_edges(dump, model, style, prefixed, case_no):
    """The texts read to a cut point only, each again with ctx one more than
    the pieces of its prefix: then the pieces right before the cut are kept,
    and they too must be the whole text's (the point of tok_spm.c's
    argument; with ctx 64 they lie hundreds of pieces past the ids kept)."""
    sp = spm.SentencePieceProcessor(model_file=model)
    bad = 0
    for text, n in prefixed:
        ctx = len(reference_pieces(sp, style, text.encode("utf-8")[:n].decode("utf-8"))) + 1
        try:
            got = run_dump(dump, model, style, ctx, [text])[0]
        except RuntimeError as e:
            print("not ok %d - %s cut edges: %s" % (case_no, style, e))
            return False
        got = re.sub(r" (cut|prefix) \d+$", "", got)
        want = " ".join(map(str, reference_ids(sp, style, text, ctx)))
        if got != want:
            bad += 1
            if bad <= 5:
                print("# %s %r... (%d bytes, prefix %d, ctx %d)" % (style, text[:40], len(text.encode()), n, ctx))
                w, g = want.split(), got.split()
                d = next((i for i in range(min(len(w), len(g))) if w[i] != g[i]), -1)
                print("#   first difference at %d: want %s, got %s" % (d, w[d:d + 4], g[d:d + 4]))
    ok = bad == 0 and len(prefixed) >= 20
    print("%s %d - %s: %d texts at the edge of their cut, %d differ" %
          ("ok" if ok else "not ok", case_no, style, len(prefixed), bad))
    return ok


def main():
    if len(sys.argv) != 2:
        tap_fail_all("usage: tok_spm_diff.py TOK_SPM_DUMP")
    dump = sys.argv[1]
    ref = os.environ.get("CLIPD_REFERENCE", "")
    siglip_model = os.path.join(ref, "tiny-siglip-a", "spiece.model")
    if not os.path.isfile(siglip_model):
        tap_fail_all("no %s (set CLIPD_REFERENCE)" % siglip_model)
    tmp = tempfile.mkdtemp(prefix="tok_spm_diff.", dir=os.getcwd())
    try:
        print("1..5")
        i18n_model = os.path.join(tmp, "i18n.model")
        mkspm_i18n.build(siglip_model, i18n_model)
        gemma_model = train_gemma_model(tmp)
        siglip_texts = gen_texts(1, 3000) + long_texts(3)
        gemma_texts = gen_texts(2, 3000) + long_texts(4)
        ok1, siglip_prefixed = run_style(dump, siglip_model, "siglip", siglip_texts, 1)
        ok2, gemma_prefixed = run_style(dump, gemma_model, "gemma", gemma_texts, 2)
        ok3 = run_cut_edges(dump, siglip_model, "siglip", siglip_prefixed, 3)
        ok4 = run_cut_edges(dump, gemma_model, "gemma", gemma_prefixed, 4)
        r = random.Random(5)
        i18n_texts = I18N + [" ".join(r.sample(I18N, 3)) for _ in range(300)] + gen_texts(5, 1000)
        ok5, _ = run_style(dump, i18n_model, "siglip", i18n_texts, 5)
        ok = ok1 and ok2 and ok3 and ok4 and ok5
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
