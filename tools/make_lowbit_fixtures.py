#!/usr/bin/env python3
"""Writes tests/fixtures/lowbit.json: group-wise int4 codes (packed two per
byte, low nibble first), scales and zero points, asymmetric per-row int8, and
per-token int8 activations, computed with torch f32 ops (torch.round rounds
half to even) from f32, f16 and bf16 weights with ties, skewed rows, an
all-zero group and an outlier.

The math is issue 8's spec, with the asymmetric range widened to include 0
(the documented deviation from TinyQ's raw min/max). Weights in f16/bf16 are
widened to f32 first: TinyQ for Deno never divides in a 16-bit type.

Run with Debian's python3-torch: /usr/bin/python3 tools/make_lowbit_fixtures.py
"""
import json
import pathlib

import torch

ROWS, COLS = 4, 128


def weights(dtype, gen):
    w = torch.randn(ROWS, COLS, generator=gen) * 0.05
    w[0] = w[0].abs() + 0.01  # all positive
    w[1, :64] = -w[1, :64].abs()  # an all-negative half
    w[1, 64:96] = 0  # an all-zero group (any group size ≥ 32 sees zeros)
    w[2] = (torch.arange(COLS) - 60) * (1.0 / 16)  # a grid: exact .5 ties
    w[3, 5] = 3.0  # an outlier
    return w.to(dtype)


def int4(w, group, asymmetric):
    wg = w.reshape(ROWS, COLS // group, group)
    if asymmetric:
        lo = wg.amin(-1, keepdim=True).clamp(max=0)
        hi = wg.amax(-1, keepdim=True).clamp(min=0)
        s = (hi - lo) / 15
        s = torch.where(s == 0, torch.ones_like(s), s)
        zp = torch.round(-lo / s).clamp(0, 15)
        codes = (torch.round(wg / s) + zp).clamp(0, 15)
    else:
        s = wg.abs().amax(-1, keepdim=True) / 7
        s = torch.where(s == 0, torch.ones_like(s), s)
        zp = None
        codes = torch.round(wg / s).clamp(-8, 7) + 8
    c = codes.to(torch.int32).reshape(-1)
    packed = (c[0::2] | (c[1::2] << 4)).tolist()
    return {
        "group_size": group,
        "asymmetric": asymmetric,
        "packed": packed,
        "scale_bits": f32_bits(s),
        "zero_points": None if zp is None else zp.to(torch.int32).flatten().tolist(),
    }


def int8_asymmetric(w):
    lo = w.amin(-1, keepdim=True).clamp(max=0)
    hi = w.amax(-1, keepdim=True).clamp(min=0)
    s = (hi - lo) / 255
    s = torch.where(s == 0, torch.ones_like(s), s)
    zp = torch.round(-128 - lo / s).clamp(-128, 127)
    q = (torch.round(w / s) + zp).clamp(-128, 127)
    return {"q": q.to(torch.int32).flatten().tolist(), "scale_bits": f32_bits(s),
            "zero_points": zp.to(torch.int32).flatten().tolist()}


def activations(gen):
    x = torch.randn(ROWS, COLS, generator=gen) * 3
    x[1] = 0
    x[2] = (torch.arange(COLS) - 64) * 0.5  # absmax 64 → ties once scaled
    x[2, 0] = 127.0
    s = x.abs().amax(-1, keepdim=True) / 127
    s = torch.where(s == 0, torch.ones_like(s), s)
    q = torch.round(x / s).clamp(-128, 127)
    return {"x_bits": f32_bits(x), "q": q.to(torch.int32).flatten().tolist(),
            "scale_bits": f32_bits(s)}


def f32_bits(t):
    return [b & 0xFFFFFFFF for b in t.float().contiguous().view(torch.int32).flatten().tolist()]


def raw_bits(t):
    if t.dtype == torch.float32:
        return f32_bits(t)
    return [b & 0xFFFF for b in t.contiguous().view(torch.int16).flatten().tolist()]


def main():
    gen = torch.Generator().manual_seed(20261208)
    cases = []
    for name, dtype in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
        w = weights(dtype, gen)
        wf = w.float()
        cases.append({
            "dtype": name,
            "shape": [ROWS, COLS],
            "bits": raw_bits(w),
            "int4": [int4(wf, g, a) for g in (32, 128) for a in (False, True)],
            "int8_asymmetric": int8_asymmetric(wf),
        })
    path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "lowbit.json"
    path.write_text(json.dumps({
        "generator": "tools/make_lowbit_fixtures.py",
        "torch": torch.__version__,
        "cases": cases,
        "activations": activations(gen),
    }) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
