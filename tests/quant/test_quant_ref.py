"""hearth's reference dequantization (src/quant) against numpy + ml_dtypes on the
fixture checkpoints, tensor by tensor:
  tiny-llama-fp8:   weight F8_E4M3 * weight_scale; fake-quant of random
                    activations at each input_scale (torch semantics:
                    (x/s).clamp(-448,448).to(float8_e4m3fn).float()*s)
  tiny-llama-nvfp4: e2m1(weight nibbles) * (e4m3(weight_scale) * weight_scale_2)
  tiny-gpt-oss:     e2m1(*_blocks nibbles) * 2^(*_scales - 127)
ml_dtypes' casts are independent of hearth's core/dtype.c. Tolerance 0
(bit-exact): both sides do the same float32 operations in the same order.
Quantizers (the producers' recipes): FP8 and NVFP4 of tiny-llama's bf16
weights must reproduce the ModelOpt fixtures' scales exactly and their codes
exactly (NVFP4: except at exact E2M1 ties, which ModelOpt rounds toward zero
and hearth to even); MXFP4 re-quantization of the gpt-oss experts must
reproduce their bytes.
hearth side: `quant_test_quant --fp8|--fake|--nvfp4|--mxfp4 ...` from the build dir."""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

try:
    import ml_dtypes
except ImportError as e:
    print(f"SKIP: ml_dtypes unavailable ({e})")
    sys.exit(77)

