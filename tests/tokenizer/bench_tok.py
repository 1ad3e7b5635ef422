#!/usr/bin/env python3
"""Encode throughput: hearth vs the reference libraries on the same text.

Builds a deterministic ~4 MB mixed corpus from files that the test venv
already holds (package READMEs/licenses = English prose and markdown, Python
sources = code, pycountry's gettext catalogs = names in many scripts), then times
  - hearth:      `hearth tokenize --file F --time --quiet` (encode only, load excluded)
  - tokenizers:  Tokenizer.encode(text) on the whole string (single call)
  - tiktoken:    Encoding.encode_ordinary(text) (single thread)
for SmolLM2 (GGUF; reference = its tokenizer rebuilt by test_diff.py's
gguf_reference), o200k_base and cl100k_base. Prints a markdown table.
Usage: bench_tok.py [--mb 4] (HEARTH_BIN, HEARTH_FIXTURES as for the tests).
Not a ctest test (its name does not start with test_).
"""
import gettext
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import test_diff  # noqa: E402  (reuses the tokenizer constructors)

HEARTH = os.environ["HEARTH_BIN"]
FIX = test_diff.FIX


def build_corpus(mb):
    site = os.path.dirname(os.path.dirname(__import__("tokenizers").__file__))
    prose = sorted(glob.glob(os.path.join(site, "*.dist-info", "METADATA")) +
                   glob.glob(os.path.join(site, "*.dist-info", "LICENSE*")))
    code = sorted(glob.glob(os.path.join(site, "transformers", "models", "*", "modeling_*.py")))
    po = sorted(glob.glob(os.path.join(site, "pycountry", "locales", "*", "LC_MESSAGES", "iso*.mo")))
    parts, budget = [], {"prose": 0.4, "code": 0.3, "po": 0.3}
    for name, files in (("prose", prose), ("code", code), ("po", po)):
        want, got = int(mb * 1e6 * budget[name]), 0
        for i in range(100 * len(files)):  # cycle through the files when they are fewer than the budget
            f = files[i % len(files)]
            if got >= want:
                break
            if f.endswith(".mo"):  # gettext catalogs: the translated names, in many scripts
                with open(f, "rb") as fh:
                    s = "\n".join(str(v) for v in gettext.GNUTranslations(fh)._catalog.values())
            else:
                with open(f, encoding="utf-8", errors="replace") as fh:
                    s = fh.read()
            parts.append(s)
            got += len(s.encode())
    return "\n".join(parts)


def hearth_time(args, path, reps=3):
    best = None
    for _ in range(reps):
        p = subprocess.run([HEARTH, "tokenize"] + args + ["--file", path, "--time", "--quiet"], capture_output=True,
                           text=True, check=True)
        m = re.search(r"in ([0-9.]+) s", p.stderr)
        t = float(m.group(1))
        best = t if best is None else min(best, t)
    return best


def ref_time(fn, text, reps=3):
    best = None
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(text)
        t = time.perf_counter() - t0
        best = t if best is None else min(best, t)
    return best


def main():
    mb = float(sys.argv[sys.argv.index("--mb") + 1]) if "--mb" in sys.argv else 4.0
    text = build_corpus(mb)
    raw = text.encode("utf-8")
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(raw)
        path = f.name
    n = len(raw) / 1e6
    rows = []
    tdir = os.path.join(FIX, "tokenizers/tiktoken")
    for name in ("o200k_base", "cl100k_base"):
        rf = os.path.join(tdir, name + ".tiktoken")
        enc = test_diff.tiktoken_encoding(name, rf)
        assert subprocess.run([HEARTH, "tokenize", "--tokenizer", rf, "--encoding", name, "--file", path, "--json"],
                              capture_output=True, text=True).stdout.strip() == str(enc.encode_ordinary(text))
        rows.append((name, "tiktoken " + __import__("tiktoken").__version__,
                     n / hearth_time(["--tokenizer", rf, "--encoding", name], path),
                     n / ref_time(enc.encode_ordinary, text)))
    g = test_diff.find_smollm2()
    if g:
        ref, _ = test_diff.gguf_reference(g)
        rows.append(("SmolLM2 (GGUF)", "tokenizers " + __import__("tokenizers").__version__,
                     n / hearth_time(["--tokenizer", g], path),
                     n / ref_time(lambda s: ref.encode(s, add_special_tokens=False), text)))
    tj = os.path.join(FIX, "tokenizers/tiny-bpe/tokenizer.json")
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(tj)
    rows.append(("tiny-bpe (512 vocab)", "tokenizers " + __import__("tokenizers").__version__,
                 n / hearth_time(["--tokenizer", tj], path),
                 n / ref_time(lambda s: tk.encode(s, add_special_tokens=False), text)))
    os.unlink(path)
    print(f"corpus: {n:.2f} MB ({len(text)} chars), best of 3")
    print("| tokenizer | hearth MB/s | reference | reference MB/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[2]:.1f} | {r[1]} | {r[3]:.1f} |")


if __name__ == "__main__":
    main()
