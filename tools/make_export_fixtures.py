#!/usr/bin/env python3
"""Writes tests/fixtures/export_formats.json: golden values computed by the
real libraries' own functions, for tests/formats_golden_test.ts.

- compressed-tensors: `pack_to_int32` and `unpack_from_int32` of
  compressors/quantized_compressors/pack_quantized.py, on int8 rows whose
  length is not a multiple of 4 (padding) and that hold -128 and 127.
- optimum-quanto: `AbsmaxOptimizer.optimize` (the qint8 scale) and the
  `quanto::quantize_symmetric` kernel of library/quantize.py, on f32 and bf16
  weights, per output row (axis 0) as a QLinear quantizes its weight.

Neither package installs here (PyPI is unreachable and Debian packages
neither), and optimum-quanto needs torch >= 2 at import, so the functions are
taken from source checkouts by name (their decorators dropped) and run under
Debian's python3-torch. Nothing of them is copied into TinyQ.

Run: /usr/bin/python3 tools/make_export_fixtures.py \
         <compressed-tensors checkout> <optimum-quanto checkout>
"""
import ast
import json
import math
import pathlib
import subprocess
import sys
from typing import Literal, Optional, Tuple, Union

import torch


def functions_from(path, names, extra_globals):
    """The functions `names` (top level, or `Class.method`) of a source file."""
    tree = ast.parse(pathlib.Path(path).read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            found[node.name] = node
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                key = f"{node.name}.{getattr(sub, 'name', '')}"
                if isinstance(sub, ast.FunctionDef) and key in names:
                    found[key] = sub
    missing = set(names) - set(found)
    if missing:
        raise SystemExit(f"{path}: no {', '.join(sorted(missing))}")
    namespace = dict(extra_globals)
    out = {}
    for key, node in found.items():
        node.decorator_list = []
        module = ast.Module(body=[node], type_ignores=[])
        exec(compile(ast.fix_missing_locations(module), str(path), "exec"), namespace)
        out[key] = namespace[node.name]
    return out


def commit(checkout):
    try:
        return subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except Exception:
        return "unknown"


def bits(t):
    if t.dtype == torch.float32:
        return [b & 0xFFFFFFFF for b in t.contiguous().view(torch.int32).flatten().tolist()]
    return [b & 0xFFFF for b in t.contiguous().view(torch.int16).flatten().tolist()]


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    ct_root, quanto_root = map(pathlib.Path, sys.argv[1:])
    common = {"torch": torch, "math": math, "Union": Union, "Literal": Literal,
              "Optional": Optional, "Tuple": Tuple}
    ct = functions_from(
        ct_root / "src/compressed_tensors/compressors/quantized_compressors/pack_quantized.py",
        ["pack_to_int32", "unpack_from_int32"], common)
    core = functions_from(quanto_root / "optimum/quanto/tensor/core.py", ["dtype_info"], common)
    quanto = functions_from(
        quanto_root / "optimum/quanto/library/quantize.py", ["quantize_symmetric"],
        {**common, **core})
    absmax = functions_from(
        quanto_root / "optimum/quanto/tensor/optimizers/absmax_optimizer.py",
        ["AbsmaxOptimizer.optimize"], {**common, "qtype": object},
    )["AbsmaxOptimizer.optimize"]

    gen = torch.Generator().manual_seed(7)
    rows, cols = 5, 11
    q = torch.randint(-128, 128, (rows, cols), generator=gen, dtype=torch.int8)
    q[0, 0], q[0, 1], q[1, 10] = -128, 127, 0
    words = ct["pack_to_int32"](q, 8)
    back = ct["unpack_from_int32"](words, 8, torch.Size([rows, cols]))
    assert torch.equal(back, q)

    class QInt8:  # the two fields of quanto's qint8 the optimizer reads
        qmax = 127

    quanto_cases = []
    for name, dtype in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
        w = (torch.randn(6, 40, generator=gen) * 0.05).to(dtype)
        w[1, 3] = 0.5  # a row dominated by one outlier
        scale = absmax(None, w, QInt8, axis=0)
        data = quanto["quantize_symmetric"](w, dtype=torch.int8, axis=0, scale=scale)
        quanto_cases.append({
            "dtype": name,
            "shape": list(w.shape),
            "bits": bits(w),
            "scale_bits": bits(scale),
            "data": data.flatten().tolist(),
        })

    fixture = {
        "generator": "tools/make_export_fixtures.py",
        "torch": torch.__version__,
        "compressed_tensors": commit(ct_root),
        "optimum_quanto": commit(quanto_root),
        "pack": {
            "shape": [rows, cols],
            "q": q.flatten().tolist(),
            "words": words.flatten().tolist(),
        },
        "quanto": quanto_cases,
    }
    path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "export_formats.json"
    path.write_text(json.dumps(fixture) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