SRC = os.environ.get("HEARTH_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("HEARTH_BUILD_DIR", os.path.join(SRC, "build"))
FIX = os.environ.get("HEARTH_FIXTURES", os.path.join(SRC, "..", "shared", "fixtures"))
EXE = os.path.join(BUILD, "quant_test_quant")

passed = failed = 0


def check(cond, msg):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", msg, file=sys.stderr)


def read_safetensors(path):
    """Raw bytes per tensor (numpy has no float8 dtype, so parse the header here)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], data[b:e])
    return out


def f32_scalar(t):
    dtype, shape, raw = t
    assert dtype == "F32" and shape == [], (dtype, shape)
    return np.frombuffer(raw, dtype=np.float32)[0]


def e2m1(codes):
    return (codes & 0x0F).astype(np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)


def unpack_nibbles(packed):
    """[..., k] bytes -> [..., 2k] codes, the low nibble first (even element)."""
    lo, hi = packed & 0x0F, packed >> 4
    return np.stack([lo, hi], axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def helper(*args):
    r = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
    return r


def run(args, out_path, n):
    r = subprocess.run([EXE, *map(str, args), out_path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        return None
    return np.fromfile(out_path, dtype=np.float32, count=n)


def compare(label, got, ref):
    check(got is not None and got.shape == ref.shape, f"{label}: no output or wrong shape")
    if got is None or got.shape != ref.shape:
        return 0.0
    diff = float(np.max(np.abs(got - ref)))
    check(np.array_equal(got, ref), f"{label}: max |diff| {diff:g}")
    return diff


def linears(tensors, suffix):
    return sorted(k[: -len(suffix)] for k in tensors if k.endswith(suffix))


def fp8(tmp):
    ts = read_safetensors(os.path.join(FIX, "models", "tiny-llama-fp8", "model.safetensors"))
    rng = np.random.default_rng(3)
    worst, n_lin = 0.0, 0
    for lin in linears(ts, ".weight_scale"):
        dtype, shape, raw = ts[lin + ".weight"]
        check(dtype == "F8_E4M3", f"{lin}: dtype {dtype}")
        s = f32_scalar(ts[lin + ".weight_scale"])
        ref = np.frombuffer(raw, dtype=ml_dtypes.float8_e4m3fn).astype(np.float32) * s
        wpath = os.path.join(tmp, "w.u8")
        open(wpath, "wb").write(raw)
        worst = max(worst, compare(f"fp8 {lin}", run(["--fp8", wpath, repr(float(s)), ref.size], os.path.join(tmp, "o"), ref.size), ref))
        # activations rounded through E4M3 at the static input_scale (W8A8)
        si = f32_scalar(ts[lin + ".input_scale"])
        x = (rng.standard_normal(4096) * si * rng.choice([1.0, 30.0, 600.0], 4096)).astype(np.float32)
        xref = (np.clip(x / si, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float32) * si).astype(np.float32)
        xpath = os.path.join(tmp, "x.f32")
        x.tofile(xpath)
        worst = max(worst, compare(f"fake-quant {lin}", run(["--fake", xpath, repr(float(si)), x.size], os.path.join(tmp, "o"), x.size), xref))
        n_lin += 1
    check(n_lin == 14, f"fp8: {n_lin} linears")
    print(f"tiny-llama-fp8: {n_lin} linears, max |hearth - numpy| = {worst:g}")


def nvfp4(tmp):
    ts = read_safetensors(os.path.join(FIX, "models", "tiny-llama-nvfp4", "model.safetensors"))
    worst, n_lin = 0.0, 0
    for lin in linears(ts, ".weight_scale_2"):
        dtype, (rows, half), raw = ts[lin + ".weight"]
        sdt, sshape, sraw = ts[lin + ".weight_scale"]
        check(dtype == "U8" and sdt == "F8_E4M3" and sshape == [rows, half * 2 // 16], f"{lin}: layout")
        cols = half * 2
        s2 = f32_scalar(ts[lin + ".weight_scale_2"])
        codes = unpack_nibbles(np.frombuffer(raw, dtype=np.uint8).reshape(rows, half))
        scale = np.frombuffer(sraw, dtype=ml_dtypes.float8_e4m3fn).astype(np.float32).reshape(rows, cols // 16)
        ref = (e2m1(codes).reshape(rows, cols // 16, 16) * (scale * s2)[:, :, None]).reshape(-1)
        wpath, spath = os.path.join(tmp, "w.u8"), os.path.join(tmp, "s.u8")
        open(wpath, "wb").write(raw)
        open(spath, "wb").write(sraw)
        got = run(["--nvfp4", wpath, spath, repr(float(s2)), rows, cols], os.path.join(tmp, "o"), ref.size)
        worst = max(worst, compare(f"nvfp4 {lin}", got, ref))
        n_lin += 1
    check(n_lin == 14, f"nvfp4: {n_lin} linears")
    print(f"tiny-llama-nvfp4: {n_lin} linears, max |hearth - numpy| = {worst:g}")


def mxfp4(tmp):
    ts = read_safetensors(os.path.join(FIX, "models", "tiny-gpt-oss", "model.safetensors"))
    worst, n = 0.0, 0
    for name in sorted(k for k in ts if k.endswith("_blocks")):
        dtype, (E, out_dim, nblk, sixteen), raw = ts[name]
        sdt, sshape, sraw = ts[name[: -len("_blocks")] + "_scales"]
        check(dtype == "U8" and sixteen == 16 and sshape == [E, out_dim, nblk], f"{name}: layout")
        rows, cols = E * out_dim, nblk * 32
        codes = unpack_nibbles(np.frombuffer(raw, dtype=np.uint8).reshape(rows, nblk, 16))  # [rows, nblk, 32]
        scale = np.frombuffer(sraw, dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float32).reshape(rows, nblk)
        ref = (e2m1(codes) * scale[:, :, None]).reshape(-1)
        # the E8M0 decoding agrees with transformers' ldexp(1, scale - 127)
        check(np.array_equal(scale, np.ldexp(np.float32(1), np.frombuffer(sraw, np.uint8).astype(np.int32) - 127).reshape(rows, nblk)), f"{name}: e8m0")
        bpath, spath = os.path.join(tmp, "b.u8"), os.path.join(tmp, "s.u8")
        open(bpath, "wb").write(raw)
        open(spath, "wb").write(sraw)
        got = run(["--mxfp4", bpath, spath, rows, cols], os.path.join(tmp, "o"), ref.size)
        worst = max(worst, compare(f"mxfp4 {name}", got, ref))
        n += 1
    check(n == 4, f"mxfp4: {n} expert tensors")
    print(f"tiny-gpt-oss: {n} MXFP4 expert tensors, max |hearth - numpy| = {worst:g}")


E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float32)
TIES = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=np.float32)


def quantizers(tmp):
    plain = read_safetensors(os.path.join(FIX, "models", "tiny-llama", "model.safetensors"))
    f8 = read_safetensors(os.path.join(FIX, "models", "tiny-llama-fp8", "model.safetensors"))
    nv = read_safetensors(os.path.join(FIX, "models", "tiny-llama-nvfp4", "model.safetensors"))
    inp = os.path.join(tmp, "w.f32")
    ties = n_codes = 0
    for lin in linears(f8, ".weight_scale"):
        dtype, (rows, cols), raw = plain[lin + ".weight"]
        w = np.frombuffer(raw, dtype=ml_dtypes.bfloat16).astype(np.float32).reshape(rows, cols)
        w.tofile(inp)
        # FP8
        r = helper("--quant-fp8", inp, w.size, os.path.join(tmp, "c"), os.path.join(tmp, "s"))
        check(r.returncode == 0, f"quant-fp8 {lin}")
        if r.returncode == 0:
            codes = np.fromfile(os.path.join(tmp, "c"), dtype=np.uint8)
            scale = np.fromfile(os.path.join(tmp, "s"), dtype=np.float32)[0]
            check(scale == f32_scalar(f8[lin + ".weight_scale"]), f"quant-fp8 {lin}: scale {scale} vs fixture")
            check(np.array_equal(codes, np.frombuffer(f8[lin + ".weight"][2], np.uint8)), f"quant-fp8 {lin}: codes differ")
        # NVFP4
        r = helper("--quant-nvfp4", inp, rows, cols, *(os.path.join(tmp, x) for x in ("p", "sc", "s2")))
        check(r.returncode == 0, f"quant-nvfp4 {lin}")
        if r.returncode != 0:
            continue
        s2 = np.fromfile(os.path.join(tmp, "s2"), dtype=np.float32)[0]
        sc = np.fromfile(os.path.join(tmp, "sc"), dtype=np.uint8)
        check(s2 == f32_scalar(nv[lin + ".weight_scale_2"]), f"quant-nvfp4 {lin}: scale_2 {s2} vs fixture")
        check(np.array_equal(sc, np.frombuffer(nv[lin + ".weight_scale"][2], np.uint8)), f"quant-nvfp4 {lin}: block scales differ")
        mine = unpack_nibbles(np.fromfile(os.path.join(tmp, "p"), dtype=np.uint8).reshape(rows, cols // 2))
        theirs = unpack_nibbles(np.frombuffer(nv[lin + ".weight"][2], np.uint8).reshape(rows, cols // 2))
        bs = sc.view(ml_dtypes.float8_e4m3fn).astype(np.float32).reshape(rows, cols // 16) * s2
        x = np.abs(w.reshape(rows, cols // 16, 16) / bs[:, :, None]).reshape(rows, cols)
        diff = mine != theirs
        at_tie = np.isin(x, TIES)
        # where they differ: an exact tie, same sign, and the fixture took the lower neighbour
        lower = E2M1[np.searchsorted(E2M1, x) - 1]
        ok = at_tie & ((mine & 8) == (theirs & 8)) & (E2M1[np.minimum(theirs & 7, 7)] == lower)
        check(not np.any(diff & ~ok), f"quant-nvfp4 {lin}: {int(np.sum(diff & ~ok))} codes differ off ties")
        ties += int(diff.sum())
        n_codes += diff.size
    print(f"quantizers: FP8 and NVFP4 reproduce the ModelOpt fixtures (NVFP4 codes differ only at {ties}/{n_codes} exact ties)")
    gpt = read_safetensors(os.path.join(FIX, "models", "tiny-gpt-oss", "model.safetensors"))
    for name in sorted(k for k in gpt if k.endswith("_blocks")):
        dtype, (E, out_dim, nblk, _), raw = gpt[name]
        sraw = gpt[name[: -len("_blocks")] + "_scales"][2]
        rows, cols = E * out_dim, nblk * 32
        codes = unpack_nibbles(np.frombuffer(raw, dtype=np.uint8).reshape(rows, nblk, 16))
        scale = np.ldexp(np.float32(1), np.frombuffer(sraw, np.uint8).astype(np.int32) - 127).reshape(rows, nblk)
        (e2m1(codes) * scale[:, :, None]).astype(np.float32).reshape(rows, cols).tofile(inp)
        r = helper("--quant-mxfp4", inp, rows, cols, os.path.join(tmp, "b"), os.path.join(tmp, "s"))
        check(r.returncode == 0, f"quant-mxfp4 {name}")
        if r.returncode == 0:
            check(np.fromfile(os.path.join(tmp, "b"), np.uint8).tobytes() == raw, f"quant-mxfp4 {name}: blocks differ")
            check(np.fromfile(os.path.join(tmp, "s"), np.uint8).tobytes() == sraw, f"quant-mxfp4 {name}: scales differ")


def main():
    if not os.access(EXE, os.X_OK):
        print(f"SKIP: {EXE} not built")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        fp8(tmp)
        nvfp4(tmp)
        mxfp4(tmp)
        quantizers(tmp)
    print(f"quant/test_quant_ref: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
