#!/usr/bin/env python3
"""Writes tests/fixtures/per_channel.json: int8 weights and scales computed by
TinyQ's PyTorch math (linear_q_symmetric_per_channel, restated below with
torch ops) for f32, f16 and bf16 weights with exact .5 ties, an all-zero row,
a huge outlier and subnormals.

Run with Debian's python3-torch: /usr/bin/python3 tools/make_fixtures.py
"""
import json
import pathlib

import torch


def get_q_scale_symmetric(r_tensor, dtype=torch.int8):
    q_max = torch.iinfo(dtype).max
    return r_tensor.abs().max().item() / q_max  # Python float, as TinyQ does


def linear_q_symmetric_per_channel(r_tensor, dim=0, dtype=torch.int8):
    output_dim = r_tensor.shape[dim]
    scale = torch.zeros(output_dim)  # f32, TinyQ's default dtype
    for index in range(output_dim):
        sub_tensor = r_tensor.select(dim, index)
        scale[index] = get_q_scale_symmetric(sub_tensor, dtype=dtype)
    scale_shape = [1] * r_tensor.dim()
    scale_shape[dim] = -1
    scale = scale.view(scale_shape)
    # TinyQ's linear_q_with_scale_and_zero_point with zero_point = 0
    scaled_and_shifted = r_tensor / scale + 0
    rounded = torch.round(scaled_and_shifted)
    q_min, q_max = torch.iinfo(dtype).min, torch.iinfo(dtype).max
    q = rounded.clamp(q_min, q_max).to(dtype)
    return q, scale.view(-1)


def rows_for(dtype, gen):
    cols = 24
    rows = []
    rows.append(torch.randn(cols, generator=gen))  # plain random
    # Exact .5 ties: absmax 127 gives scale 1, so k + 0.5 is a tie.
    tie = torch.tensor([127.0, -127.0] + [k + 0.5 for k in range(-11, 11)])
    rows.append(tie)
    # Ties at scale 2^-3.
    rows.append(tie / 8)
    rows.append(torch.zeros(cols))  # all-zero row
    out = torch.randn(cols, generator=gen) * 0.01
    out[5] = {torch.float32: 1e30, torch.float16: 60000.0, torch.bfloat16: 1e30}[dtype]
    rows.append(out)  # one huge outlier
    tiny = {torch.float32: 1e-39, torch.float16: 5e-6, torch.bfloat16: 1e-39}[dtype]
    sub = torch.randn(cols, generator=gen) * tiny
    rows.append(sub)  # subnormals
    mixed = torch.randn(cols, generator=gen)
    mixed[::3] = tiny
    rows.append(mixed)  # subnormals beside normal values
    for _ in range(3):
        rows.append(torch.randn(cols, generator=gen) * 3)
    return torch.stack(rows).to(dtype)


def bits(t):
    if t.dtype == torch.float32:
        return t.view(torch.int32).flatten().tolist()
    return t.view(torch.int16).flatten().tolist()


def main():
    gen = torch.Generator().manual_seed(20261127)
    cases = []
    for name, dtype in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
        w = rows_for(dtype, gen)
        q, scale = linear_q_symmetric_per_channel(w)
        zero_rows = (w.abs().amax(dim=1) == 0).nonzero().flatten().tolist()
        cases.append({
            "dtype": name,
            "shape": list(w.shape),
            "bits": [b & (0xFFFFFFFF if name == "f32" else 0xFFFF) for b in bits(w)],
            "q": q.flatten().tolist(),
            "scale_bits": [b & 0xFFFFFFFF for b in bits(scale)],
            # TinyQ divides 0 by a 0 scale there (NaN); our contract: scale 1, q 0.
            "zero_rows": zero_rows,
        })
    path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "per_channel.json"
    path.write_text(json.dumps({"generator": "tools/make_fixtures.py", "torch": torch.__version__, "cases": cases}) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
