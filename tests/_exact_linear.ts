// The exact result a linear kernel is checked against: x @ Wᵀ + b summed in
// f64, with Σ|x·w| + |b| per output, the scale of any f32 rounding error.

import assert from "node:assert/strict";

/** x [m, k] @ w [n, k]ᵀ + bias in f64, and Σ|x·w| + |bias| per output. */
export function exactLinear(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  m: number,
  k: number,
  n: number,
): { y: Float64Array; mag: Float64Array } {
  const y = new Float64Array(m * n), mag = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0, abs = 0;
      for (let t = 0; t < k; t++) {
        acc += x[i * k + t]! * w[j * k + t]!;
        abs += Math.abs(x[i * k + t]! * w[j * k + t]!);
      }
      y[i * n + j] = acc + (bias ? bias[j]! : 0);
      mag[i * n + j] = abs + (bias ? Math.abs(bias[j]!) : 0);
    }
  }
  return { y, mag };
}

/**
 * Asserts |y − exact| ≤ 1e-5 · (Σ|x·w| + |b|) for every output, where exact is
 * x @ Wᵀ + b summed in f64 and `weight(j, t)` is element [j, t] of W: the
 * forward tolerance of the kernels.
 */
export function assertCloseToExact(
  y: Float32Array,
  x: Float32Array,
  m: number,
  n: number,
  k: number,
  weight: (j: number, t: number) => number,
  bias: Float32Array | null,
  label: string,
): void {
  assert.equal(y.length, m * n, label);
  const w = new Float64Array(n * k);
  for (let j = 0; j < n; j++) {
    for (let t = 0; t < k; t++) w[j * k + t] = weight(j, t);
  }
  const exact = exactLinear(x, w, bias, m, k, n);
  for (let i = 0; i < m * n; i++) {
    const tol = 1e-5 * exact.mag[i]! + 1e-30;
    if (!(Math.abs(y[i]! - exact.y[i]!) <= tol)) {
      assert.fail(
        `${label}: y[${Math.floor(i / n)}, ${i % n}] = ${y[i]}, exact ${
          exact.y[i]
        } (tolerance ${tol})`,
      );
    }
  }
}
