"""PyTorch fp32 F.linear medians for the shapes of bench/cpu_bench.ts.

Run with Debian's python3-torch:
    /usr/bin/python3 bench/torch_linear.py [--threads 2] [MxKxN ...]
Prints one JSON object per line: {"shape": "MxKxN", "ms": median, "gflops": ...}
(fp32 weights, input and bias, as `Linear.forward` of PyTorch runs them).
Used by bench/compare_torch.ts, which runs it beside our kernels.
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [(1, 4096, 4096), (1, 4096, 14336), (128, 4096, 4096)]


def median_ms(fn, iters):
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    args = sys.argv[1:]
    threads = 2
    if args[:1] == ["--threads"]:
        threads = int(args[1])
        args = args[2:]
    shapes = [tuple(int(v) for v in a.split("x")) for a in args] or SHAPES
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    for m, k, n in shapes:
        x = torch.randn(m, k)
        w = torch.randn(n, k)
        b = torch.randn(n)
        iters = 9 if m > 1 else 31
        with torch.no_grad():
            ms = median_ms(lambda: F.linear(x, w, b), iters)
            # A 1-D input takes the matrix-vector path (mv), which OpenBLAS
            # runs much faster than a 1-row gemm: compare with the faster.
            ms_1d = median_ms(lambda: F.linear(x[0], w, b), iters) if m == 1 else ms
        print(json.dumps({
            "shape": f"{m}x{k}x{n}",
            "threads": threads,
            "torch": torch.__version__,
            "ms": min(ms, ms_1d),
            "ms_2d_input": ms,
            "ms_1d_input": ms_1d,
            "gflops": 2 * m * k * n / min(ms, ms_1d) / 1e6,
        }), flush=True)


if __name__ == "__main__":
    main()
